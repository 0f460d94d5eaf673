"""A worker killed with SIGKILL in the middle of a batch of 2,000 uploaded windows, then a new one:
every accepted window ends processed exactly once — no loss, no duplicate analysis or estimate.

Tasks are acknowledged only after they ran (acks_late), so the task the killed worker was running
stays unacknowledged in Redis and is delivered again after the visibility timeout (10 s here,
CELERY_VISIBILITY_TIMEOUT; 1 h by default). Processing is idempotent, so a delivery of a window
that had in fact been finished changes nothing. Under the default hour, the minute sweeper is what
brings back what the dead worker held (the second test).
"""
import contextlib
import datetime as dt
import time

import psycopg
import pytest
import time_machine
from django.utils import timezone

from monitoring.tasks import sweep_unprocessed_windows
from tests.conftest import wait_for
from tests.faults import (
    Outcome,
    assert_each_processed_exactly_once,
    calibrated_wearers,
    outcome,
    real_windows,
    start_worker,
    upload_backlog,
    upload_batch,
    wait_until_settled,
)
from tests.workers import database_url_of_test_db

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]

WEARERS, WINDOWS_EACH = 10, 200  # 2,000 windows
VISIBILITY_TIMEOUT_S = 10
# Windows 30 s apart from the cuff reading on: the first 25 are all those a calibration pairs (10 min).
CALIBRATING = 25


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


def test_a_whole_worker_killed_leaves_nothing_waiting_for_the_hour_long_visibility_timeout():
    """SIGKILL to the main process and every pool child at ~100 of 300 windows, under the default
    1-hour visibility timeout: what the killed worker held (its prefetched batch messages, windows
    analysed but not yet estimated) is not redelivered within the hour, so the minute sweeper must
    find it 10 min on — windows still unprocessed, and usable windows processed without their
    estimate — and every window still ends processed and estimated exactly once."""
    wearers = calibrated_wearers(3, windows_each=CALIBRATING + 100)
    windows = real_windows()
    first = start_worker("doomed-whole", concurrency=2)  # the default visibility timeout (1 h)
    try:
        # The windows beside each cuff reading calibrate first, so that no later calibration re-asks
        # the estimates of the windows after it (calibration_refresh): only the sweeper is left.
        calibrating = [i for w in wearers for i in upload_batch(w, windows, CALIBRATING)]
        wait_until_settled(calibrating, timeout_s=120)
        # The kill lands between a batch's analysis and its estimates: another session holds the
        # estimates table (reads pass, inserts wait), the worker is killed while it waits.
        with estimates_held():
            window_ids = [i for w in wearers for i in upload_batch(w, windows, 100)]
            wait_for(lambda: outcome(window_ids).windows_with_analysis >= 100, timeout_s=300, interval_s=0.2)
            first.kill()
    finally:
        first.kill()
    at_kill = outcome(window_ids)
    assert 0 < at_kill.windows_with_analysis < len(window_ids), "the kill must land in the middle of the batch"

    second = start_worker("after-whole-kill", concurrency=2)
    try:
        # The new worker takes what was still queued; what the dead one held stays unacknowledged.
        stuck = wait_until_still(window_ids)
        assert stuck.windows_with_live_estimate < stuck.usable, "the dead worker must leave windows without estimate"
        # Beat runs the sweeper every minute; 11 min on, it finds both kinds of leftovers.
        with time_machine.travel(timezone.now() + dt.timedelta(minutes=11), tick=True):
            resent = sweep_unprocessed_windows()
        assert resent >= stuck.waiting + (stuck.usable - stuck.windows_with_live_estimate)
        wait_until_settled(window_ids, timeout_s=300)
        done = assert_each_processed_exactly_once(window_ids)
    finally:
        second.stop()
    print(f"killed at {at_kill.windows_with_analysis} analysed / {at_kill.windows_with_live_estimate} estimated; "
          f"left behind: {stuck.waiting} unprocessed, {stuck.usable - stuck.windows_with_live_estimate} processed "
          f"without estimate; {resent} re-sent by the sweeper; {done.live_estimates} estimates in the end")



@contextlib.contextmanager
def estimates_held():
    """A PostgreSQL session of its own holds the estimates table in EXCLUSIVE mode until the block
    ends: reads go on, every insert of an estimate waits."""
    with psycopg.connect(database_url_of_test_db()) as session:
        session.execute("LOCK TABLE monitoring_bpestimate IN EXCLUSIVE MODE")
        yield
        session.rollback()


def wait_until_still(window_ids: list[int], *, quiet_s: float = 5, timeout_s: float = 300) -> Outcome:
    """Wait until the counts have not moved for `quiet_s` seconds (the queue is drained; only what
    the dead worker held is left) and return them."""
    deadline = time.monotonic() + timeout_s
    last, since = outcome(window_ids), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"still moving after {timeout_s:.0f} s: {last}"
        time.sleep(0.5)
        seen = outcome(window_ids)
        if seen != last:
            last, since = seen, time.monotonic()
    return last
