"""Work enqueued inside a transaction reaches the real Celery worker only after the commit."""
import uuid

import pytest
from django.db import connection, transaction

from clinops.models import WorkerHeartbeat
from clinops.tasks import enqueue_on_commit, worker_heartbeat
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
