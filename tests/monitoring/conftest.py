import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from monitoring.devicesim import window_payload
from monitoring.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed


@pytest.fixture(scope="session")
def real_windows():
    """Consecutive 30-s windows (ECG II + PPG, 250 Hz) of a real challenge2015 record, with the
    monitor's PLETH latency removed, as a wearable with one clock would send them."""
    recording = with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, "v140s"))
    return list(iter_windows(recording, window_s=30))


@pytest.fixture
def make_payload(real_windows):
    """An upload body for real window `index`, recorded a few minutes ago."""

    def make(index: int = 0, *, sequence: int | None = None, encoding: str = "compact", **overrides):
        recorded_at = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=10) + dt.timedelta(seconds=30 * index)
        body = window_payload(real_windows[index], sequence=index if sequence is None else sequence,
                              recorded_at=recorded_at, encoding=encoding)
        body.update(overrides)
        return body

    return make
