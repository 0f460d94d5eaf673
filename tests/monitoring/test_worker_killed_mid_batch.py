"""A worker killed with SIGKILL in the middle of a batch of 2,000 uploaded windows, then a new one:
every accepted window ends processed exactly once — no loss, no duplicate analysis or estimate.

Tasks are acknowledged only after they ran (acks_late), so the task the killed worker was running
stays unacknowledged in Redis and is delivered again after the visibility timeout (10 s here,
CELERY_VISIBILITY_TIMEOUT; 1 h by default). Processing is idempotent, so a delivery of a window
that had in fact been finished changes nothing.
"""
import time

import pytest

from tests.conftest import wait_for
from tests.faults import (assert_each_processed_exactly_once, calibrated_wearers, outcome, real_windows, start_worker,
                          upload_backlog, wait_until_settled)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

WEARERS, WINDOWS_EACH = 10, 200  # 2,000 windows
VISIBILITY_TIMEOUT_S = 10


def test_a_worker_killed_mid_batch_leaves_every_window_processed_exactly_once():
    wearers = calibrated_wearers(WEARERS, windows_each=WINDOWS_EACH)
    windows = real_windows()
    window_ids = upload_backlog(wearers, windows, WINDOWS_EACH)
    assert len(set(window_ids)) == WEARERS * WINDOWS_EACH

    env = {"CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S)}
    first = start_worker("doomed", concurrency=2, env=env)
    try:
        wait_for(lambda: outcome(window_ids).windows_with_analysis >= 300, timeout_s=300, interval_s=0.2)
    finally:
        first.kill()
    killed_at = time.monotonic()
    at_kill = outcome(window_ids)
    assert 0 < at_kill.windows_with_analysis < len(window_ids), "the kill must land in the middle of the batch"

    # The replacement starts once the killed worker's unacknowledged tasks are visible again.
    time.sleep(max(0.0, VISIBILITY_TIMEOUT_S + 1 - (time.monotonic() - killed_at)))
    second = start_worker("replacement", concurrency=2, env=env)
    try:
        wait_until_settled(window_ids, timeout_s=600)
        done = assert_each_processed_exactly_once(window_ids)
        # Redelivered tasks (the killed worker's, visibility-timeout restores) are no-ops.
        time.sleep(VISIBILITY_TIMEOUT_S + 2)
        assert outcome(window_ids) == done
    finally:
        second.stop()
    assert done.windows_with_analysis - at_kill.windows_with_analysis > 0
