"""Nothing silences an escalation: when titration or routing fails for a patient (a bad plan field,
a rule that raises), the escalation checks still run on their own path, the patient still gets the
seek-care advice, and the failure itself is an urgent item for the care team and a critical
operator alert, resolved once the evaluation works again."""
import datetime as dt

import pytest

from monitoring.models import OperatorAlert
from tests.therapy.conftest import NOW, week_of
from therapy import evaluation, services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Alert, LatestEvaluation, PlanVersion, SuggestionStatus

pytestmark = pytest.mark.django_db


def chest_pain(clinic):
    return services.symptom_report_record(actor=clinic["patient"].user, patient=clinic["patient"], kind="symptom",
                                          symptom="chest pain", detail="since an hour", drug="")


def broken_titration(*args, **kwargs):
    raise RuntimeError("a rule that fails")


def test_a_red_flag_reaches_the_queue_and_the_patient_is_told_to_seek_care_when_titration_fails(
        clinic, plan, estimates, monkeypatch):
    plan(auto_step_up=True, max_auto_rung=3, seek_care_instructions="Call 112 now.")
    estimates(week_of(150, 95))
    monkeypatch.setattr(evaluation, "propose_step", broken_titration)
    report = chest_pain(clinic)  # stamped by the clock, which has moved on since NOW was taken
    item = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=report.reported_at + dt.timedelta(minutes=1))
    assert (item.kind, item.status, item.urgent, item.auto_release) == ("escalate", SuggestionStatus.PENDING_REVIEW,
                                                                       True, False)
    kinds = {e["kind"]: e for e in item.escalations}
    assert f"report:{report.pk}" in kinds["red-flag symptom"]["sources"]
    assert kinds["evaluation failing"]["reason"].startswith("evaluation failing for this patient (RuntimeError: a rule")
    seek_care = Alert.objects.get(patient=clinic["patient"], cause="red-flag symptom", closed_at=None)
    assert seek_care.seek_care and seek_care.patient_message == "Call 112 now."
    assert Alert.objects.filter(patient=clinic["patient"], cause="evaluation failing", closed_at=None).exists()
    operator = OperatorAlert.objects.get(signal="therapy.evaluation_failing", resolved_at=None)
    assert operator.severity == "critical" and operator.scope == f"patient:{clinic['patient'].pk}"
    assert LatestEvaluation.objects.get(patient=clinic["patient"]).outcome == "failed"


def test_a_plan_field_that_breaks_the_evaluation_still_lets_a_crisis_through(clinic, plan, estimates):
    current = plan(auto_step_up=True, max_auto_rung=3)
    # Stored as the issue found it (an API that let it through): a list where a text belongs.
    PlanVersion.objects.filter(pk=current.pk).update(exclusions=[{"kind": "pregnancy", "detail": ["week 20"]}])
    estimates(week_of(150, 95) + [(0.6, 192, 124), (0.4, 188, 121)])
    item = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    crisis = next(e for e in item.escalations if e["kind"] == "crisis")
    assert crisis["seek_care"] and item.urgent
    assert any(e["kind"] == "evaluation failing" for e in item.escalations)


def test_the_same_failure_is_one_item_not_one_per_run_and_the_alert_resolves_when_fixed(clinic, plan, estimates,
                                                                                       monkeypatch):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(150, 95))
    monkeypatch.setattr(evaluation, "propose_step", broken_titration)
    first = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW + dt.timedelta(minutes=5)) == first
    services.suggestion_reject(actor=clinic["clinician"], suggestion_id=first.pk, reason="plan fixed by hand next")
    # Seen by a clinician and nothing new is urgent: no fresh item, the operator alert stays open.
    assert patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW + dt.timedelta(minutes=10)) is None
    assert OperatorAlert.objects.filter(signal="therapy.evaluation_failing", resolved_at=None).count() == 1
    monkeypatch.undo()
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW + dt.timedelta(minutes=15))
    assert not OperatorAlert.objects.filter(signal="therapy.evaluation_failing", resolved_at=None).exists()


@pytest.mark.parametrize("field, value", [
    ("exclusions", [{"kind": "pregnancy", "detail": ["week 20"]}]),
    ("exclusions", [{"kind": "broken leg"}]),
    ("exclusions", ["pregnancy"]),
    ("ladder", [[{"drug": "lisinopril", "dose_mg": "ten", "frequency": "once daily"}]]),
    ("ladder", [[{"drug": ["lisinopril"], "dose_mg": 10, "frequency": "once daily"}]]),
    ("ladder", [[{"drug": "lisinopril", "dose_mg": 10, "frequency": "hourly"}]]),
])
def test_a_plan_field_of_the_wrong_shape_is_refused_naming_it_and_nothing_changes(clinic, plan, field, value):
    from rest_framework.test import APIClient

    current = plan()
    client = APIClient()
    client.force_login(clinic["clinician"])
    answer = client.post(f"/api/v1/patients/{clinic['patient'].pk}/plan/", {"reason": "test", field: value},
                         format="json")
    assert answer.status_code == 400 and field in answer.json(), answer.content
    assert PlanVersion.objects.filter(patient=clinic["patient"]).get() == current
