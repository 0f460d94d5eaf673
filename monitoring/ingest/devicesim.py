"""Turn real recordings into device uploads exactly as a wearable would send them (no Django inside).

Used by the device simulator (`manage.py simulate_devices`), the demo's history (clinops/demo/history.py),
the end-to-end tests and the ingest benchmark, so all of them speak the documented wire format (see
monitoring/ingest/encoding.py).
"""
from __future__ import annotations

import datetime as dt
import gzip
import json

import numpy as np

from monitoring.ingest.encoding import INT16_MISSING, encode_compact
from monitoring.signals.recordings import RecordingWindow

# Resolution of the simulated device's ADC: 1 µV for ECG (mV, range +/-32 mV) and 2e-4 for the
# PPG's normalised units (range +/-6.5; challenge2015 PLETH reaches 4.3).
ECG_SCALE_MV = 0.001
PPG_SCALE = 0.0002


def _to_int16(values: np.ndarray, scale: float) -> np.ndarray:
    counts = np.round(np.asarray(values, dtype=np.float64) / scale)
    counts = np.clip(counts, INT16_MISSING + 1, 32767)
    counts[np.isnan(values)] = INT16_MISSING
    return counts.astype(np.int16)


def window_payload(
    window: RecordingWindow, *, sequence: int, recorded_at: dt.datetime, encoding: str = "compact"
) -> dict:
    """One upload body for a recording window: `compact` (base64 int16) or `json` (numbers, mV/NU)."""
    duration_s = len(window.ecg) / window.ecg_fs
    body: dict = {"sequence": sequence, "recorded_at": recorded_at.isoformat().replace("+00:00", "Z"), "duration_s": duration_s}
    for name, values, fs, scale in (("ecg", window.ecg, window.ecg_fs, ECG_SCALE_MV), ("ppg", window.ppg, window.ppg_fs, PPG_SCALE)):
        if encoding == "compact":
            body[name] = {"fs": fs, "dtype": "int16", "data": encode_compact(_to_int16(values, scale), "int16"), "scale": scale}
        elif encoding == "json":
            body[name] = {"fs": fs, "samples": [None if np.isnan(v) else round(float(v), 5) for v in values]}
        else:
            raise ValueError(f"unknown encoding {encoding!r}")
    return body


def gzip_json(body: dict) -> bytes:
    """A request body as a device with little bandwidth sends it (Content-Encoding: gzip)."""
    return gzip.compress(json.dumps(body).encode("utf-8"), compresslevel=6)


def staggered_offsets(n_devices: int, every_s: float) -> list[float]:
    """When each of n devices first sends, in seconds after the start, so that devices sending one
    window every `every_s` seconds take turns evenly (one every every_s / n s) instead of all
    sending at the same instant."""
    if every_s <= 0:
        raise ValueError("devices send every so many seconds, more than 0")
    return [every_s * k / n_devices for k in range(n_devices)]
