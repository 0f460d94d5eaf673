"""Celery tasks of the signal pipeline: thin wrappers that take ids."""
import datetime as dt

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError
from redis.exceptions import RedisError

from monitoring import selectors
from monitoring.bp import estimation
from monitoring.handoff import NewEvidenceHandler, new_evidence_handler
from monitoring.health.model_health import accuracy_reports_compute, drift_reports_compute
from monitoring.ingest import intake, retention
from monitoring.models import BPEstimate, WindowStatus


@worker_process_init.connect
def _one_blas_thread_per_process(**_) -> None:
    """A pool process works on one task at a time, and there are as many processes as cores: BLAS
    threads of its own (OpenBLAS starts one per core and busy-waits between calls on small arrays)
    only burn CPU the other processes need: ~25 % of a window's CPU in bench/worker_throughput.py."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


# Database and broker hiccups are retried with backoff; everything else is handled in the service.
# A broker or Redis error while a crisis- or low-level estimate asks for its evaluation counts too:
# the estimates are stored by then and the window no longer waits for the sweeper, so only the
# retry (which finds the estimates already stored and asks again) gets the evaluation sent.
RETRY_TRANSIENT = {
    "autoretry_for": (OperationalError, InterfaceError, ConnectionError, BrokerOperationalError, RedisError),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
    "ignore_result": True,
}


@shared_task(name="monitoring.tasks.process_window", **RETRY_TRANSIENT)
def process_window(window_id: int) -> None:
    """Quality gate + beat features for one stored window, then, when it is usable, its BP
    estimates in the same task (one task per window, not two: half the broker round trips and
    task overhead, and no processed window left waiting for an estimate task that a broker outage
    lost). A re-run or a redelivery changes nothing: both steps are idempotent, and a transient
    error in either retries the whole task."""
    handler = new_evidence_handler.get()  # before any write: with none, the window waits for the sweep
    analysis = intake.window_process(window_id=window_id)
    if analysis is not None and analysis.usable:
        _check_escalations(handler, estimation.windows_estimate(window_ids=[window_id], analyses={window_id: analysis}))


@shared_task(name="monitoring.tasks.process_windows", **RETRY_TRANSIENT)
def process_windows(window_ids: list[int]) -> None:
    """process_window for the windows of one batch upload (or of a sweep's re-sends, from many
    devices), in one task: each window is still
    analysed, judged and estimated on its own (and idempotently: a redelivered batch changes
    nothing), while the queries and inserts are made once per batch instead of once per window."""
    handler = new_evidence_handler.get()  # before any write: with none, the windows wait for the sweep
    analyses = intake.windows_process(window_ids=window_ids)
    usable = [window_id for window_id, analysis in analyses.items() if analysis.usable]
    if usable:
        _check_escalations(handler, estimation.windows_estimate(window_ids=usable, analyses=analyses))


@shared_task(name="monitoring.tasks.estimate_window", **RETRY_TRANSIENT)
def estimate_window(window_id: int) -> None:
    """BP estimates (active + shadow models) for a usable window; a re-run changes nothing. New
    live estimates are checked for escalation (_check_escalations). The processing tasks
    estimate themselves and the sweep and calibrations send estimate_windows; this one stays for
    re-running an estimate alone and for messages an earlier version queued before an upgrade."""
    handler = new_evidence_handler.get()  # before any write: with none, nothing is estimated unchecked
    _check_escalations(handler, estimation.windows_estimate(window_ids=[window_id]))


def _check_escalations(handler: NewEvidenceHandler, estimates: dict[int, list[BPEstimate]]) -> None:
    """Hand the estimates just stored to therapy (monitoring/handoff.py), which checks each live one
    for escalation in O(1) and asks for a crisis- or low-level patient's evaluation at once
    (therapy/receivers.py). Its errors (a broker outage) fail this task, which retries. The handler
    is looked up before the estimates are written, so a missing one stores nothing unchecked."""
    stored = [e for rows in estimates.values() for e in rows]
    if stored:
        handler.estimates_stored(stored)


# Windows processed this long ago without an estimate are left to the broker's redelivery (the
# sweep stays a short range scan; the visibility timeout is an hour).
ESTIMATE_SWEEP_LOOK_BACK = dt.timedelta(hours=2)


@shared_task(name="monitoring.tasks.estimate_windows", **RETRY_TRANSIENT)
def estimate_windows(window_ids: list[int]) -> None:
    """estimate_window for many windows at once (the sweep's re-sends, the windows a new calibration
    covers); a re-run changes nothing."""
    handler = new_evidence_handler.get()  # before any write: with none, nothing is estimated unchecked
    _check_escalations(handler, estimation.windows_estimate(window_ids=window_ids))


def _resend(window_ids: list[int], *, task, now: dt.datetime, status: str) -> int:
    # Claimed and sent in one transaction: when the broker refuses a batch, its claim is rolled
    # back and the next minute's sweep sends it (a committed claim would hold 100 windows back
    # for 10 min); the error still ends this run, as the broker is down for the rest too.
    resent = 0
    for batch in intake.in_batches(window_ids):
        with transaction.atomic():
            claimed = intake.windows_claim_for_resend(window_ids=batch, now=now, status=status)
            if claimed:
                task.delay(claimed)
                resent += len(claimed)
    return resent


@shared_task(name="monitoring.tasks.sweep_unprocessed_windows", ignore_result=True)
def sweep_unprocessed_windows() -> int:
    """Re-send windows stored but still unprocessed 10 min after they were sent (e.g. the broker
    was down when they arrived), and usable windows processed over 10 min ago that a calibration
    covers but that have no estimate (a worker died between the two), intake.WINDOWS_PER_TASK to a task.
    Each is claimed first, so it is re-sent at most every 10 min; both steps are idempotent, so a
    window that was merely queued costs a no-op. Returns the count of windows re-sent."""
    now = timezone.now()
    waiting = selectors.windows_waiting_for_processing(sent_before=now - intake.RESEND_AFTER)
    resent = _resend(waiting, task=process_windows, now=now, status=WindowStatus.RECEIVED)
    # Processed but left without its estimate (the worker died in between): estimated again.
    unestimated = selectors.windows_processed_without_estimate(
        processed_before=now - intake.RESEND_AFTER, processed_after=now - ESTIMATE_SWEEP_LOOK_BACK)
    resent += _resend(unestimated, task=estimate_windows, now=now, status=WindowStatus.PROCESSED)
    return resent


# A purge run starts no new batch after this long (s), well inside the default soft time limit
# (CELERY_TASK_SOFT_TIME_LIMIT, 120 s); what is left waits for the next hourly run.
PURGE_RUN_BUDGET_S = 60.0


@shared_task(name="monitoring.tasks.purge_raw_windows", **RETRY_TRANSIENT)
def purge_raw_windows() -> dict:
    """Drop the raw bytes of windows older than settings.RAW_WINDOW_RETENTION_DAYS (days) that no
    suggestion rests on (monitoring/ingest/retention.py). Takes nothing; idempotent, so a retry or two runs
    at once purge each window once. Returns the run's counts (bytes freed in bytes)."""
    result = retention.raw_windows_purge(now=timezone.now(), retention_days=settings.RAW_WINDOW_RETENTION_DAYS,
                                         max_seconds=PURGE_RUN_BUDGET_S)
    return {"purged": result.purged, "kept_for_decision": result.kept_for_decision,
            "bytes_freed": result.bytes_freed, "cutoff": result.cutoff.isoformat(), "complete": result.complete}


@shared_task(name="monitoring.tasks.compute_accuracy_reports", **RETRY_TRANSIENT)
def compute_accuracy_reports() -> int:
    """Production accuracy and subgroup reports per model version; alerts; autonomy narrowing."""
    return len(accuracy_reports_compute())


@shared_task(name="monitoring.tasks.compute_drift_reports", **RETRY_TRANSIENT)
def compute_drift_reports() -> int:
    """Data drift of the last 7 days against the models' training distributions; alerts; narrowing."""
    return len(drift_reports_compute())
