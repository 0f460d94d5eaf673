"""Reading the real recordings shipped in data/recordings (no Django inside).

challenge2015 records hold two ECG leads, finger PPG (PLETH) and arterial BP (ABP), all at 250 Hz.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

CHALLENGE2015 = "challenge2015"
# The challenge2015 bedside monitors record PLETH about 0.9 s late: its pulse foot trails the
# arterial-line foot by 0.95 s (median of the 60 records, IQR 0.91-0.97 s) where a finger pulse
# follows the arterial line by tens of ms. 0.90 s = the measured lag less ~50 ms of arterial-to-finger
# transit (see tests/monitoring/test_signals.py, which measures it).
CHALLENGE2015_PLETH_DELAY_S = 0.90


@dataclass(frozen=True)
class Recording:
    """One record: ECG (mV), PPG (normalised units) and arterial BP (mmHg), each with its rate (Hz)."""

    name: str
    ecg: np.ndarray
    ecg_lead: str
    ecg_fs: float
    ppg: np.ndarray
    ppg_fs: float
    abp: np.ndarray | None
    abp_fs: float | None

    @property
    def duration_s(self) -> float:
        return len(self.ecg) / self.ecg_fs


@dataclass(frozen=True)
class RecordingWindow:
    """A slice of a recording, as a wearable would upload it."""

    record: str
    start_s: float
    ecg: np.ndarray
    ecg_fs: float
    ppg: np.ndarray
    ppg_fs: float
    abp: np.ndarray | None


def challenge2015_records(recordings_dir: Path) -> list[str]:
    """Names listed in challenge2015/RECORDS (each has live ECG, PPG and a plausible ABP)."""
    return (recordings_dir / CHALLENGE2015 / "RECORDS").read_text().split()


def load_challenge2015(recordings_dir: Path, name: str) -> Recording:
    """Load one challenge2015 record; the ECG is lead II (or the first ECG lead if II is absent)."""
    record = wfdb.rdrecord(str(recordings_dir / CHALLENGE2015 / name))
    names = list(record.sig_name)
    signals = record.p_signal
    ecg_index = names.index("II") if "II" in names else 0
    fs = float(record.fs)
    abp = signals[:, names.index("ABP")] if "ABP" in names else None
    return Recording(
        name=name,
        ecg=_fill_gaps(signals[:, ecg_index]),
        ecg_lead=names[ecg_index],
        ecg_fs=fs,
        ppg=_fill_gaps(signals[:, names.index("PLETH")]),
        ppg_fs=fs,
        abp=None if abp is None else _fill_gaps(abp),
        abp_fs=None if abp is None else fs,
    )


def with_pleth_delay_removed(recording: Recording, delay_s: float = CHALLENGE2015_PLETH_DELAY_S) -> Recording:
    """The recording as a wearable with one clock would deliver it: PPG moved delay_s (s) earlier.

    The first delay_s of PPG and the last delay_s of ECG and ABP are dropped, so all channels
    start together and last equally long.
    """
    ppg_shift = int(round(delay_s * recording.ppg_fs))
    keep_s = (len(recording.ppg) - ppg_shift) / recording.ppg_fs
    ecg_n = int(round(keep_s * recording.ecg_fs))
    abp_n = int(round(keep_s * recording.abp_fs)) if recording.abp_fs else 0
    return Recording(
        name=recording.name, ecg=recording.ecg[:ecg_n], ecg_lead=recording.ecg_lead, ecg_fs=recording.ecg_fs,
        ppg=recording.ppg[ppg_shift:], ppg_fs=recording.ppg_fs,
        abp=None if recording.abp is None else recording.abp[:abp_n], abp_fs=recording.abp_fs,
    )


def _fill_gaps(signal: np.ndarray) -> np.ndarray:
    # WFDB marks missing samples as NaN; a device would send its last value, so hold it.
    signal = np.asarray(signal, dtype=np.float64)
    if not np.isnan(signal).any():
        return signal
    valid = ~np.isnan(signal)
    if not valid.any():
        return np.zeros_like(signal)
    index = np.where(valid, np.arange(len(signal)), 0)
    np.maximum.accumulate(index, out=index)
    filled = signal[index]
    filled[: np.argmax(valid)] = signal[np.argmax(valid)]
    return filled


def iter_windows(recording: Recording, *, window_s: float, step_s: float | None = None) -> Iterator[RecordingWindow]:
    """Consecutive windows of window_s seconds (every step_s seconds, default back to back)."""
    step_s = step_s or window_s
    start = 0.0
    while start + window_s <= recording.duration_s + 1e-9:
        e0, e1 = int(round(start * recording.ecg_fs)), int(round((start + window_s) * recording.ecg_fs))
        p0, p1 = int(round(start * recording.ppg_fs)), int(round((start + window_s) * recording.ppg_fs))
        abp = None
        if recording.abp is not None and recording.abp_fs:
            a0, a1 = int(round(start * recording.abp_fs)), int(round((start + window_s) * recording.abp_fs))
            abp = recording.abp[a0:a1]
        yield RecordingWindow(
            record=recording.name, start_s=start,
            ecg=recording.ecg[e0:e1], ecg_fs=recording.ecg_fs,
            ppg=recording.ppg[p0:p1], ppg_fs=recording.ppg_fs, abp=abp,
        )
        start += step_s
