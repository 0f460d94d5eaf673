"""Reference blood pressure of a window from the arterial line (ABP, mmHg): the truth the BP models
are trained and tested against. No Django inside.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks

MIN_REFERENCE_BEATS = 5  # fewer valid ABP beats in a window -> no reference BP

ABP_REFRACTORY_S = 0.27  # systolic maxima at least this far apart (s): heart rates up to 222 bpm
ABP_MIN_PROMINENCE_MMHG = 5.0  # a systolic maximum rises at least this far above its bases (mmHg) ...
ABP_RELATIVE_PROMINENCE = 0.5  # ... and at least this share of the typical pulse pressure (the dicrotic wave does not)
_ABP_PULSE_BLOCK_S = 2.0  # typical pulse pressure = median peak-to-peak over blocks of this length (s)
# A beat counts when it is physiologically plausible; line flushes, zeroing and transducer
# artefacts of the arterial line are not beats.
BEAT_SBP_RANGE_MMHG = (40.0, 300.0)
BEAT_DBP_RANGE_MMHG = (10.0, 200.0)
BEAT_MIN_PULSE_PRESSURE_MMHG = 5.0


@dataclass(frozen=True)
class ReferenceBP:
    """Reference BP of one window: medians of the per-beat systolic / diastolic values (mmHg)."""

    sbp_mmhg: float
    dbp_mmhg: float
    beat_count: int


def abp_beats(abp: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-beat systolic and diastolic pressure (mmHg) of an arterial BP trace (mmHg at fs Hz).

    Beat systolic = a local ABP maximum (scipy.signal.find_peaks with a refractory distance of
    ABP_REFRACTORY_S and a prominence of at least ABP_MIN_PROMINENCE_MMHG and
    ABP_RELATIVE_PROMINENCE of the typical pulse pressure, which leaves out the dicrotic wave);
    beat diastolic = the minimum between that maximum and the previous one. So a beat is a
    maximum with a maximum before it, and beats whose values are implausible (outside
    BEAT_SBP_RANGE_MMHG / BEAT_DBP_RANGE_MMHG, or pulse pressure below
    BEAT_MIN_PULSE_PRESSURE_MMHG: line flushes, zeroing) are dropped. Returns two equal-length arrays.
    """
    x = hold_last(np.asarray(abp, dtype=np.float64).ravel())  # NaN (missing) holds the last value
    empty = np.empty(0)
    if x.size < 3:
        return empty, empty
    block = max(int(round(_ABP_PULSE_BLOCK_S * fs)), 2)
    n_blocks = x.size // block
    if n_blocks:
        blocks = x[: n_blocks * block].reshape(n_blocks, block)
        typical_pp = float(np.median(blocks.max(axis=1) - blocks.min(axis=1)))
    else:
        typical_pp = float(np.ptp(x))
    prominence = max(ABP_MIN_PROMINENCE_MMHG, ABP_RELATIVE_PROMINENCE * typical_pp)
    peaks, _ = find_peaks(x, distance=max(int(round(ABP_REFRACTORY_S * fs)), 1), prominence=prominence)
    if peaks.size < 2:
        return empty, empty
    # minimum of x[p_i : p_{i+1}] for consecutive maxima; the last segment ends at the last peak.
    diastolic = np.minimum.reduceat(x[: peaks[-1] + 1], peaks[:-1])
    systolic = x[peaks[1:]]
    ok = (
        (systolic >= BEAT_SBP_RANGE_MMHG[0]) & (systolic <= BEAT_SBP_RANGE_MMHG[1])
        & (diastolic >= BEAT_DBP_RANGE_MMHG[0]) & (diastolic <= BEAT_DBP_RANGE_MMHG[1])
        & (systolic - diastolic >= BEAT_MIN_PULSE_PRESSURE_MMHG)
    )
    return systolic[ok], diastolic[ok]


def reference_bp(abp: np.ndarray, fs: float, *, min_beats: int = MIN_REFERENCE_BEATS) -> ReferenceBP | None:
    """Reference SBP/DBP of a window (mmHg): medians of `abp_beats`; None with fewer than min_beats beats."""
    systolic, diastolic = abp_beats(abp, fs)
    if systolic.size < min_beats:
        return None
    return ReferenceBP(float(np.median(systolic)), float(np.median(diastolic)), int(systolic.size))


def hold_last(signal: np.ndarray) -> np.ndarray:
    x = np.asarray(signal, dtype=np.float64)
    valid = np.isfinite(x)
    if valid.all():
        return x
    if not valid.any():
        return np.zeros_like(x)
    index = np.where(valid, np.arange(x.size), 0)
    np.maximum.accumulate(index, out=index)
    filled = x[index]
    filled[: int(np.argmax(valid))] = x[int(np.argmax(valid))]
    return filled
