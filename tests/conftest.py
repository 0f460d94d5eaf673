"""Shared fixtures: API clients per role, and the real Celery worker process for integration tests."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from clinops.celery_app import app as celery_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_cache():
    """Throttle counters must not leak between tests (ids can repeat after a rollback)."""
    from django.core.cache import cache

    cache.clear()
    yield


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for(db):
    """An API client logged in as the given user."""

    def make(user) -> APIClient:
        client = APIClient()
        client.force_login(user)
        return client

    return make


# A care team with one patient and the patient's wearable, for tests that need one of each.
@pytest.fixture
def team():
    from tests.factories import make_team

    return make_team()


@pytest.fixture
def patient(team):
    from tests.factories import make_patient

    return make_patient(team=team)


@pytest.fixture
def device_and_key(patient):
    from tests.factories import make_device

    return make_device(patient)


@pytest.fixture
def device(device_and_key):
    return device_and_key[0]


def _database_url_of_test_db() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    raise RuntimeError(f"No worker database URL for {db['ENGINE']}")


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A real `celery worker` process on the test Redis and the test database, for the session."""
    with django_db_blocker.unblock():
        database_url = _database_url_of_test_db()
    log_path = settings.VAR_DIR / f"test-worker-{connection.vendor}-{os.getpid()}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed at teardown
    # A short debounce so tests see the evaluation that follows new estimates within seconds.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "clinops.settings.test", "DATABASE_URL": database_url,
           "THERAPY_EVALUATION_DEBOUNCE_S": "2"}
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "clinops", "worker", "--loglevel", "INFO",
         "--concurrency", "1", "--pool", "prefork", "-n", f"test-{os.getpid()}@%h", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if celery_app.control.ping(timeout=0.5):
            break
    else:
        process.kill()
    if process.poll() is not None or not celery_app.control.ping(timeout=1):
        log.close()
        pytest.fail(f"The Celery worker did not start; its log:\n{log_path.read_text()[-4000:]}")
    yield process
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def wait_for(predicate, *, timeout_s: float = 20.0, interval_s: float = 0.1):
    """Poll until predicate() is truthy (for work done by the worker process); returns its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
