"""The Celery application: Redis broker, JSON only, settings from Django (CELERY_* names)."""
import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

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
