"""PostgreSQL restarted while the worker processes a backlog: the tasks that hit the outage fail
with a database error, are retried with backoff (monitoring.tasks.RETRY_TRANSIENT), and complete;
every window ends processed exactly once."""
import pytest

from tests.conftest import wait_for
from tests.faults import (BATCH, assert_each_processed_exactly_once, calibrated_wearers, outcome, postgres_restart,
                          real_windows, start_worker, wait_until_settled, upload_batch)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

# A backlog of 2,000 windows lasts a two-process worker several seconds (~450 windows/s here), so
# the restart, sent once the first windows are done, lands in the middle of it on a faster machine too.
WEARERS, WINDOWS_EACH = 10, 200


def test_tasks_hit_by_a_postgres_restart_are_retried_and_complete():
    wearers = calibrated_wearers(WEARERS, windows_each=WINDOWS_EACH)
    windows = real_windows()
    window_ids: list[int] = []
    for _ in range(WINDOWS_EACH // BATCH):
        for wearer in wearers:
            window_ids += upload_batch(wearer, windows, BATCH)
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
