"""Shared fixtures: API clients per role, and the real Celery worker process for integration tests."""
from __future__ import annotations

import os
import time

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient


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


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker):
    """A real `celery worker` process on the test Redis and the test database, for the session."""
    from clinops.celery_app import app
    from tests.workers import Worker, database_url_of_test_db

    # Tests without a worker leave tasks in the queues (a cuff reading or a symptom report asks for
    # an evaluation of its patient): a stale one must not evaluate a later test's patient.
    app.control.purge()
    with django_db_blocker.unblock():
        database_url = database_url_of_test_db()
    worker = Worker(name="test", database_url=database_url,
                    log_path=settings.VAR_DIR / f"test-worker-{connection.vendor}-{os.getpid()}.log")
    try:
        worker.wait_ready()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield worker.process
    worker.stop()


def wait_for(predicate, *, timeout_s: float = 20.0, interval_s: float = 0.1):
    """Poll until predicate() is truthy (for work done by the worker process); returns its value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
