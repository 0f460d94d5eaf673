import datetime as dt

import pytest
from django.conf import settings
from django.utils import timezone

from monitoring.ingest.devicesim import window_payload
from monitoring.signals.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed


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


@pytest.fixture
def processed_window_at(device, make_payload):
    """Store and process (in this process, no worker) a real window of `device` recorded at `when`."""
    from monitoring.ingest import intake
    from monitoring.ingest.serializers import WindowInput

    def make(when: dt.datetime, index: int = 0):
        body = make_payload(index, sequence=int(when.timestamp()), recorded_at=when.isoformat())
        fields = WindowInput(data=body, context={"device": device})
        fields.is_valid(raise_exception=True)
        v = fields.validated_data
        window, _ = intake.window_receive(device=device, upload=intake.WindowUpload(
            sequence=v["sequence"], recorded_at=v["recorded_at"], duration_s=v["duration_s"],
            encoding=v["encoding"], channels=v["channels"]))
        assert intake.window_process(window_id=window.pk).usable
        window.refresh_from_db()
        return window

    return make
