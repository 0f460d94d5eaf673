"""The clinician app and the portal without a browser: who may open what, CSRF, the decisions,
and a bounded number of queries per page whatever the volume."""
import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from therapy import services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Suggestion, SuggestionStatus
from tests.factories import make_clinician, make_patient, make_team
from tests.therapy.conftest import clinic, estimates, plan, week_of  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def pending(clinic, plan, estimates):  # noqa: F811
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    return patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())


def test_anonymous_visitors_are_sent_to_sign_in(db):
    for url in ("/clinic/", "/clinic/patients/", "/portal/", "/portal/symptoms/"):
        response = Client().get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/?next=")


def test_a_clinician_outside_the_care_team_gets_404_and_a_patient_403_in_the_clinician_app(clinic, pending):
    outsider = logged_in(make_clinician(team=make_team()).user)
    assert outsider.get(f"/clinic/patients/{clinic['patient'].pk}/").status_code == 404
    assert outsider.post(f"/clinic/suggestions/{pending.pk}/approve/").status_code == 404
    other_patient = logged_in(make_patient(team=make_team()).user)
    for url in ("/clinic/", "/clinic/patients/", f"/clinic/patients/{clinic['patient'].pk}/"):
        assert other_patient.get(url).status_code == 403
    assert logged_in(clinic["clinician"]).get("/portal/").status_code == 403
    pending.refresh_from_db()
    assert pending.status == SuggestionStatus.PENDING_REVIEW


def test_forms_are_csrf_protected(clinic, pending):
    client = Client(enforce_csrf_checks=True)
    client.force_login(clinic["clinician"])
    assert client.post(f"/clinic/suggestions/{pending.pk}/approve/").status_code == 403
    patient = Client(enforce_csrf_checks=True)
    patient.force_login(clinic["patient"].user)
    assert patient.post("/portal/symptoms/", {"kind": "symptom", "symptom": "chest pain"}).status_code == 403
    pending.refresh_from_db()
    assert pending.status == SuggestionStatus.PENDING_REVIEW and not clinic["patient"].symptom_reports.exists()


def test_the_queue_shows_the_evidence_and_a_decision_replaces_the_item_in_place(clinic, pending):
    client = logged_in(clinic["clinician"])
    page = client.get("/clinic/").content.decode()
    assert "lisinopril 10 mg once daily" in page and "lisinopril 20 mg once daily" in page
    assert "148/92 mmHg" in page and "14 on 7 days" in page and "adherence unknown" in page
    refused = client.post(f"/clinic/suggestions/{pending.pk}/reject/", {"reason": " "}, HTTP_HX_REQUEST="true")
    assert "Say why the suggestion is rejected." in refused.content.decode()
    decided = client.post(f"/clinic/suggestions/{pending.pk}/approve/", HTTP_HX_REQUEST="true")
    assert decided.status_code == 200 and 'data-testid="decided"' in decided.content.decode()
    assert Suggestion.objects.get().status == SuggestionStatus.APPROVED
    assert "Nothing waiting for review." in client.get("/clinic/").content.decode()


def test_the_patient_list_triages_and_searches(clinic, plan, estimates):  # noqa: F811
    plan()
    estimates(week_of(150, 95))
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    clinic["device"].__class__.objects.filter(pk=clinic["device"].pk).update(last_seen_at=timezone.now())
    team = clinic["patient"].care_teams.get()
    quiet = make_patient(team=team)
    client = logged_in(clinic["clinician"])
    rows = client.get("/clinic/patients/").context["rows"]
    assert [(r.patient, r.triage.value) for r in rows] == [(quiet, "device silent"), (clinic["patient"], "uncontrolled")]
    found = client.get("/clinic/patients/", {"q": clinic["patient"].medical_record_number}).context["rows"]
    assert [r.patient for r in found] == [clinic["patient"]]
    assert [r.patient for r in client.get("/clinic/patients/", {"triage": "uncontrolled"}).context["rows"]] == [clinic["patient"]]


def test_the_portal_says_the_bp_in_words_and_takes_a_dose_and_a_red_flag(clinic, plan, estimates):  # noqa: F811
    plan(seek_care_instructions="Call 112 now.")
    estimates(week_of(138, 86))
    client = logged_in(clinic["patient"].user)
    home = client.get("/portal/").content.decode()
    assert "Your average this week: 138/86, above your target of 135/85." in home
    today = timezone.localdate().isoformat()
    tapped = client.post("/portal/doses/", {"day": today, "drug": "lisinopril", "slot": 1, "taken": "yes"}, HTTP_HX_REQUEST="true")
    assert "taken ✓" in tapped.content.decode() and clinic["patient"].dose_logs.get().taken
    red = client.post("/portal/symptoms/", {"kind": "symptom", "symptom": "chest pain"})
    assert 'data-testid="seek-care"' in red.content.decode() and "Call 112 now." in red.content.decode()


def test_pages_run_a_bounded_number_of_queries_whatever_the_volume(clinic, plan, estimates, django_assert_max_num_queries):  # noqa: F811
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92, per_day=6))
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    team = clinic["patient"].care_teams.get()
    for _ in range(15):
        other = make_patient(team=team)
        services.plan_create(actor=clinic["clinician"], patient=other, template="arb-ccb-thiazide", reason="start")
        services.symptom_report_record(actor=clinic["clinician"], patient=other, kind="side_effect", detail="cough")
        patient_therapy_evaluate(patient_id=other.pk, now=timezone.now() + dt.timedelta(seconds=1))
    client = logged_in(clinic["clinician"])
    for url in ("/clinic/", "/clinic/patients/", f"/clinic/patients/{clinic['patient'].pk}/"):
        with django_assert_max_num_queries(25):
            assert client.get(url).status_code == 200
    assert len(client.get("/clinic/").context["items"]) == 16
