"""The clinician app and the portal in a real browser (Debian's chromium), against a live server
with a real Celery worker: the review queue, decisions without a page reload, the patient's
acknowledgement, and a red-flag report reaching the queue through the worker. Screenshots of each
main page at desktop and phone widths go to var/artifacts/screenshots/."""
import datetime as dt
import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from clinops.base.models import AuditEvent
from tests.conftest import wait_for
from tests.factories import make_clinician, make_device, make_patient, make_team
from tests.therapy.conftest import store_estimates, week_of
from tests.web.helpers import save_screenshots
from therapy import services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion, Suggestion, SuggestionStatus

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def sign_in(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


@pytest.fixture
def ward():
    """A care team with five patients: one in a hypertensive crisis, three uncontrolled with a
    step up waiting, one well (who will report chest pain)."""
    team = make_team()
    clinician = make_clinician(team=team)
    patients = [make_patient(team=team) for _ in range(5)]
    now = timezone.now()
    for i, patient in enumerate(patients):
        started = services.plan_create(actor=clinician.user, patient=patient, template="ace-ccb-thiazide",
                                       reason="start", auto_step_up=True, max_auto_rung=3)
        # Set two months ago: the regimen has had its minimum interval, so a step up may be proposed.
        PlanVersion.objects.filter(pk=started.pk).update(created_at=now - dt.timedelta(days=60))
        device, _ = make_device(patient)
        device.__class__.objects.filter(pk=device.pk).update(last_seen_at=now)
        readings = {0: week_of(150, 95) + [(0.6, 186, 121), (0.4, 188, 124)], 4: week_of(126, 78)}.get(i, week_of(148, 92))
        store_estimates(patient, device, readings, now=now)
    suggestions = [patient_therapy_evaluate(patient_id=p.pk, now=timezone.now()) for p in patients[:4]]
    return {"clinician": clinician.user, "patients": patients, "suggestions": suggestions}


def item(page: Page, suggestion: Suggestion):
    return page.locator(f"#suggestion-{suggestion.pk}")


def test_the_clinician_decides_the_queue_and_the_patients_see_and_report(celery_worker, live_server, browser, ward):
    crisis, step_a, step_b, step_c = ward["suggestions"]
    clinician = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    clinician.goto(f"{live_server.url}/login/")
    save_screenshots(clinician, "login")
    sign_in(clinician, live_server.url, ward["clinician"].username, "pw-clinician")
    expect(clinician).to_have_url(f"{live_server.url}/clinic/")

    # The escalation is at the top, the counter shows it.
    first = clinician.get_by_test_id("queue-item").first
    expect(first).to_contain_text("Escalation")
    expect(first).to_contain_text("hypertensive crisis confirmed")
    expect(clinician.get_by_test_id("alert-counter")).to_contain_text("1")
    expect(clinician.get_by_test_id("queue-item")).to_have_count(4)
    save_screenshots(clinician, "clinic-queue")

    # Decisions happen in place: the page is never reloaded (the marker survives).
    clinician.evaluate("window.__notReloaded = true")
    asked: list[str] = []
    clinician.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    item(clinician, step_a).get_by_test_id("approve").click()
    expect(item(clinician, step_a)).to_contain_text("Approved by a clinician")
    # Approving says what it will do before it is done, and the counters follow the decision.
    assert "Release lisinopril 20 mg once daily" in asked[0] and "rung 2" in asked[0]
    expect(clinician.locator("#queue-count")).to_have_text("3 waiting")
    modify = item(clinician, step_b)
    modify.get_by_label("Rung to release").select_option(str(step_b.from_rung))
    modify.get_by_label("Reason for modifying").fill("recheck with a cuff reading first")
    modify.get_by_test_id("modify").click()
    expect(item(clinician, step_b)).to_contain_text("Modified by a clinician")
    reject = item(clinician, step_c)
    reject.get_by_label("Reason for rejecting").fill("white-coat pattern, readings at work only")
    reject.get_by_test_id("reject").click()
    expect(item(clinician, step_c)).to_contain_text("Rejected by a clinician")
    expect(clinician.locator("#queue-count")).to_have_text("1 waiting")
    assert clinician.evaluate("window.__notReloaded") is True
    statuses = {s.pk: s.status for s in Suggestion.objects.all()}
    assert (statuses[step_a.pk], statuses[step_b.pk], statuses[step_c.pk]) == (
        SuggestionStatus.APPROVED, SuggestionStatus.MODIFIED, SuggestionStatus.REJECTED)
    assert AuditEvent.objects.filter(action__in=["suggestion.approve", "suggestion.modify", "suggestion.reject"],
                                     actor_user=ward["clinician"]).count() == 3
    clinician.reload()
    expect(clinician.get_by_test_id("queue-item")).to_have_count(1)  # only the escalation is left

    clinician.get_by_role("link", name="Patients").click()
    expect(clinician.get_by_test_id("patient-list")).to_contain_text("escalated")
    save_screenshots(clinician, "clinic-patients")
    clinician.goto(f"{live_server.url}/clinic/patients/{ward['patients'][1].pk}/")
    expect(clinician.locator("#trend canvas")).to_have_count(1)
    expect(clinician.locator("body")).to_contain_text("Audit trail")
    save_screenshots(clinician, "clinic-patient")
    clinician.get_by_test_id("edit-plan").click()
    expect(clinician.get_by_test_id("plan-form")).to_contain_text("What may happen without you")
    save_screenshots(clinician, "clinic-plan")

    # The patient whose step up was approved sees the change and acknowledges it.
    patient = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(patient, live_server.url, ward["patients"][1].user.username, "pw-patient")
    change = patient.get_by_test_id("released-change")
    expect(change).to_contain_text("lisinopril 20 mg once daily")
    expect(patient.get_by_test_id("bp-words")).to_contain_text(re.compile(r"above your target of 135/85"))
    save_screenshots(patient, "portal-home")
    change.get_by_test_id("acknowledge").click()
    expect(patient.locator(".msg")).to_contain_text("your care team can see you have read this change")
    assert Suggestion.objects.get(pk=step_a.pk).status == SuggestionStatus.ACKNOWLEDGED
    patient.get_by_role("link", name="Cuff reading").click()
    expect(patient.locator("body")).to_contain_text("How to measure")
    save_screenshots(patient, "portal-cuff")
    patient.get_by_role("link", name="History").click()
    expect(patient.locator("main")).to_contain_text("lisinopril 20 mg once daily")
    save_screenshots(patient, "portal-history")
    patient.get_by_role("link", name="Devices").click()
    expect(patient.locator("main")).to_contain_text("last sent data")
    save_screenshots(patient, "portal-devices")

    # Another patient reports chest pain: told to seek care now, and the worker escalates it.
    reporter = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    sign_in(reporter, live_server.url, ward["patients"][4].user.username, "pw-patient")
    reporter.get_by_role("link", name="Symptoms").click()
    save_screenshots(reporter, "portal-symptoms")
    reporter.get_by_test_id("symptom").select_option("chest pain")
    reporter.get_by_label("Describe it").fill("pressure in the chest since an hour")
    reporter.get_by_test_id("report").click()
    expect(reporter.get_by_test_id("seek-care")).to_contain_text("Seek care now")
    save_screenshots(reporter, "portal-seek-care")

    escalated = wait_for(lambda: Suggestion.objects.filter(patient=ward["patients"][4], kind="escalate",
                                                           status=SuggestionStatus.PENDING_REVIEW).first(), timeout_s=30)
    clinician.goto(f"{live_server.url}/clinic/")
    expect(item(clinician, escalated)).to_contain_text("red-flag symptom reported: chest pain")
    expect(clinician.get_by_test_id("alert-counter")).to_contain_text("2")
    for other in (clinician, patient, reporter):
        other.context.close()
