"""The tour: every page of the clinician app, the portal and the admin, as every role, at desktop and
phone widths, on a clinic holding every kind of data its pages show — the demo's weeks of history,
every suggestion state (pending, released automatically, approved, modified, rejected, superseded,
acknowledged), an escalation snoozed and one from a failing evaluation, every kind of symptom
report, every kind of stored monitoring report, an operator alert and a suspension of automatic
releases. Any 5xx or other failed answer, console error or page scrolling sideways fails it. A
full-page screenshot of each page at each width goes to var/artifacts/screenshots/tour-*.png."""
from __future__ import annotations

import datetime as dt
import itertools
import re

import pytest
from django.conf import settings
from django.contrib import admin
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, Page

from monitoring import tasks as monitoring_tasks
from monitoring.bp import registry
from monitoring.models import AutonomySuspension, MonitoringReport, MonitoringReportKind
from patients.models import CareTeam, Patient, User
from tests import factories
from tests.factories import make_device, make_patient
from tests.therapy.conftest import store_estimates, week_of
from tests.web.helpers import DESKTOP, PHONE, SCREENSHOT_DIR
from therapy import evaluation, reports, services
from therapy.domain import Symptom
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion, Suggestion, SuggestionStatus, SymptomReport

pytestmark = [pytest.mark.django_db(transaction=True)]

WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 6).map(e => `${e.tagName.toLowerCase()}.${e.className}: ${Math.round(e.getBoundingClientRect().right)} px`)"""


def _evaluate(patient: Patient) -> Suggestion | None:
    return patient_therapy_evaluate(patient_id=patient.pk, now=timezone.now())


def _tour_patient(team: CareTeam, clinician: User, values: list, **plan) -> tuple[Patient, Suggestion | None]:
    """A patient of `team` on a plan set two months ago, with a week of wearable estimates, evaluated now."""
    patient = make_patient(team=team)
    device, _ = make_device(patient)
    services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="start",
                         **{"auto_step_up": False, **plan})
    PlanVersion.objects.filter(patient=patient).update(created_at=timezone.now() - dt.timedelta(days=60))
    store_estimates(patient, device, values, now=timezone.now())
    return patient, _evaluate(patient)


def _every_state_and_report(monkeypatch) -> None:
    """On top of the demo: what its history does not hold, made through the services."""
    monkeypatch.setattr(factories, "_seq", itertools.count(100))  # past the demo's patient1..6
    team = CareTeam.objects.get(name="Hypertension clinic A")
    lead = team.clinicians.select_related("user").first()
    team.clinical_leads.add(lead)
    doctor = lead.user
    _, approved = _tour_patient(team, doctor, week_of(148, 92))
    services.suggestion_approve(actor=doctor, suggestion_id=approved.pk, note="as proposed")
    _, modified = _tour_patient(team, doctor, week_of(152, 94))
    services.suggestion_modify(actor=doctor, suggestion_id=modified.pk, to_rung=modified.from_rung,
                               reason="recheck with a cuff series first")
    _, rejected = _tour_patient(team, doctor, week_of(146, 91))
    services.suggestion_reject(actor=doctor, suggestion_id=rejected.pk, reason="white-coat pattern")
    _tour_patient(team, doctor, week_of(118, 70), auto_step_down=True, current_rung=2)
    crisis, escalation = _tour_patient(team, doctor, week_of(150, 95) + [(0.6, 186, 121), (0.4, 188, 124)])
    services.escalation_act(actor=doctor, suggestion_id=escalation.pk, step="contacted",
                            note="reached by phone, on the way to the emergency department")
    # A side effect's alert (it does not send the patient to seek care) snoozed out of the queue.
    coughing, _ = _tour_patient(team, doctor, week_of(128, 80))
    services.symptom_report_record(actor=coughing.user, patient=coughing, kind="side_effect", drug="lisinopril",
                                   detail="dry cough")
    snoozed = _evaluate(coughing).alerts.get(closed_at__isnull=True)
    services.alert_snooze(actor=doctor, alert_id=snoozed.pk, reason="known ACE-inhibitor cough, review next week",
                          days=3)

    reporter, _ = _tour_patient(team, doctor, week_of(128, 80))
    for symptom in Symptom:
        services.symptom_report_record(actor=reporter.user, patient=reporter, kind="symptom", symptom=symptom.value,
                                       detail=f"since this morning ({symptom.value})" if symptom is Symptom.OTHER else "")
    services.symptom_report_record(actor=reporter.user, patient=reporter, kind="side_effect", drug="lisinopril",
                                   detail="a dry cough at night")
    _evaluate(reporter)

    propose_step = evaluation.propose_step
    failing, _ = _tour_patient(team, doctor, week_of(130, 82))
    monkeypatch.setattr(evaluation, "propose_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a rule failed")))
    services.symptom_report_record(actor=failing.user, patient=failing, kind="symptom", symptom="chest pain")
    _evaluate(failing)
    monkeypatch.setattr(evaluation, "propose_step", propose_step)

    for task in (monitoring_tasks.compute_accuracy_reports, monitoring_tasks.compute_drift_reports,
                 reports.report_pipeline, reports.report_agreement, reports.report_population):
        task()
    AutonomySuspension.objects.create(model_version=registry.model_active(), reason="drift of the pulse arrival time")

    present = set(Suggestion.objects.values_list("status", flat=True))
    assert present == set(SuggestionStatus.values), f"missing states: {set(SuggestionStatus.values) - present}"
    assert set(MonitoringReport.objects.values_list("kind", flat=True)) == set(MonitoringReportKind.values)
    assert {s.value for s in Symptom} <= set(SymptomReport.objects.values_list("symptom", flat=True))
    assert any(e["kind"] == "evaluation failing" for s in Suggestion.objects.all() for e in s.escalations or [])


def _admin_pages() -> list[str]:
    """The admin's index, every model's list and the change page of its first row."""
    pages = ["/admin/"]
    for model in admin.site._registry:
        meta = model._meta
        pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            pages.append(reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[first.pk]))
    return pages


def _clinic_pages(patients) -> list[str]:
    pages = ["/clinic/", "/clinic/patients/", "/clinic/overdue/", "/clinic/autonomy/", "/clinic/model-health/",
             "/api/v1/docs/"]
    for patient in patients:
        pages += [f"/clinic/patients/{patient.pk}/", f"/clinic/patients/{patient.pk}/plan/",
                  f"/clinic/patients/{patient.pk}/summary/"]
    return pages


PORTAL_PAGES = ["/portal/", "/portal/cuff/", "/portal/symptoms/", "/portal/history/", "/portal/devices/",
                "/portal/summary/"]


def _signed_in(browser: Browser, base_url: str, user: User | None, size: dict) -> tuple[Page, list[str]]:
    context = browser.new_context(viewport=size)
    if user is not None:
        client = Client()
        client.force_login(user)
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "url": base_url,
                              "value": client.cookies[settings.SESSION_COOKIE_NAME].value}])
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{page.url}: script error: {e}"))
    page.on("response", lambda r: problems.append(f"{r.url}: HTTP {r.status}")
            if r.status >= 400 and not r.url.endswith(("/404-expected/",)) else None)
    return page, problems


def _tour(browser: Browser, base_url: str, role: str, user: User | None, pages: list[str]) -> list[str]:
    """Every page at both widths; the problems found (empty when the tour passed)."""
    found = []
    for size in (DESKTOP, PHONE):
        page, problems = _signed_in(browser, base_url, user, size)
        for path in pages:
            response = page.goto(f"{base_url}{path}")
            page.wait_for_load_state("load")
            if response is None or response.status != 200:
                problems.append(f"{path}: HTTP {response.status if response else 'no answer'}")
            if not page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"):
                problems.append(f"{path} scrolls sideways at {size['width']} px: {page.evaluate(WIDEST)}")
            name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home"
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT_DIR / f"tour-{role}-{name}-{size['width']}.png"), full_page=True)
        page.context.close()
        found += problems
    return found


def test_every_page_as_every_role_at_both_widths_answers_without_error_or_sideways_scrolling(
        live_server, browser, tmp_path, monkeypatch):
    call_command("seed_demo", keys_file=str(tmp_path / "keys.json"))
    _every_state_and_report(monkeypatch)
    team_a, team_b = CareTeam.objects.get(name="Hypertension clinic A"), CareTeam.objects.get(name="Hypertension clinic B")
    doctor = team_a.clinicians.first().user
    nurse = team_b.clinicians.first().user
    patients = list(Patient.objects.order_by("pk"))

    tours = [
        ("anonymous", None, ["/login/"]),
        ("lead-clinician", doctor, _clinic_pages(team_a.patients.order_by("pk"))),
        ("clinician", nurse, _clinic_pages(team_b.patients.order_by("pk"))),
        ("admin", User.objects.get(username="admin"), _clinic_pages(patients[:2]) + _admin_pages()),
    ]
    tours += [(f"patient-{p.pk}", p.user, PORTAL_PAGES) for p in patients if p.user_id]
    problems = []
    for role, user, pages in tours:
        problems += [f"{role}: {p}" for p in _tour(browser, live_server.url, role, user, pages)]
    assert not problems, "\n".join(problems)
