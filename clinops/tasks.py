"""Cross-cutting Celery tasks and the one way to enqueue work: after the transaction commits."""
from __future__ import annotations

import socket
from typing import Any

from celery import Task, shared_task
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from clinops.models import WorkerHeartbeat


def enqueue_on_commit(task: Task, *args: Any, queue: str | None = None, **kwargs: Any) -> None:
    """Send `task` only once the current transaction commits (never if it rolls back), to `queue`
    if given, else to the queue its route names (settings.CELERY_TASK_ROUTES).

    A worker handed an id before the commit would not find the row; on rollback there is nothing
    to do. Outside a transaction the task is sent at once. If the broker is unreachable the
    committed work stands and the failure is logged (robust): periodic sweepers re-send what is
    still waiting (e.g. monitoring.tasks.sweep_unprocessed_windows).
    """
    def send() -> None:
        task.apply_async(args=args, kwargs=kwargs, **({"queue": queue} if queue else {}))

    # Django 5.2 names a failing robust callback by its __qualname__ when it logs the error; with
    # none (a functools.partial) the log call itself raised, and a broker outage became a 500.
    send.__qualname__ = f"send {task.name}"
    transaction.on_commit(send, robust=True)


@shared_task(name="clinops.tasks.worker_heartbeat", ignore_result=True)
def worker_heartbeat(probe: str = "beat") -> None:
    """Record that a worker is alive and consuming (run by beat every 30 s; shown on /healthz)."""
    worker = getattr(worker_heartbeat.request, "hostname", None) or socket.gethostname()
    now = timezone.now()
    updated = WorkerHeartbeat.objects.filter(probe=probe).update(
        worker=worker, beat_at=now, beats=F("beats") + 1
    )
    if not updated:
        WorkerHeartbeat.objects.get_or_create(
            probe=probe, defaults={"worker": worker, "beat_at": now, "beats": 1}
        )
