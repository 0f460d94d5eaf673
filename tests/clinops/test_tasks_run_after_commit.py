"""Work enqueued inside a transaction reaches the real Celery worker only after the commit."""
import uuid

import pytest
from django.db import connection, transaction

from clinops.base.models import WorkerHeartbeat
from clinops.base.tasks import enqueue_on_commit, worker_heartbeat
from tests.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def probe_name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def test_task_enqueued_in_a_transaction_runs_in_the_worker_after_commit(celery_worker):
    probe = probe_name()
    with transaction.atomic():
        enqueue_on_commit(worker_heartbeat, probe=probe)
        # Nothing is sent while the transaction is open: the send waits for the commit.
        assert len(connection.run_on_commit) == 1
    beat = wait_for(lambda: WorkerHeartbeat.objects.filter(probe=probe).first())
    # Written by the worker process, not by this one.
    assert beat.worker.startswith("test-")
    assert beat.beats == 1


def test_task_enqueued_in_a_rolled_back_transaction_never_runs(celery_worker):
    rolled_back, committed = probe_name(), probe_name()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            enqueue_on_commit(worker_heartbeat, probe=rolled_back)
            raise RuntimeError("the use case failed")
    enqueue_on_commit(worker_heartbeat, probe=committed)
    # The worker has a single process and runs tasks in order: once the later task is done, the
    # rolled-back one would have run too, had it been sent.
    wait_for(lambda: WorkerHeartbeat.objects.filter(probe=committed).exists())
    assert not WorkerHeartbeat.objects.filter(probe=rolled_back).exists()


def test_the_heartbeat_task_is_idempotent_per_probe(celery_worker):
    probe = probe_name()
    for _ in range(3):
        enqueue_on_commit(worker_heartbeat, probe=probe)
    wait_for(lambda: WorkerHeartbeat.objects.filter(probe=probe, beats=3).exists())
    assert WorkerHeartbeat.objects.filter(probe=probe).count() == 1


@pytest.mark.postgres
def test_the_worker_keeps_its_database_session_from_task_to_task(celery_worker):
    """One PostgreSQL session per pool process for CONN_MAX_AGE, as a web worker keeps one from
    request to request; not a new session (fork, authentication, cold caches) for every task."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")

    def worker_sessions() -> set:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE datname = current_database() "
                           "AND backend_type = 'client backend' AND pid <> pg_backend_pid()")
            return set(cursor.fetchall())

    probe = probe_name()
    enqueue_on_commit(worker_heartbeat, probe=probe)  # outside a transaction: sent at once
    wait_for(lambda: WorkerHeartbeat.objects.filter(probe=probe, beats=1).exists())
    first = wait_for(worker_sessions)
    assert len(first) == 1  # the test worker has one pool process
    for _ in range(5):
        enqueue_on_commit(worker_heartbeat, probe=probe)
    wait_for(lambda: WorkerHeartbeat.objects.filter(probe=probe, beats=6).exists())
    assert worker_sessions() == first
