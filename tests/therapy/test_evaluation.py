"""Evaluating a patient: the pure rules over stored estimates, one suggestion at a time, audited."""
import datetime as dt
import threading

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from clinops.base.models import AuditEvent
from patients.models import Patient
from tests.therapy.conftest import NOW, store_estimates, week_of
from therapy import evaluation
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion, Suggestion, SuggestionStatus

pytestmark = pytest.mark.django_db


def test_uncontrolled_148_92_with_no_dose_log_goes_to_review_not_out(clinic, plan, estimates):
    plan(auto_step_up=True, max_auto_rung=3, max_interval_halfwidth_mmhg=10.0)
    estimates(week_of(148, 92))
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert (suggestion.kind, suggestion.from_rung, suggestion.to_rung) == ("step_up", 0, 1)
    assert suggestion.status == SuggestionStatus.PENDING_REVIEW and not suggestion.auto_release
    assert any("adherence unknown" in reason for reason in suggestion.routing_reasons)
    assert suggestion.evidence["n_estimates"] == 14 and suggestion.to_regimen == "lisinopril 20 mg once daily"
    assert PlanVersion.objects.get(patient=clinic["patient"]).current_rung == 0
    assert AuditEvent.objects.filter(action="suggestion.pending_review").count() == 1


def test_a_wide_interval_is_named_as_the_reason(clinic, plan, estimates):
    plan(auto_step_up=True, max_auto_rung=3, max_interval_halfwidth_mmhg=10.0)
    estimates(week_of(148, 92), halfwidth=14.0)
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert any(reason.startswith("uncertainty of the mean too high") for reason in suggestion.routing_reasons)


def test_low_mean_sbp_steps_down_automatically_when_allowed_and_moves_the_rung(clinic, plan, estimates, trusted_wearable):
    plan(current_rung=2, auto_step_down=True, max_auto_rung=3)
    estimates(week_of(104, 66))
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert (suggestion.kind, suggestion.to_rung, suggestion.status) == ("step_down", 1, SuggestionStatus.AUTO_RELEASED)
    assert suggestion.routing_reasons == []
    latest = PlanVersion.objects.filter(patient=clinic["patient"]).order_by("-version").first()
    assert (latest.version, latest.current_rung, latest.created_by) == (2, 1, None)
    assert AuditEvent.objects.filter(action="plan.rung_move").count() == 1


def test_flagged_estimates_never_release_automatically(clinic, plan, estimates):
    plan(current_rung=2, auto_step_down=True, max_auto_rung=3)
    estimates(week_of(104, 66), flags=["the active model is the carry-forward baseline"])
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert suggestion.status == SuggestionStatus.PENDING_REVIEW
    assert any("flagged" in reason for reason in suggestion.routing_reasons)


def test_insufficient_data_is_a_hold_with_no_suggestion(clinic, plan, estimates):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(150, 95, days=2))
    assert patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW) is None
    assert not Suggestion.objects.exists()


def test_a_confirmed_crisis_is_an_urgent_escalation_never_released(clinic, plan, estimates):
    plan(auto_step_up=True, auto_step_down=True, max_auto_rung=6)
    estimates(week_of(130, 80) + [(1.0, 186, 112), (0.8, 184, 110)])
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert suggestion.urgent and not suggestion.auto_release and suggestion.status == SuggestionStatus.PENDING_REVIEW
    assert any(e["seek_care"] for e in suggestion.escalations)


def test_the_same_pending_question_is_not_asked_twice_and_a_new_one_supersedes_it(clinic, plan, estimates):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    first = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW) == first
    estimates([(0.5, 190, 125), (0.3, 188, 122)])
    second = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    first.refresh_from_db()
    assert (first.status, first.superseded_by) == (SuggestionStatus.SUPERSEDED, second)
    assert Suggestion.objects.filter(status=SuggestionStatus.PENDING_REVIEW).get() == second
    assert AuditEvent.objects.filter(action="suggestion.supersede").get().detail == {"superseded_by": second.pk}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_evaluating_the_same_patient_at_once_make_one_suggestion(clinic, plan, estimates):
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    barrier, results = threading.Barrier(4), []

    def evaluate():
        barrier.wait()
        try:
            results.append(patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW))
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len({r.pk for r in results}) == 1
    assert Suggestion.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_patients_windows_and_estimates_are_stored_while_an_evaluation_holds_the_patient(
        clinic, plan, estimates, monkeypatch):
    """The evaluation holds the patient's row for as long as it runs (seconds on a busy worker);
    the window worker must not wait for it to store the next estimate."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    holding, release, results = threading.Event(), threading.Event(), []
    read_evidence = evaluation._evidence

    def evidence_once_released(*args, **kwargs):  # the evaluation, paused with the row held
        holding.set()
        release.wait(30)
        return read_evidence(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_evidence", evidence_once_released)

    def evaluate():
        try:
            results.append(patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW))
        finally:
            connection.close()

    thread = threading.Thread(target=evaluate)
    thread.start()
    try:
        assert holding.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")  # a wait for the evaluation fails the test
        store_estimates(clinic["patient"], clinic["device"], [(0.5, 150, 95)])
        with pytest.raises(DatabaseError), transaction.atomic():  # a second evaluation still waits its turn
            Patient.objects.select_for_update(no_key=True, nowait=True).filter(pk=clinic["patient"].pk).first()
    finally:
        release.set()
        thread.join()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert len(results) == 1 and results[0].evidence["n_estimates"] == 15


@pytest.mark.usefixtures("fresh_cache")
def test_one_evaluation_waits_per_patient_until_a_worker_takes_it(clinic, plan, monkeypatch):
    from therapy import tasks

    plan()
    sent = []
    monkeypatch.setattr(tasks.evaluate_patient, "apply_async", lambda **kwargs: sent.append(kwargs))
    patient_id = clinic["patient"].pk
    assert tasks.request_evaluation(patient_id) and not tasks.request_evaluation(patient_id)
    # A crisis-level estimate is not held back by the routine evaluation waiting on the therapy queue.
    assert tasks.request_evaluation(patient_id, urgent=True) and not tasks.request_evaluation(patient_id, urgent=True)
    assert sent == [{"args": [patient_id]}, {"args": [patient_id], "queue": "celery"}]
    tasks.evaluate_patient(patient_id)  # a worker takes it: what is stored from now on asks anew
    assert tasks.request_evaluation(patient_id) and tasks.request_evaluation(patient_id, urgent=True)
    assert len(sent) == 4


@pytest.mark.usefixtures("fresh_cache")
def test_an_evaluation_the_broker_refused_is_asked_for_again_by_the_next_request(clinic, monkeypatch):
    from kombu.exceptions import OperationalError as BrokerUnavailable

    from therapy import tasks

    def refuse(**kwargs):
        raise BrokerUnavailable("Redis is down")

    monkeypatch.setattr(tasks.evaluate_patient, "apply_async", refuse)
    with pytest.raises(BrokerUnavailable):
        tasks.request_evaluation(clinic["patient"].pk)
    monkeypatch.setattr(tasks.evaluate_patient, "apply_async", lambda **kwargs: None)
    assert tasks.request_evaluation(clinic["patient"].pk)


@pytest.mark.usefixtures("fresh_cache")
def test_the_due_sweep_sends_the_never_evaluated_and_the_stalest_first_within_its_share(clinic, monkeypatch, settings):
    from tests.factories import make_clinician, make_patient, make_team
    from therapy import services, tasks
    from therapy.models import LatestEvaluation
    from therapy.selectors import evaluations_overdue

    settings.THERAPY_EVALUATION_INTERVAL_S = 86_400
    now = timezone.now()
    team = make_team()
    clinician = make_clinician(team=team).user
    patients = [make_patient(team=team) for _ in range(4)]
    for patient in patients:
        services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="start")
    without_plan = make_patient(team=team)
    for patient, hours_ago in zip(patients[1:], (30, 50, 2)):  # patients[0] never evaluated
        LatestEvaluation.objects.create(patient=patient, evaluated_at=now - dt.timedelta(hours=hours_ago),
                                        plan_version=patient.plan_versions.first(), outcome="hold",
                                        policy_version="test")
    assert evaluations_overdue(evaluated_before=now - dt.timedelta(days=1)) == 3
    sent = []
    monkeypatch.setattr(tasks.evaluate_patient, "apply_async", lambda **kwargs: sent.append(kwargs["args"][0]))
    monkeypatch.setattr(tasks, "evaluations_due_per_sweep", lambda *a, **k: 2)
    assert tasks.evaluate_due_patients() == 2
    assert sent == [patients[0].pk, patients[2].pk]  # never evaluated, then the stalest (50 h); 30 h next minute
    assert without_plan.pk not in sent
    monkeypatch.undo()
    assert tasks.evaluations_due_per_sweep(50_000, interval_s=86_400, sweep_every_s=60) == 70
    assert tasks.evaluations_due_per_sweep(100, interval_s=86_400, sweep_every_s=60) == 50


def test_the_evaluation_task_stores_the_suggestion(clinic, plan, estimates):
    from therapy.tasks import evaluate_patient

    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    assert evaluate_patient.apply(args=[clinic["patient"].pk]).successful()
    assert Suggestion.objects.filter(patient=clinic["patient"]).count() == 1


def test_the_first_step_up_waits_the_minimum_interval_after_the_plan_started(clinic, plan, estimates, doses,
                                                                            trusted_wearable):
    started = plan(auto_step_up=True, max_auto_rung=3)
    PlanVersion.objects.filter(pk=started.pk).update(created_at=NOW - dt.timedelta(days=10))
    estimates(week_of(150, 95))
    doses(taken=1.0)
    assert patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW) is None
    held = clinic["patient"].latest_evaluation
    assert any("the last change was 10 days ago" in r for r in held.reasons), held.reasons
