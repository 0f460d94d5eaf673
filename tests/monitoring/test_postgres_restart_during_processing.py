"""PostgreSQL restarted while the worker processes a backlog: the tasks that hit the outage fail
with a database error, are retried with backoff (monitoring.tasks.RETRY_TRANSIENT), and complete;
every window ends processed exactly once."""
import pytest

from tests.conftest import wait_for
from tests.faults import (BATCH, assert_each_processed_exactly_once, calibrated_wearers, outcome, postgres_restart,
                          real_windows, start_worker, wait_until_settled, upload_batch)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_tasks_hit_by_a_postgres_restart_are_retried_and_complete():
    wearers = calibrated_wearers(4, windows_each=BATCH)
    windows = real_windows()
    window_ids = [i for w in wearers for i in upload_batch(w, windows, BATCH)]
    worker = start_worker("pg-restart", concurrency=2)
    try:
        wait_for(lambda: outcome(window_ids).windows_with_analysis >= 50, timeout_s=300, interval_s=0.2)
        postgres_restart(down_s=3)
        assert outcome(window_ids).waiting > 0, "the restart must land in the middle of the backlog"
        wait_until_settled(window_ids, timeout_s=300)
        assert_each_processed_exactly_once(window_ids)
    finally:
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "retry: Retry in" in log, "no task met the outage: the test did not test a restart"
