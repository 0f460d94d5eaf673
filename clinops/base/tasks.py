"""Cross-cutting Celery tasks and the one way to enqueue work: after the transaction commits."""
from __future__ import annotations

import contextlib
import contextvars
import socket
from collections.abc import Iterator
from typing import Any

from celery import Task, current_app, shared_task
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from clinops.base.models import WorkerHeartbeat

# Set by tasks_not_sent(): the caller runs the tasks' steps itself, so nothing is sent.
_NOT_SENT: contextvars.ContextVar[bool] = contextvars.ContextVar("clinops_tasks_not_sent", default=False)


@contextlib.contextmanager
def tasks_not_sent() -> Iterator[None]:
    """Within this block enqueue_on_commit sends nothing (and registers nothing to send on commit),
    for a caller that runs what the tasks would do itself, synchronously: the demo history
    (`seed_demo`, clinops/demo/history.py) processes and estimates its windows and evaluates its
    patients in process, with no broker and no worker running; without this, every window and
    reading would try to reach the broker (a connection attempt each, logged as a failure).

    Only for such callers: a task not sent is work nobody does unless the caller does it. The
    flag is a context variable, so it covers this thread (or task) alone, never a concurrent
    request."""
    token = _NOT_SENT.set(True)
    try:
        yield
    finally:
        _NOT_SENT.reset(token)


def task_named(name: str) -> Task:
    """The task registered under `name` (its `shared_task(name=...)`), for a service that sends its
    own app's tasks: the tasks module imports the services, so the services do not import it back.
    The task itself, not a signature by name, so that its options (ignore_result) hold; an unknown
    name raises celery's NotRegistered at once. Each app's ready() imports its tasks module."""
    return current_app.tasks[name]


def enqueue_on_commit(task: Task, *args: Any, queue: str | None = None, countdown: float | None = None,
                      **kwargs: Any) -> None:
    """Send `task` only once the current transaction commits (never if it rolls back), to `queue`
    if given, else to the queue its route names (settings.CELERY_TASK_ROUTES); to run `countdown`
    seconds later when given.

    A worker handed an id before the commit would not find the row; on rollback there is nothing
    to do. Outside a transaction the task is sent at once. If the broker is unreachable the
    committed work stands and the failure is logged (robust): periodic sweepers re-send what is
    still waiting (e.g. monitoring.tasks.sweep_unprocessed_windows). Inside tasks_not_sent()
    nothing is sent: the caller runs the steps itself.
    """
    if _NOT_SENT.get():
        return

    options = {**({"queue": queue} if queue else {}), **({"countdown": countdown} if countdown else {})}

    def send() -> None:
        task.apply_async(args=args, kwargs=kwargs, **options)

    # Django 5.2 names a failing robust callback by its __qualname__ when it logs the error; with
    # none (a functools.partial) the log call itself raised, and a broker outage became a 500.
    send.__qualname__ = f"send {task.name}"
    transaction.on_commit(send, robust=True)


# The name it had before the base package: queued messages and beat entries still match it.
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
