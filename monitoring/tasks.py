"""Celery tasks of the signal pipeline: thin wrappers that take ids."""
from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from monitoring import selectors, services


# Database and broker hiccups are retried with backoff; everything else is handled in the service.
RETRY_TRANSIENT = {
    "autoretry_for": (OperationalError, InterfaceError, ConnectionError),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
    "ignore_result": True,
}


@shared_task(name="monitoring.tasks.process_window", **RETRY_TRANSIENT)
def process_window(window_id: int) -> None:
    """Quality gate + beat features for one stored window; a re-run changes nothing."""
    services.window_process(window_id=window_id)


@shared_task(name="monitoring.tasks.estimate_window", **RETRY_TRANSIENT)
def estimate_window(window_id: int) -> None:
    """BP estimates (active + shadow models) for a usable window; a re-run changes nothing. New
    live estimates schedule the patient's therapy evaluation (debounced)."""
    from therapy.tasks import schedule_evaluation

    estimates = services.window_estimate(window_id=window_id)
    live = [e for e in estimates if not e.shadow]
    if live:
        schedule_evaluation(live[0].patient_id)


@shared_task(name="monitoring.tasks.sweep_unprocessed_windows", ignore_result=True)
def sweep_unprocessed_windows() -> int:
    """Re-send windows stored but still unprocessed 10 min after they were sent (e.g. the broker
    was down when they arrived). Each is claimed first, so it is re-sent at most every 10 min;
    processing is idempotent, so a window that was merely queued costs a no-op. Returns the count."""
    now = timezone.now()
    resent = 0
    for window_id in selectors.windows_waiting_for_processing(sent_before=now - services.RESEND_AFTER):
        if services.window_claim_for_resend(window_id=window_id, now=now):
            process_window.delay(window_id)
            resent += 1
    return resent


@shared_task(name="monitoring.tasks.compute_accuracy_reports", **RETRY_TRANSIENT)
def compute_accuracy_reports() -> int:
    """Production accuracy and subgroup reports per model version; alerts; autonomy narrowing."""
    from monitoring.model_health import accuracy_reports_compute

    return len(accuracy_reports_compute())


@shared_task(name="monitoring.tasks.compute_drift_reports", **RETRY_TRANSIENT)
def compute_drift_reports() -> int:
    """Data drift of the last 7 days against the models' training distributions; alerts; narrowing."""
    from monitoring.model_health import drift_reports_compute

    return len(drift_reports_compute())


# The stored pipeline, agreement and population reports live beside their queries; importing them
# here registers their tasks with the worker (Celery discovers `tasks` modules only).
from monitoring import reports  # noqa: E402, F401
