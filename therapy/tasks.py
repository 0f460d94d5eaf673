"""Celery tasks of the therapy engine: thin wrappers that take ids."""
from __future__ import annotations

import contextlib
import datetime as dt

import structlog
from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from patients.models import Patient
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion, SymptomReport

log = structlog.get_logger(__name__)

# Reports this old that were never evaluated are left to the daily run (the sweeper stays cheap).
REPORT_SWEEP_LOOK_BACK = dt.timedelta(days=1)


# A patient's symptom report asks for an evaluation now (a red flag raises an alert for the care
# team): it goes to the window workers' queue, at their CPU priority, not behind the therapy
# queue's bursts of debounced evaluations and the daily run.
REPORT_EVALUATION_QUEUE = settings.CELERY_TASK_DEFAULT_QUEUE

# A scheduled evaluation that has not started yet covers every estimate stored before it starts,
# however late its worker takes it (a busy therapy worker), so no second one is scheduled
# meanwhile: at most one waits per patient, and a backlog of evaluations cannot grow with the
# estimates. The mark outlives the countdown by this much in case the task is lost; the next
# estimate after that schedules afresh (and the daily run evaluates everyone).
EVALUATION_MARK_GRACE_S = 600


def _scheduled_mark(patient_id: int) -> str:
    return f"therapy:evaluate:{patient_id}"


@shared_task(name="therapy.tasks.evaluate_patient", autoretry_for=(OperationalError, InterfaceError),
             retry_backoff=2, max_retries=8, ignore_result=True)
def evaluate_patient(patient_id: int) -> None:
    """Propose and route a step for one patient (a re-run stores nothing new while nothing changed)."""
    # Cleared before reading: estimates stored from now on schedule the next evaluation.
    try:
        cache.delete(_scheduled_mark(patient_id))
    except RedisError as exc:  # the mark then expires on its own, EVALUATION_MARK_GRACE_S later
        log.warning("therapy.evaluation_mark_not_cleared", patient_id=patient_id, error=exc.__class__.__name__)
    patient_therapy_evaluate(patient_id=patient_id, now=timezone.now())


def schedule_evaluation(patient_id: int) -> bool:
    """After new estimates: evaluate the patient in THERAPY_EVALUATION_DEBOUNCE_S seconds (60 by
    default; estimates arrive in bursts), unless an evaluation is already scheduled and not yet
    started."""
    debounce_s = settings.THERAPY_EVALUATION_DEBOUNCE_S
    mark = _scheduled_mark(patient_id)
    if not cache.add(mark, 1, debounce_s + EVALUATION_MARK_GRACE_S):
        return False
    try:
        evaluate_patient.apply_async(args=[patient_id], countdown=debounce_s)
    except Exception:
        with contextlib.suppress(RedisError):
            cache.delete(mark)  # not scheduled after all: the next estimate (or the retry) tries again
        raise
    return True


@shared_task(name="therapy.tasks.evaluate_all_patients", ignore_result=True)
def evaluate_all_patients() -> int:
    """Daily: every patient with a plan is evaluated (data can go stale without new estimates)."""
    patient_ids = list(PlanVersion.objects.values_list("patient_id", flat=True).distinct())
    for patient_id in Patient.objects.filter(pk__in=patient_ids).values_list("id", flat=True):
        evaluate_patient.delay(patient_id)
    return len(patient_ids)


@shared_task(name="therapy.tasks.sweep_unevaluated_reports", ignore_result=True)
def sweep_unevaluated_reports() -> int:
    """Every minute: a symptom report whose evaluation never ran (the broker was down when it was
    filed) is evaluated now; a red flag must not wait for the daily run."""
    since = timezone.now() - REPORT_SWEEP_LOOK_BACK
    waiting = (SymptomReport.objects.filter(reported_at__gte=since, patient__plan_versions__isnull=False)
               .filter(Q(patient__latest_evaluation__isnull=True)
                       | Q(reported_at__gt=F("patient__latest_evaluation__evaluated_at")))
               .values_list("patient_id", flat=True).distinct())
    patient_ids = sorted(set(waiting))
    for patient_id in patient_ids:
        evaluate_patient.apply_async(args=[patient_id], queue=REPORT_EVALUATION_QUEUE)
    return len(patient_ids)
