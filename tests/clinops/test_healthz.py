"""/healthz reports the database, Redis and the worker heartbeat."""
import datetime as dt

import pytest
from django.utils import timezone

from clinops.base.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def test_healthy_database_and_redis_without_a_worker_heartbeat(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"] == "ok"
    assert body["checks"]["worker"] == "no heartbeat yet"


def test_a_stale_heartbeat_is_reported(client):
    WorkerHeartbeat.objects.create(probe="beat", worker="w@h", beat_at=timezone.now() - dt.timedelta(minutes=5), beats=9)
    assert client.get("/healthz").json()["checks"]["worker"].startswith("stale")


def test_a_fresh_heartbeat_is_ok(client):
    WorkerHeartbeat.objects.create(probe="beat", worker="w@h", beat_at=timezone.now(), beats=1)
    assert client.get("/healthz").json()["checks"]["worker"] == "ok"


def test_the_therapy_queue_has_a_heartbeat_of_its_own(client):
    WorkerHeartbeat.objects.create(probe="beat", worker="w@h", beat_at=timezone.now(), beats=1)
    checks = client.get("/healthz").json()["checks"]
    assert checks["worker"] == "ok" and checks["therapy_worker"] == "no heartbeat yet"
    WorkerHeartbeat.objects.create(probe="therapy", worker="t@h", beat_at=timezone.now() - dt.timedelta(minutes=5),
                                   beats=3)
    checks = client.get("/healthz").json()["checks"]
    assert checks["worker"] == "ok" and checks["therapy_worker"].startswith("stale")
    assert checks["therapy_worker_last_beat_age_s"] >= 290
