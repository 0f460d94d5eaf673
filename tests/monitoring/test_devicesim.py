"""The simulated wearable sends the real recordings without distorting them."""
import datetime as dt

import numpy as np
import pytest
from django.conf import settings

from clinops.demo.clinic import PATIENTS
from monitoring.ingest.devicesim import window_payload
from monitoring.ingest.encoding import Channel, decode_compact
from monitoring.signals.pipeline import analyse_window
from monitoring.signals.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed


@pytest.mark.parametrize("record", [p[-1] for p in PATIENTS])
def test_int16_encoding_keeps_every_demo_window_as_the_pipeline_sees_the_original(record):
    recording = with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, record))
    for window in iter_windows(recording, window_s=30):
        body = window_payload(window, sequence=0, recorded_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        sent = {name: Channel(fs=body[name]["fs"], raw=decode_compact(body[name]["data"], "int16"),
                              scale=body[name]["scale"]).physical() for name in ("ecg", "ppg")}
        # No sample reaches the int16 rails: the quantisation error is half a count at most.
        assert np.max(np.abs(sent["ppg"] - window.ppg)) <= body["ppg"]["scale"] / 2 + 1e-9
        assert np.max(np.abs(sent["ecg"] - window.ecg)) <= body["ecg"]["scale"] / 2 + 1e-9
        original = analyse_window(window.ecg, 250.0, window.ppg, 250.0)
        received = analyse_window(sent["ecg"], 250.0, sent["ppg"], 250.0)
        assert received.reasons == original.reasons, (record, window.start_s)
