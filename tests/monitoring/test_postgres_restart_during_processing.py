"""PostgreSQL restarted while the worker processes a backlog: the tasks that hit the outage fail
with a database error, are retried with backoff (monitoring.tasks.RETRY_TRANSIENT), and complete;
every window ends processed exactly once. Restarted while the worker sits idle: its next tasks
reconnect first and run first time."""
import time

import pytest

from tests.conftest import wait_for
from tests.faults import (
    assert_each_processed_exactly_once,
    calibrated_wearers,
    outcome,
    postgres_restart,
    real_windows,
    start_worker,
    upload_backlog,
    upload_batch,
    wait_until_settled,
)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

# A backlog of 2,000 windows lasts a two-process worker several seconds (~450 windows/s here), so
# the restart, sent once the first windows are done, lands in the middle of it on a faster machine too.
WEARERS, WINDOWS_EACH = 10, 200


def test_tasks_hit_by_a_postgres_restart_are_retried_and_complete():
    wearers = calibrated_wearers(WEARERS, windows_each=WINDOWS_EACH)
    windows = real_windows()
    window_ids = upload_backlog(wearers, windows, WINDOWS_EACH)
    worker = start_worker("pg-restart", concurrency=2)
    try:
        wait_for(lambda: outcome(window_ids).windows_with_analysis >= 20, timeout_s=300, interval_s=0.1)
        postgres_restart(down_s=3)
        after_restart = outcome(window_ids)
        assert after_restart.waiting > 0, f"the restart must land in the middle of the backlog: {after_restart}"
        wait_until_settled(window_ids, timeout_s=300)
        assert_each_processed_exactly_once(window_ids)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "retry: Retry in" in log, "no task met the outage: the test did not test a restart"


def test_a_worker_idle_through_a_postgres_restart_reconnects_before_its_next_task_fails():
    """Workers keep their PostgreSQL session between tasks (clinops/celery_app.py). After a restart
    while they sat idle, that session is dead: the health check on first use (CONN_HEALTH_CHECKS)
    must replace it, so the next tasks run first time, without a failed attempt and a retry."""
    wearers = calibrated_wearers(2, windows_each=40)
    windows = real_windows()
    worker = start_worker("pg-restart-idle", concurrency=2)
    try:
        before = [i for w in wearers for i in upload_batch(w, windows, 20)]
        wait_until_settled(before, timeout_s=120)
        time.sleep(5)  # the debounced evaluations (2 s in tests) run too: then nothing is in flight
        postgres_restart(down_s=2)
        log_at_restart = len(worker.log_path.read_bytes())
        after = [i for w in wearers for i in upload_batch(w, windows, 20)]
        wait_until_settled(after, timeout_s=120)
        assert_each_processed_exactly_once(before + after)
        time.sleep(5)  # and the evaluations the new estimates asked for
    finally:
        worker.stop()
    since_restart = worker.log_path.read_bytes()[log_at_restart:].decode(errors="replace")
    assert "succeeded in" in since_restart
    assert "Retry in" not in since_restart and "OperationalError" not in since_restart, since_restart[-4000:]
