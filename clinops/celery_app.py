"""The Celery application: Redis broker, JSON only, settings from Django (CELERY_* names)."""
import os

import structlog
from celery import Celery
from celery.signals import before_task_publish, task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinops.settings.local")

app = Celery("clinops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_database_connections(task=None, **_) -> None:
    """Around each task, what Django does around each request: close a connection that failed or
    outlived CONN_MAX_AGE, keep the others (and health-check them on first use, CONN_HEALTH_CHECKS).
    Celery's Django fixup would otherwise close it before and after every task (CELERY_DB_REUSE_MAX
    unset), so every task paid a new PostgreSQL session: a backend forked, authenticated and its
    catalog caches warmed again, ~5 % of a window worker's CPU and more on PostgreSQL's side."""
    from django.db import close_old_connections

    if task is not None and getattr(task.request, "is_eager", False):
        return  # run in the caller's process (tests): its connection and transaction are the caller's
    close_old_connections()


# The id of the request (or task) that sent a task travels in this message header, so the worker's
# log lines for the task carry the same request_id as the request's.
REQUEST_ID_HEADER = "clinops_request_id"


@before_task_publish.connect
def _pass_on_the_request_id(headers=None, **_) -> None:
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


@task_prerun.connect
def _bind_task_ids_to_log_lines(task_id=None, task=None, **_) -> None:
    """task_id, task (its name) and the sender's request_id on every line the task logs; unbound on
    task_postrun. A message header arrives as an attribute of the task's request. A task run in the
    caller's process (tests) keeps the caller's request_id and gets it back afterwards."""
    if task is None:
        return
    ids = {"task_id": task_id, "task": task.name}
    request_id = getattr(task.request, REQUEST_ID_HEADER, None)
    if request_id:
        ids["request_id"] = request_id
    if not getattr(task.request, "is_eager", False):
        structlog.contextvars.clear_contextvars()  # nothing of an earlier task in this pool process
    task.request.clinops_log_tokens = structlog.contextvars.bind_contextvars(**ids)


@task_postrun.connect
def _unbind_task_ids(task=None, **_) -> None:
    tokens = getattr(getattr(task, "request", None), "clinops_log_tokens", None)
    if tokens:
        structlog.contextvars.reset_contextvars(**tokens)
