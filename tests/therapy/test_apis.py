"""The therapy API: the care team decides, the patient logs doses, reports symptoms and
acknowledges; each sees only what is theirs, and bad input gets a field-level 400."""
import datetime as dt

import pytest
from django.utils import timezone

from tests.factories import make_clinician, make_patient, make_team
from tests.therapy.conftest import week_of
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Alert, DoseLog, Suggestion, SuggestionStatus

pytestmark = pytest.mark.django_db
YESTERDAY = (timezone.localdate() - dt.timedelta(days=1)).isoformat()


@pytest.fixture
def pending(clinic, plan, estimates):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    return patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())


def test_the_queue_shows_every_routing_reason_and_a_decision_releases_the_step(clinic, pending, client_for):
    clinician = client_for(clinic["clinician"])
    queue = clinician.get("/api/v1/suggestions/", {"status": "pending_review"}).json()["results"]
    assert [s["id"] for s in queue] == [pending.pk]
    assert "adherence unknown" in " ".join(queue[0]["routing_reasons"]) and queue[0]["evidence"]["n_estimates"] == 14
    decided = clinician.post(f"/api/v1/suggestions/{pending.pk}/modify/", {"to_rung": 1, "reason": "agreed, slower"})
    assert decided.status_code == 200 and decided.json()["status"] == "modified"
    assert clinician.get(f"/api/v1/patients/{clinic['patient'].pk}/plan/").json()["regimen"] == "lisinopril 20 mg once daily"
    again = clinician.post(f"/api/v1/suggestions/{pending.pk}/reject/", {"reason": "late"})
    assert again.status_code == 409


def test_the_patient_sees_the_released_change_without_the_internals_and_acknowledges_it(clinic, pending, client_for):
    client_for(clinic["clinician"]).post(f"/api/v1/suggestions/{pending.pk}/approve/", {"note": "ok"})
    patient = client_for(clinic["patient"].user)
    changes = patient.get("/api/v1/suggestions/").json()["results"]
    assert changes == [{**changes[0], "from_regimen": "lisinopril 10 mg once daily", "to_regimen": "lisinopril 20 mg once daily"}]
    assert "routing_reasons" not in changes[0] and "evidence" not in changes[0]
    assert patient.post(f"/api/v1/suggestions/{pending.pk}/approve/").status_code == 403  # not theirs to decide
    assert patient.post(f"/api/v1/suggestions/{pending.pk}/acknowledge/").json()["status"] == "acknowledged"


def test_a_reason_is_required_to_reject_and_nothing_changes_without_it(clinic, pending, client_for):
    response = client_for(clinic["clinician"]).post(f"/api/v1/suggestions/{pending.pk}/reject/", {"reason": ""})
    assert response.status_code == 400 and "reason" in response.json()
    pending.refresh_from_db()
    assert pending.status == SuggestionStatus.PENDING_REVIEW


def test_outsiders_get_404_and_the_other_patient_sees_nothing(clinic, pending, client_for):
    outsider = client_for(make_clinician(team=make_team()).user)
    other = client_for(make_patient(team=make_team()).user)
    for client in (outsider, other):
        assert client.post(f"/api/v1/suggestions/{pending.pk}/approve/").status_code == 404
        assert client.get(f"/api/v1/patients/{clinic['patient'].pk}/plan/").status_code == 404
        assert client.post(f"/api/v1/patients/{clinic['patient'].pk}/symptom-reports/",
                           {"kind": "symptom", "symptom": "chest pain"}).status_code == 404
        assert client.get("/api/v1/suggestions/").json()["results"] == []
    assert Suggestion.objects.get().status == SuggestionStatus.PENDING_REVIEW


def test_the_patient_logs_a_dose_in_one_request_and_sees_adherence(clinic, plan, client_for):
    plan()
    patient = client_for(clinic["patient"].user)
    url = f"/api/v1/patients/{clinic['patient'].pk}/doses/"
    first = patient.post(url, {"day": YESTERDAY, "drug": "lisinopril", "slot": 1, "taken": True})
    assert first.status_code == 201
    assert patient.post(url, {"day": YESTERDAY, "drug": "lisinopril", "slot": 1, "taken": True}).status_code == 200
    bad = patient.post(url, {"day": YESTERDAY, "drug": "aspirin", "slot": 1, "taken": True})
    assert bad.status_code == 400 and "drug" in bad.json()["extra"]["fields"]
    assert patient.post(url, {"day": "not a day", "drug": "lisinopril", "slot": 9}).status_code == 400
    assert DoseLog.objects.count() == 1
    day = patient.get(url, {"day": YESTERDAY}).json()
    assert day["doses"] == [{"drug": "lisinopril", "dose_mg": 10.0, "slot": 1, "per_day": 1,
                             "label": "lisinopril 10 mg", "taken": True}]
    assert day["adherence"]["taken"] == 1 and day["adherence"]["scheduled"] == 7


def test_a_red_flag_report_answers_seek_care_now_with_the_plans_instructions(clinic, plan, client_for):
    plan(seek_care_instructions="Call 112 now.")
    patient = client_for(clinic["patient"].user)
    url = f"/api/v1/patients/{clinic['patient'].pk}/symptom-reports/"
    red = patient.post(url, {"kind": "symptom", "symptom": "shortness of breath"})
    assert red.status_code == 201 and (red.json()["seek_care_now"], red.json()["advice"]) == (True, "Call 112 now.")
    mild = patient.post(url, {"kind": "side_effect", "detail": "ankle swelling", "drug": "amlodipine"})
    assert mild.status_code == 201 and (mild.json()["seek_care_now"], mild.json()["advice"]) == (False, "")
    bad = patient.post(url, {"kind": "symptom", "symptom": "tired"})
    assert bad.status_code == 400 and "symptom" in bad.json()
    assert [r["kind"] for r in patient.get(url).json()] == ["side_effect", "symptom"]


def test_alerts_show_the_care_team_the_cause_and_the_patient_only_what_to_do(clinic, plan, estimates, client_for):
    plan(seek_care_instructions="Call 112 now.")
    estimates(week_of(130, 80))
    client_for(clinic["patient"].user).post(f"/api/v1/patients/{clinic['patient'].pk}/symptom-reports/",
                                            {"kind": "symptom", "symptom": "chest pain"})
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    alert = Alert.objects.get()
    team_view = client_for(clinic["clinician"]).get("/api/v1/alerts/").json()["results"]
    assert [(a["id"], a["cause"]) for a in team_view] == [(alert.pk, "red-flag symptom")]
    patient_view = client_for(clinic["patient"].user).get("/api/v1/alerts/").json()["results"]
    assert patient_view == [{"id": alert.pk, "seek_care": True, "patient_message": "Call 112 now.",
                             "raised_at": patient_view[0]["raised_at"]}]
    assert client_for(make_clinician(team=make_team()).user).get("/api/v1/alerts/").json()["results"] == []


def test_only_the_care_team_sets_a_plan_and_a_bad_setting_is_named(clinic, client_for):
    url = f"/api/v1/patients/{clinic['patient'].pk}/plan/"
    assert client_for(clinic["patient"].user).post(url, {"template": "ace-ccb-thiazide", "reason": "x"}).status_code == 403
    clinician = client_for(clinic["clinician"])
    assert clinician.get(url).status_code == 404
    bad = clinician.post(url, {"template": "ace-ccb-thiazide", "reason": "start", "max_auto_rung": 12}, format="json")
    assert bad.status_code == 400 and "max_auto_rung" in bad.json()["extra"]["fields"]
    made = clinician.post(url, {"template": "ace-ccb-thiazide", "reason": "start", "auto_step_down": True}, format="json")
    assert made.status_code == 201 and made.json()["version"] == 1 and made.json()["rungs"][0] == "lisinopril 10 mg once daily"
    changed = clinician.post(url, {"reason": "high risk", "target_sbp_mmhg": 130, "target_dbp_mmhg": 80}, format="json")
    assert changed.json()["version"] == 2 and changed.json()["created_by"] == clinic["clinician"].username


def test_a_ladder_built_by_hand_is_checked_by_the_domain(clinic, client_for):
    url = f"/api/v1/patients/{clinic['patient'].pk}/plan/"
    clinician = client_for(clinic["clinician"])
    clinician.post(url, {"template": "arb-ccb-thiazide", "reason": "start"}, format="json")
    by_hand = [[{"drug": "candesartan", "dose_mg": 8, "frequency": "once daily"}],
               [{"drug": "candesartan", "dose_mg": 16, "frequency": "once daily"}]]
    bad = clinician.post(url, {"reason": "own ladder", "ladder_name": "candesartan", "ladder": [[{"drug": "x", "dose_mg": -1,
                                                                                                  "frequency": "once daily"}]]},
                         format="json")
    assert bad.status_code == 400 and "ladder" in bad.json()  # named at the field: no dose is negative
    twice = clinician.post(url, {"reason": "own ladder", "ladder_name": "x", "ladder": [
        [{"drug": "x", "dose_mg": 1, "frequency": "once daily"}, {"drug": "X", "dose_mg": 2, "frequency": "once daily"}]]},
        format="json")
    assert twice.status_code == 400 and "plan" in twice.json()["extra"]["fields"]  # the domain's own rule
    made = clinician.post(url, {"reason": "ARB intolerance of losartan", "ladder_name": "candesartan", "ladder": by_hand},
                          format="json")
    assert made.status_code == 201 and made.json()["rungs"] == ["candesartan 8 mg once daily", "candesartan 16 mg once daily"]


def test_a_huge_page_size_is_capped_not_an_error(clinic, pending, client_for):
    page = client_for(clinic["clinician"]).get("/api/v1/suggestions/", {"limit": "62272507225849520128"})
    assert page.status_code == 200 and [s["id"] for s in page.json()["results"]] == [pending.pk]
