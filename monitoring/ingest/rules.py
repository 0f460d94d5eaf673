"""What a device may upload: the limits of a signal window, as plain rules (no Django inside)."""
from __future__ import annotations

import datetime as dt
import math

MIN_WINDOW_S = 8.0
MAX_WINDOW_S = 120.0
MIN_FS_HZ = 125.0
MAX_FS_HZ = 1000.0
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
MAX_WINDOW_AGE = dt.timedelta(days=30)
MAX_BATCH_WINDOWS = 100
CHANNELS = ("ecg", "ppg")


def channel_length_problem(*, n_samples: int, fs_hz: float, duration_s: float) -> str | None:
    """A channel must hold rate x duration samples (one sample of rounding allowed)."""
    expected = fs_hz * duration_s
    if abs(n_samples - expected) > 1.0:
        return (
            f"holds {n_samples} samples, but {fs_hz:g} Hz x {duration_s:g} s needs {math.floor(expected + 0.5)}"
        )
    return None


def recorded_at_problem(*, recorded_at: dt.datetime, now: dt.datetime) -> str | None:
    """The device clock may run at most 5 min ahead; windows older than 30 days are refused.
    Both times are timezone-aware."""
    if recorded_at > now + MAX_CLOCK_SKEW:
        return f"is {(recorded_at - now).total_seconds():.0f} s in the future (more than 5 min of clock skew)"
    if recorded_at < now - MAX_WINDOW_AGE:
        return "is older than 30 days"
    return None
