"""Celery tasks of the therapy engine: thin wrappers that take ids."""
from __future__ import annotations

import contextlib
import datetime as dt
import math

import structlog
from celery import shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion, SymptomReport
from therapy.selectors import patients_due_for_evaluation
from therapy.services import REPORT_EVALUATION_QUEUE

log = structlog.get_logger(__name__)

# Reports this old that were never evaluated are left to the daily run (the sweeper stays cheap).
REPORT_SWEEP_LOOK_BACK = dt.timedelta(days=1)



# Titration decides on a week's mean, so it is re-decided once a day per patient (the due sweep
# below, spread over the day) and on the events that change the question (a cuff reading, a
# symptom report, a plan change), not after every 5-minute window: that re-read a week of
# estimates per window and was 93 % of a window's CPU. What cannot wait a day - a crisis- or
# low-level estimate - asks for an evaluation at once (monitoring.tasks, therapy.escalation).
#
# An evaluation asked for and not started yet covers every estimate stored before it starts,
# however late its worker takes it, so no second one is asked for meanwhile: at most one waits per
# patient. The mark outlives the wait by this much in case the task is lost; the next request
# after that sends afresh (and the due sweep evaluates everyone within the interval).
EVALUATION_MARK_GRACE_S = 600


def _scheduled_mark(patient_id: int, *, urgent: bool = False) -> str:
    # An urgent request has a mark of its own: a routine evaluation waiting behind a backlog on the
    # therapy queue must not hold back the one a crisis-level estimate asks for on the fast queue.
    return f"therapy:evaluate{':urgent' if urgent else ''}:{patient_id}"


@shared_task(name="therapy.tasks.evaluate_patient", autoretry_for=(OperationalError, InterfaceError),
             retry_backoff=2, max_retries=8, ignore_result=True)
def evaluate_patient(patient_id: int) -> None:
    """Propose and route a step for one patient (a re-run stores nothing new while nothing changed)."""
    # Cleared before reading: what is stored from now on may ask for the next evaluation.
    try:
        cache.delete_many([_scheduled_mark(patient_id), _scheduled_mark(patient_id, urgent=True)])
    except RedisError as exc:  # the mark then expires on its own, EVALUATION_MARK_GRACE_S later
        log.warning("therapy.evaluation_mark_not_cleared", patient_id=patient_id, error=exc.__class__.__name__)
    patient_therapy_evaluate(patient_id=patient_id, now=timezone.now())


def request_evaluation(patient_id: int, *, urgent: bool = False) -> bool:
    """Evaluate the patient now, unless an evaluation of the same kind is already waiting and not yet
    started. Urgent (a crisis- or low-level reading): on the fast queue (REPORT_EVALUATION_QUEUE),
    never held back by a routine one; routine: on the therapy queue. Returns whether one was sent."""
    mark = _scheduled_mark(patient_id, urgent=urgent)
    queue = REPORT_EVALUATION_QUEUE if urgent else None
    if not cache.add(mark, 1, EVALUATION_MARK_GRACE_S):
        return False
    try:
        evaluate_patient.apply_async(args=[patient_id], **({"queue": queue} if queue else {}))
    except Exception:
        with contextlib.suppress(RedisError):
            cache.delete(mark)  # not sent after all: the next request (or the task's retry) tries again
        raise
    return True


def evaluations_due_per_sweep(patients_with_plans: int, *, interval_s: float, sweep_every_s: float) -> int:
    """How many due patients one sweep sends: twice the even share of the interval (a backlog, e.g.
    after an outage or on first start, is worked off in half an interval, spread, not in one
    burst), and at least 50."""
    share = patients_with_plans * sweep_every_s / interval_s
    return max(50, math.ceil(2 * share))


# The due sweep runs this often (the beat schedule in settings names the same period).
DUE_SWEEP_EVERY_S = 60


@shared_task(name="therapy.tasks.evaluate_due_patients", ignore_result=True)
def evaluate_due_patients() -> int:
    """Every minute: patients with a plan whose latest evaluation is older than
    THERAPY_EVALUATION_INTERVAL_S (a day by default), or who have none, oldest first, are evaluated
    (data can go stale, and titration waits for this run). Returns how many were sent."""
    now = timezone.now()
    interval_s = settings.THERAPY_EVALUATION_INTERVAL_S
    due = patients_due_for_evaluation(
        evaluated_before=now - dt.timedelta(seconds=interval_s),
        limit=evaluations_due_per_sweep(PlanVersion.objects.values("patient_id").distinct().count(),
                                        interval_s=interval_s, sweep_every_s=DUE_SWEEP_EVERY_S))
    return sum(1 for patient_id in due if request_evaluation(patient_id))


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


# The stored pipeline, agreement and population reports live beside their queries; importing them
# here registers their tasks with the worker (Celery discovers `tasks` modules only).
from therapy import reports  # noqa: E402, F401
