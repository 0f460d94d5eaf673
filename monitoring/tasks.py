"""Celery tasks of the signal pipeline: thin wrappers that take ids."""
from celery import shared_task
from django.db import InterfaceError, OperationalError

from monitoring import services


@shared_task(
    name="monitoring.tasks.process_window",
    autoretry_for=(OperationalError, InterfaceError, ConnectionError),
    retry_backoff=2,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=8,
    ignore_result=True,
)
def process_window(window_id: int) -> None:
    """Quality gate + beat features for one stored window; a re-run changes nothing."""
    services.window_process(window_id=window_id)
