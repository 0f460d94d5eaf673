"""The therapy engine on the real parts: uploads -> worker -> estimates -> escalation check and daily evaluation,
and a red-flag report -> worker -> alert for the care team, with a real Celery worker."""
import datetime as dt
import json
import time

import pytest
import redis
from celery import Celery
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from clinops.base.audit import SYSTEM
from clinops.base.models import WorkerHeartbeat
from monitoring.bp import registry
from monitoring.models import BPEstimate
from tests.conftest import wait_for
from tests.factories import make_clinician, make_device, make_patient, make_team
from tests.monitoring.conftest import make_payload, real_windows  # noqa: F401 - fixtures
from tests.monitoring.test_bp_registry import register
from tests.workers import Worker, database_url_of_test_db
from therapy import services
from therapy.models import Alert, LatestEvaluation, Suggestion

# fresh_cache: an evaluation mark left by an earlier test for a reused patient id would hold the evaluation back.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_cache")]


@pytest.fixture
def ward():
    registry.model_version_promote(actor=SYSTEM, model=register("carry-forward", test_mae=5.0, kind="baseline"))
    team = make_team()
    patient = make_patient(team=team)
    clinician = make_clinician(team=team).user
    services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="start",
                         auto_step_up=True, max_auto_rung=3)
    _, key = make_device(patient)
    device = APIClient()
    device.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return {"patient": patient, "clinician": clinician, "device": device}


def _upload(device, make_payload, *, cuff: tuple[int, int], windows: int) -> None:
    """A cuff reading 2 min ago (its wait for a repeat not over), then windows from 1 min ago."""
    now = timezone.now().replace(microsecond=0)
    reading = {"measured_at": (now - dt.timedelta(minutes=2)).isoformat(), "sbp_mmhg": cuff[0], "dbp_mmhg": cuff[1]}
    assert device.post("/api/v1/cuff-readings/", data=json.dumps(reading), content_type="application/json").status_code == 201
    for i in range(windows):
        at = now - dt.timedelta(minutes=1) + dt.timedelta(seconds=20 * i)
        body = json.dumps(make_payload(i, sequence=i + 1, recorded_at=at.isoformat()))
        assert device.post("/api/v1/windows/", data=body, content_type="application/json").status_code == 202


def test_ordinary_estimates_wait_for_the_daily_evaluation_which_records_why_it_holds(celery_worker, ward, make_payload):
    """Titration is not re-decided after every window: the cuff reading is evaluated at once, the
    estimates that follow wait for the due sweep (a day by default), which then evaluates them."""
    from therapy.tasks import evaluate_due_patients

    device, patient = ward["device"], ward["patient"]
    _upload(device, make_payload, cuff=(150, 94), windows=3)
    wait_for(lambda: BPEstimate.objects.filter(patient=patient).count() == 3, timeout_s=90)
    after_cuff = wait_for(lambda: LatestEvaluation.objects.filter(patient=patient).first(), timeout_s=30)
    time.sleep(3)  # what an evaluation after each window would have needed (it took ~0.1 s)
    after_cuff = LatestEvaluation.objects.get(patient=patient)
    assert after_cuff.evidence["n_estimates"] < 3
    LatestEvaluation.objects.filter(patient=patient).update(evaluated_at=after_cuff.evaluated_at - dt.timedelta(days=2))
    assert evaluate_due_patients() == 1
    held = wait_for(lambda: LatestEvaluation.objects.filter(patient=patient, evidence__n_estimates=3).first(), timeout_s=30)
    assert held.outcome == "hold" and held.suggestion is None
    assert held.reasons[0] == "not enough data: 3 usable estimates in the last 7 days, the plan needs at least 12"
    assert not Suggestion.objects.filter(patient=patient).exists()
    assert evaluate_due_patients() == 0  # evaluated now: not due again for a day


def test_crisis_level_estimates_are_checked_at_once_and_reach_the_care_team(celery_worker, ward, make_payload):
    """The escalation check runs on every new estimate: the carry-forward estimates of a 186/104
    cuff reading are crisis-level, so the patient is evaluated at once (the reading alone waits 5
    min for its repeat) and the confirmed crisis is an urgent, seek-care item."""
    device, patient = ward["device"], ward["patient"]
    _upload(device, make_payload, cuff=(186, 104), windows=3)
    alert = wait_for(lambda: Alert.objects.filter(patient=patient, cause="crisis", closed_at=None).first(), timeout_s=90)
    estimate_ids = set(BPEstimate.objects.filter(patient=patient, shadow=False).values_list("pk", flat=True))
    assert alert.seek_care and alert.suggestion.urgent and alert.suggestion.kind == "escalate"
    assert set(alert.suggestion.estimate_ids) & estimate_ids  # the estimates raised it, not the lone reading


def test_a_red_flag_report_reaches_the_care_team_as_an_alert_through_the_worker(celery_worker, ward):
    patient = APIClient()
    patient.force_login(ward["patient"].user)
    answer = patient.post(f"/api/v1/patients/{ward['patient'].pk}/symptom-reports/",
                          {"kind": "symptom", "symptom": "chest pain", "detail": "pressing, 20 min"})
    assert answer.status_code == 201 and answer.json()["seek_care_now"]
    alert = wait_for(lambda: Alert.objects.filter(patient=ward["patient"], closed_at=None).first(), timeout_s=30)
    assert alert.cause == "red-flag symptom" and alert.seek_care and alert.suggestion.kind == "escalate"
    clinician = APIClient()
    clinician.force_login(ward["clinician"])
    queue = clinician.get("/api/v1/suggestions/", {"status": "pending_review"}).json()["results"]
    assert [(s["id"], s["urgent"]) for s in queue] == [(alert.suggestion_id, True)]


def test_the_production_shape_runs_the_evaluations_on_the_therapy_workers_only(ward, tmp_path):
    """compose.yaml's two kinds of worker (-Q celery, -Q therapy): each task reaches the kind its
    route names, and beat's therapy heartbeat is answered by a therapy worker."""
    # A broker database of their own: the session's worker (both queues) must not take these tasks.
    broker = settings.REDIS_URL.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(broker).flushdb()
    sender = Celery("sender", broker=broker, set_as_current=False)  # the tests after this one send as before
    sender.conf.update(task_routes=settings.CELERY_TASK_ROUTES, task_queues=settings.CELERY_TASK_QUEUES,
                       task_default_queue=settings.CELERY_TASK_DEFAULT_QUEUE)
    kinds = {queue: Worker(name=f"only-{queue}", database_url=database_url_of_test_db(), queues=(queue,),
                           env={"REDIS_URL": broker}, log_path=tmp_path / f"{queue}.log")
             for queue in ("celery", "therapy")}
    try:
        for worker in kinds.values():
            worker.wait_ready(app=sender)
        patient = ward["patient"]
        sender.send_task("therapy.tasks.evaluate_patient", args=[patient.pk])
        sender.send_task("clinops.tasks.worker_heartbeat", kwargs={"probe": "queue-default"})
        therapy_beat = settings.CELERY_BEAT_SCHEDULE["therapy-worker-heartbeat"]
        sender.send_task(therapy_beat["task"], kwargs=therapy_beat["kwargs"], **therapy_beat["options"])

        held = wait_for(lambda: LatestEvaluation.objects.filter(patient=patient).first(), timeout_s=30)
        assert held.outcome == "hold"

        def both_beats() -> dict | None:
            beats = dict(WorkerHeartbeat.objects.filter(probe__in=["queue-default", "therapy"])
                         .values_list("probe", "worker"))
            return beats if len(beats) == 2 else None

        assert wait_for(both_beats, timeout_s=30) == {"queue-default": kinds["celery"].name, "therapy": kinds["therapy"].name}
    finally:
        for worker in kinds.values():
            worker.stop()
    received = "Task therapy.tasks.evaluate_patient["  # the worker's log line for a task it took
    assert received in kinds["therapy"].log_tail(20000) and received not in kinds["celery"].log_tail(20000)
    redis.Redis.from_url(broker).flushdb()
