"""Redis stopped while wearables upload: the API goes on accepting and storing windows (never a
silent drop, never a 5xx); Redis comes back empty — every queued task is gone with it — and the
periodic sweeper re-sends every window that is stored but not processed. Counted: none lost, none
processed twice."""
import datetime as dt
import time

import pytest
import time_machine
from django.utils import timezone

from monitoring.models import SignalWindow, WindowStatus
from monitoring.tasks import sweep_unprocessed_windows
from tests.conftest import wait_for
from tests.faults import (
    assert_each_processed_exactly_once,
    calibrated_wearers,
    outcome,
    real_windows,
    redis_start,
    redis_stop,
    start_worker,
    upload_batch,
    wait_until_settled,
)

pytestmark = [pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_uploads_during_a_redis_outage_are_stored_and_all_processed_once_redis_is_back():
    wearers = calibrated_wearers(4, windows_each=60)
    windows = real_windows()
    worker = start_worker("outage")
    try:
        before = [i for w in wearers for i in upload_batch(w, windows, 30)]
        wait_for(lambda: outcome(before).windows_with_analysis >= 10, timeout_s=120)

        redis_stop()
        try:
            started = time.monotonic()
            during = [i for w in wearers for i in upload_batch(w, windows, 10)]
            outage_s = time.monotonic() - started
        finally:
            redis_start()
        assert SignalWindow.objects.filter(pk__in=during).count() == len(during)

        after = [i for w in wearers for i in upload_batch(w, windows, 20)]
        everything = before + during + after
        # What lost its queued task (sent before the outage, or sent into it) waits for the sweeper.
        wait_for(lambda: outcome(after).windows_with_analysis == len(after), timeout_s=300)
        waiting = set(SignalWindow.objects.filter(pk__in=everything, status=WindowStatus.RECEIVED)
                      .values_list("pk", flat=True))
        assert set(during) <= waiting

        # Beat runs the sweeper every minute; it re-sends what has waited 10 min since it was sent.
        with time_machine.travel(timezone.now() + dt.timedelta(minutes=11), tick=True):
            resent = sweep_unprocessed_windows()
        # Every unprocessed window is re-sent; the sweep may also re-ask the estimates of processed
        # windows still without one 11 min on (monitoring.tasks.sweep_unprocessed_windows).
        assert resent >= len(waiting)
        wait_until_settled(everything, timeout_s=300)
        assert_each_processed_exactly_once(everything)
    finally:
        worker.stop()
    print(f"{len(during)} windows uploaded in {outage_s:.1f} s with Redis down; {resent} re-sent by the sweeper")
