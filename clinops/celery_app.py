"""The Celery application: Redis broker, JSON only, settings from Django (CELERY_* names)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clinops.settings.local")

app = Celery("clinops")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
