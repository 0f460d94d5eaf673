"""Pure ECG + PPG window pipeline: a quality verdict and beat-level pulse-arrival-time features.

No Django, no I/O, no clock: arrays in, frozen dataclasses out, so the same code runs in the API,
in Celery workers, in tests and in benchmarks.

Conventions
- Sample rates in Hz, times in s (absolute, from the window start) or ms (intervals).
- ECG in mV, PPG in its device's units (amplitudes are reported in those units).
- ECG and PPG start at the same instant and may have different rates (designed for 125-1000 Hz).
- NaN (or +/-inf) marks a missing sample (device dropout).

Method (all vectorised numpy/scipy; no per-sample Python loops, filters designed once per rate)
- ECG: zero-phase 0.5 Hz high-pass plus a one-mains-period moving average (neurokit2's default
  cleaning), then its gradient-envelope QRS detector: smoothed absolute slope above 1.5 x its
  0.75-s average marks QRS blocks; the R-peak is the most prominent local maximum of each block;
  300 ms refractory period (200 ms when most beats really come faster, so that rates up to
  300 bpm are measured, not hidden). Agrees with neurokit2.ecg_peaks on 99.9 % of beats.
- PPG: zero-phase 0.5-8 Hz band-pass; systolic peaks by Elgendi's two-moving-average blocks
  (Elgendi et al. 2013, PLoS ONE 8:e76585); the diastolic minimum before each peak; the maximum
  upslope between them; the foot by the intersecting tangent (horizontal line through the
  diastolic minimum meets the tangent at the maximum upslope).
- A beat is an R-peak followed by a PPG foot 80-500 ms later; pulse arrival time (PAT) is the
  R-peak to foot (and to maximum upslope) delay.

Thresholds of the quality gate were chosen on the real challenge2015 windows; the tests in
tests/monitoring/test_signals_quality.py hold the evidence.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from scipy.ndimage import uniform_filter1d
from scipy.signal import butter, lfilter, lfilter_zi, peak_prominences

PIPELINE_VERSION = "signals-1.0"

# --- Quality-gate thresholds (evidence: tests/monitoring/test_signals_quality.py) ---
MISSING_MAX_SHARE = 0.05  # more missing than this share of a channel -> reject
MISSING_MAX_GAP_S = 1.0  # a single dropout longer than this (s) -> reject; shorter ones are interpolated
FLAT_WINDOW_S = 1.0  # a stretch is flat when its peak-to-peak over this many seconds is ...
FLAT_RELATIVE_RANGE = 0.01  # ... below this share of the channel's typical 2-s peak-to-peak amplitude
FLAT_MIN_S = 2.0  # total flat time (s) that rejects a channel
_FLAT_BLOCK_S = 0.25
CLIP_RAIL_TOLERANCE = 0.002  # samples within this share of the full range of the min/max are "at the rail"
CLIP_MAX_SHARE = 0.01  # more than this share of samples at one rail -> clipped
HEART_RATE_MIN_BPM = 30.0
HEART_RATE_MAX_BPM = 220.0
MIN_MATCHED_BEATS = 5
PAT_MIN_MS = 80.0  # physiological window for R-peak -> PPG foot (ms)
PAT_MAX_MS = 500.0
TEMPLATE_CORRELATION_MIN = {"ecg": 0.80, "ppg": 0.85}  # mean beat-vs-median-template Pearson r
MIN_MATCHED_PULSE_SHARE = 0.7  # fewer of the PPG pulses than this share matched to an R-peak -> too few beats

MIN_FEATURE_BEATS = 3  # fewer matched beats than this -> no aggregate features at all

# ECG detector (neurokit2-compatible gradient envelope).
_ECG_HIGHPASS_HZ = 0.5
_MAINS_HZ = 50.0
_ECG_SMOOTH_S = 0.1
_ECG_AVERAGE_S = 0.75
_ECG_THRESHOLD_WEIGHT = 1.5
_ECG_MIN_LENGTH_WEIGHT = 0.4
_ECG_REFRACTORY_S = 0.3
_ECG_REFRACTORY_FAST_S = 0.2
# PPG detector (Elgendi et al. 2013, PLoS ONE 8:e76585).
_PPG_BAND_HZ = (0.5, 8.0)
_PPG_PEAK_WINDOW_S = 0.111
_PPG_BEAT_WINDOW_S = 0.667
_PPG_OFFSET = 0.02
_PPG_REFRACTORY_S = 0.2
_PPG_FOOT_LOOKBACK_S = 0.6  # diastolic minimum is searched this far before the systolic peak
_PPG_FALL_LOOKAHEAD_S = 1.5  # half-height downslope crossing is searched at most this far after the peak
# Beat templates for the correlation check (s before, s after the fiducial point).
_ECG_TEMPLATE_S = (0.06, 0.10)  # around the R-peak: the QRS complex
_PPG_TEMPLATE_S = (0.05, 0.30)  # from the diastolic minimum: upstroke and systolic peak


class QualityReason(str, enum.Enum):
    """Why a window is not usable; the values are stable codes stored in the database."""

    FLATLINE = "flatline"
    CLIPPING = "clipping"
    MISSING_SAMPLES = "missing_samples"
    IMPLAUSIBLE_HEART_RATE = "implausible_heart_rate"
    TOO_FEW_BEATS = "too_few_beats"
    LOW_TEMPLATE_CORRELATION = "low_template_correlation"


@dataclass(frozen=True)
class QualityIssue:
    """One failed check: the reason code, the channel ("ecg", "ppg" or "both") and plain-word detail."""

    reason: QualityReason
    channel: str
    detail: str


@dataclass(frozen=True)
class BeatFeatures:
    """Per matched beat (all arrays have one entry per R-peak matched to a PPG foot).

    r_peak_s: R-peak time from the window start (s); pat_foot_ms / pat_upslope_ms: R-peak to PPG
    foot / maximum-upslope delay (ms); heart_rate_bpm: from the RR interval ending at this beat
    (bpm); ppg_amplitude: systolic peak minus foot of the band-passed PPG (PPG units);
    rise_time_ms: foot to systolic peak (ms); pulse_width_ms: width at half amplitude (ms, NaN when
    the pulse does not fall back below half height before the next one).
    """

    r_peak_s: np.ndarray
    pat_foot_ms: np.ndarray
    pat_upslope_ms: np.ndarray
    heart_rate_bpm: np.ndarray
    ppg_amplitude: np.ndarray
    rise_time_ms: np.ndarray
    pulse_width_ms: np.ndarray


_FEATURE_NAMES = (
    "heart_rate_bpm", "pat_foot_ms", "pat_upslope_ms", "ppg_amplitude", "rise_time_ms", "pulse_width_ms",
)


@dataclass(frozen=True)
class WindowFeatures:
    """Robust per-window aggregates of the matched beats: median and interquartile range (IQR).

    Units: heart rate bpm, PAT / rise time / pulse width ms, PPG amplitude in PPG units.
    """

    beat_count: int
    heart_rate_bpm_median: float
    heart_rate_bpm_iqr: float
    pat_foot_ms_median: float
    pat_foot_ms_iqr: float
    pat_upslope_ms_median: float
    pat_upslope_ms_iqr: float
    ppg_amplitude_median: float
    ppg_amplitude_iqr: float
    rise_time_ms_median: float
    rise_time_ms_iqr: float
    pulse_width_ms_median: float
    pulse_width_ms_iqr: float

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready plain Python numbers; a value that could not be computed (NaN) becomes None."""
        out: dict[str, float | int | None] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name == "beat_count":
                out[field.name] = int(value)
            else:
                out[field.name] = float(value) if math.isfinite(value) else None
        return out


@dataclass(frozen=True)
class WindowAnalysis:
    """Verdict and features for one window; r_peaks / ppg_feet are sample indices at each channel's rate."""

    usable: bool
    issues: tuple[QualityIssue, ...]
    features: WindowFeatures | None
    beats: BeatFeatures | None
    r_peaks: np.ndarray
    ppg_feet: np.ndarray

    @property
    def reasons(self) -> tuple[str, ...]:
        """Distinct reason codes, in the order the issues were found."""
        return tuple(dict.fromkeys(issue.reason.value for issue in self.issues))


# ---------------------------------------------------------------------------------------------
# Filtering
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _butterworth(
    fs: float, low_hz: float, high_hz: float | None, order: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Butterworth high-pass (high_hz None) or band-pass (b, a) and its unit step-response state,
    cached per rate because designing them costs more than filtering a whole window.

    Transfer-function form is safe at these low orders (at most 4 poles; forward-backward output
    matches the SOS form to 1e-9 at 1000 Hz) and scipy's lfilter has a third of sosfilt's overhead.
    """
    if high_hz is None:
        b, a = butter(order, min(low_hz, 0.4 * fs), btype="highpass", fs=fs)
    else:
        high = min(high_hz, 0.45 * fs)
        b, a = butter(order, [min(low_hz, 0.5 * high), high], btype="bandpass", fs=fs)
    return b, a, lfilter_zi(b, a)


def _zero_phase(x: np.ndarray, fs: float, low_hz: float, high_hz: float | None, order: int) -> np.ndarray:
    """Forward-backward filtering like scipy.signal.filtfilt (odd extension, same pad length), but
    reusing the cached initial state instead of solving for it on every call."""
    b, a, zi = _butterworth(float(fs), low_hz, high_hz, order)
    n = x.size
    pad = min(3 * max(a.size, b.size), n - 1)
    if pad < 1:
        return x - x.mean() if n else x.copy()
    ext = np.concatenate((2.0 * x[0] - x[pad:0:-1], x, 2.0 * x[-1] - x[-2 : -pad - 2 : -1]))
    y, _ = lfilter(b, a, ext, zi=zi * ext[0])
    y = y[::-1]
    y, _ = lfilter(b, a, y, zi=zi * y[0])
    return y[::-1][pad : pad + n]


@lru_cache(maxsize=64)
def _mains_kernel(fs: float) -> np.ndarray:
    """A one-mains-period moving average applied forwards and backwards, as a single triangle."""
    box = np.full(max(2, int(fs / _MAINS_HZ)), 1.0 / max(2, int(fs / _MAINS_HZ)))
    return np.convolve(box, box)


def _clean_ecg(x: np.ndarray, fs: float) -> np.ndarray:
    """ECG (mV) without baseline wander (0.5 Hz high-pass) and mains hum: a moving average over one
    50 Hz period, run forwards and backwards, nulls 50 Hz and its harmonics and damps 60 Hz (the
    same cleaning as neurokit2's default, so R-peaks agree with it)."""
    y = _zero_phase(x, fs, _ECG_HIGHPASS_HZ, None, 2)
    kernel = _mains_kernel(float(fs))
    half = kernel.size // 2
    if y.size <= half:
        return y
    # Mirrored ends keep the first and last beats as tall as inside the window.
    padded = np.concatenate((y[half:0:-1], y, y[-2 : -half - 2 : -1]))
    return np.convolve(padded, kernel, mode="valid")


def _clean_ppg(x: np.ndarray, fs: float) -> np.ndarray:
    """PPG band-passed to the pulse band (0.5-8 Hz), zero phase so that the foot does not move."""
    return _zero_phase(x, fs, _PPG_BAND_HZ[0], _PPG_BAND_HZ[1], 2)


# ---------------------------------------------------------------------------------------------
# Small vectorised helpers
# ---------------------------------------------------------------------------------------------


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) indices of the True runs of a boolean array."""
    padded = np.concatenate(([False], mask, [False]))
    change = np.flatnonzero(padded[1:] != padded[:-1])
    return change[0::2], change[1::2]


def _central_difference(x: np.ndarray) -> np.ndarray:
    """np.gradient for unit spacing (central inside, one-sided at the ends) without its overhead."""
    slope = np.empty_like(x)
    slope[1:-1] = 0.5 * (x[2:] - x[:-2])
    slope[0] = x[1] - x[0]
    slope[-1] = x[-1] - x[-2]
    return slope


def _segment_argmax(x: np.ndarray, begins: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the maximum of x in each [begin, end) segment (segments must be non-empty)."""
    lengths = ends - begins
    offsets = np.arange(int(lengths.max()))
    index = np.minimum(begins[:, None] + offsets, x.size - 1)
    values = np.where(offsets < lengths[:, None], x[index], -np.inf)
    return begins + values.argmax(axis=1)


def _enforce_refractory(peaks: np.ndarray, min_distance: int) -> np.ndarray:
    """Keep the first of peaks closer than min_distance samples (one pass over ~beats, not samples)."""
    if peaks.size < 2 or np.all(np.diff(peaks) > min_distance):
        return peaks
    kept: list[int] = []
    last = -min_distance - 1
    for peak in peaks.tolist():
        if peak - last > min_distance:
            kept.append(peak)
            last = peak
    return np.asarray(kept, dtype=np.intp)


def _repair_missing(x: np.ndarray) -> tuple[np.ndarray, int, float]:
    """Linearly interpolate missing (non-finite) samples; returns signal, missing count, longest gap
    (samples). An all-missing channel becomes zeros so that downstream code never sees NaN."""
    x = np.asarray(x, dtype=np.float64).ravel()
    bad = ~np.isfinite(x)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return x, 0, 0.0
    if n_bad == x.size:
        return np.zeros_like(x), n_bad, float(x.size)
    begins, ends = _runs(bad)
    good = np.flatnonzero(~bad)
    repaired = x.copy()
    repaired[bad] = np.interp(np.flatnonzero(bad), good, x[good])
    return repaired, n_bad, float((ends - begins).max())


def _quartiles(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and IQR of the finite values of each row (NaN for a row without any), with numpy's
    default linear interpolation, for all rows in one sort instead of one percentile call each."""
    ordered = np.sort(rows, axis=1)  # NaN sorts last
    count = np.isfinite(ordered).sum(axis=1)
    last = np.maximum(count - 1, 0)
    row = np.arange(rows.shape[0])

    def quantile(q: float) -> np.ndarray:
        position = q * last
        low = np.floor(position).astype(np.intp)
        high = np.minimum(low + 1, last)
        lower, upper = ordered[row, low], ordered[row, high]
        return lower + (upper - lower) * (position - low)

    q1, q2, q3 = quantile(0.25), quantile(0.5), quantile(0.75)
    empty = count == 0
    return np.where(empty, np.nan, q2), np.where(empty, np.nan, q3 - q1)


def _mean_template_correlation(
    x: np.ndarray, anchors: np.ndarray, before: int, after: int, *, detrend: bool,
) -> float:
    """Mean Pearson correlation of each beat [anchor-before, anchor+after) with the median beat.

    detrend removes each beat's straight-line trend first, so that residual baseline wander under
    a short ECG complex does not pass for a change of shape.
    """
    anchors = anchors[(anchors - before >= 0) & (anchors + after <= x.size)]
    if anchors.size < 2 or before + after < 3:
        return math.nan
    beats = x[anchors[:, None] + np.arange(-before, after)]
    beats = beats - beats.mean(axis=1, keepdims=True)
    if detrend:
        ramp = np.arange(before + after, dtype=np.float64)
        ramp -= ramp.mean()
        beats -= np.outer(beats @ ramp / float(ramp @ ramp), ramp)
    # Median beat via one sort (np.median's partition is slower on these small blocks).
    ordered = np.sort(beats, axis=0)
    middle = beats.shape[0] // 2
    template = ordered[middle] if beats.shape[0] % 2 else 0.5 * (ordered[middle - 1] + ordered[middle])
    template = template - template.mean()
    numerator = beats @ template
    denominator = np.sqrt(np.einsum("ij,ij->i", beats, beats) * float(template @ template))
    # A flat beat or template has no shape to compare: count it as uncorrelated.
    r = numerator / np.where(denominator > 0, denominator, np.inf)
    return float(r.mean())


# ---------------------------------------------------------------------------------------------
# ECG
# ---------------------------------------------------------------------------------------------


def _r_peaks_from_clean(clean: np.ndarray, fs: float) -> np.ndarray:
    if clean.size < 3:
        return np.empty(0, dtype=np.intp)
    slope = np.abs(_central_difference(clean))
    smooth = uniform_filter1d(slope, max(1, round(_ECG_SMOOTH_S * fs)), mode="nearest")
    average = uniform_filter1d(smooth, max(1, round(_ECG_AVERAGE_S * fs)), mode="nearest")
    qrs = smooth > _ECG_THRESHOLD_WEIGHT * average
    begins, ends = _runs(qrs)
    # A block touching either window edge is a partial complex; drop it as neurokit2 does.
    keep = (begins > 0) & (ends < clean.size)
    begins, ends = begins[keep] - 1, ends[keep] - 1
    if begins.size == 0:
        return np.empty(0, dtype=np.intp)
    lengths = ends - begins
    # Short blocks are noise spikes, measured against this window's typical QRS block.
    long_enough = lengths >= _ECG_MIN_LENGTH_WEIGHT * lengths.mean()
    begins, ends = begins[long_enough], ends[long_enough]
    begins, ends = begins[ends > begins], ends[ends > begins]
    if begins.size == 0:
        return np.empty(0, dtype=np.intp)
    # The R-peak is the most prominent interior local maximum of its block (prominence measured
    # inside the block, as neurokit2 does); a block without one (a plain slope) gives no beat.
    # Blocks are laid side by side, each followed by an infinite wall, so that one vectorised
    # scipy call measures every candidate's prominence without leaving its block.
    local_max = np.zeros(clean.size, dtype=bool)
    # Strict on both sides: a plateau has zero prominence and would only draw a scipy warning.
    local_max[1:-1] = (clean[1:-1] > clean[:-2]) & (clean[1:-1] > clean[2:])
    offsets = np.arange(int((ends - begins).max()) + 1)
    index = np.minimum(begins[:, None] + offsets, clean.size - 1)
    inside = index < ends[:, None]
    candidate = (offsets > 0) & (index < ends[:, None] - 1) & local_max[index]
    has_candidate = candidate.any(axis=1)
    if not has_candidate.any():
        return np.empty(0, dtype=np.intp)
    laid_out = np.where(inside, clean[index], np.inf)
    flat_candidates = np.flatnonzero(candidate)
    prominence = np.full(candidate.shape, -np.inf)
    prominence.flat[flat_candidates] = peak_prominences(laid_out.ravel(), flat_candidates)[0]
    peaks = (begins + prominence.argmax(axis=1))[has_candidate]
    # Refractory period: the short one admits rates up to 300 bpm; it is kept only when most beats
    # really come that fast, otherwise the usual 300 ms removes T waves and notched QRS doubles.
    fast = _enforce_refractory(peaks, round(_ECG_REFRACTORY_FAST_S * fs))
    if fast.size > 2 and np.median(np.diff(fast)) < _ECG_REFRACTORY_S * fs:
        return fast
    return _enforce_refractory(fast, round(_ECG_REFRACTORY_S * fs))


def detect_r_peaks(ecg: np.ndarray, fs: float) -> np.ndarray:
    """R-peak sample indices of an ECG (mV) sampled at fs (Hz); missing samples are interpolated."""
    _check_rate(fs)
    x, _, _ = _repair_missing(ecg)
    return _r_peaks_from_clean(_clean_ecg(x, fs), fs)


# ---------------------------------------------------------------------------------------------
# PPG
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PpgBeats:
    """Per detected PPG pulse; fractional indices are at the PPG rate."""

    foot: np.ndarray  # intersecting-tangent foot (fractional sample)
    minimum: np.ndarray  # diastolic minimum before the upstroke (sample)
    upslope: np.ndarray  # maximum first derivative (fractional sample)
    peak: np.ndarray  # systolic peak (sample)
    amplitude: np.ndarray  # peak minus diastolic minimum (PPG units)
    width: np.ndarray  # width at half amplitude (samples; NaN when not found)


def _ppg_peaks_from_clean(clean: np.ndarray, fs: float) -> np.ndarray:
    if clean.size < 3:
        return np.empty(0, dtype=np.intp)
    squared = np.square(np.maximum(clean, 0.0))
    ma_peak = uniform_filter1d(squared, max(1, round(_PPG_PEAK_WINDOW_S * fs)), mode="nearest")
    ma_beat = uniform_filter1d(squared, max(1, round(_PPG_BEAT_WINDOW_S * fs)), mode="nearest")
    begins, ends = _runs(ma_peak > ma_beat + _PPG_OFFSET * squared.mean())
    wide = (ends - begins) >= max(1, round(_PPG_PEAK_WINDOW_S * fs))
    begins, ends = begins[wide], ends[wide]
    if begins.size == 0:
        return np.empty(0, dtype=np.intp)
    peaks = _segment_argmax(clean, begins, ends)
    return _enforce_refractory(peaks, round(_PPG_REFRACTORY_S * fs))


def _ppg_beats_from_clean(clean: np.ndarray, fs: float) -> _PpgBeats:
    n = clean.size
    peaks = _ppg_peaks_from_clean(clean, fs)
    empty_f = np.empty(0, dtype=np.float64)
    if peaks.size == 0:
        empty_i = np.empty(0, dtype=np.intp)
        return _PpgBeats(empty_f, empty_i, empty_f, empty_i, empty_f, empty_f)
    # The diastolic minimum lies before the peak but after the previous one.
    lookback = max(2, round(_PPG_FOOT_LOOKBACK_S * fs))
    previous = np.concatenate(([-1], peaks[:-1]))
    start = np.maximum(peaks - lookback, previous + 1)
    # A pulse whose upstroke began before the window cannot be measured; drop it.
    complete = (start > 0) & (peaks - start >= 2)
    peaks, start = peaks[complete], start[complete]
    if peaks.size == 0:
        empty_i = np.empty(0, dtype=np.intp)
        return _PpgBeats(empty_f, empty_i, empty_f, empty_i, empty_f, empty_f)
    # Fixed-width 2-D views (one row per pulse, masked past each pulse's own bounds) replace a
    # Python loop over pulses; the widths are the longest actual span, not the search limits.
    offsets = np.arange(int((peaks - start).max()) + 1)
    index = np.minimum(start[:, None] + offsets, n - 1)
    minimum = start + np.where(index <= peaks[:, None], clean[index], np.inf).argmin(axis=1)

    slope = _central_difference(clean)
    offsets = offsets[: int((peaks - minimum).max()) + 1]
    rise_index = np.minimum(minimum[:, None] + offsets, n - 1)
    rising = rise_index <= peaks[:, None]
    upslope = minimum + np.where(rising, slope[rise_index], -np.inf).argmax(axis=1)
    # Parabolic refinement: at 125 Hz a sample is 8 ms, too coarse for PAT differences.
    left, mid, right = slope[np.maximum(upslope - 1, 0)], slope[upslope], slope[np.minimum(upslope + 1, n - 1)]
    curvature = left - 2.0 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curvature < 0, 0.5 * (left - right) / curvature, 0.0)
    upslope_frac = np.maximum(upslope + np.clip(shift, -0.5, 0.5), minimum)

    base = clean[minimum]
    amplitude = clean[peaks] - base
    with np.errstate(invalid="ignore", divide="ignore"):
        foot = np.where(mid > 0, upslope - (clean[upslope] - base) / mid, minimum.astype(np.float64))
    # The foot precedes the (refined) maximum upslope by construction; keep it so at the edges.
    foot = np.clip(foot, minimum, upslope_frac)

    # Width at half amplitude, each crossing linearly interpolated between samples.
    half = base + 0.5 * amplitude
    below = (clean[rise_index] < half[:, None]) & (rise_index < peaks[:, None])
    last_below = minimum + (offsets.size - 1 - np.argmax(below[:, ::-1], axis=1))
    last_below = np.minimum(last_below, peaks - 1)
    y0, y1 = clean[last_below], clean[last_below + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rise_cross = last_below + np.where(y1 != y0, (half - y0) / (y1 - y0), 0.0)

    # The downslope crossing must come before the next pulse's diastolic minimum.
    lookahead = max(2, round(_PPG_FALL_LOOKAHEAD_S * fs))
    fall_end = np.minimum(np.concatenate((minimum[1:], [n - 1])), peaks + lookahead)
    ahead = np.arange(1, max(2, int((fall_end - peaks).max())) + 1)
    fall_index = peaks[:, None] + ahead
    fell = (clean[np.minimum(fall_index, n - 1)] < half[:, None]) & (fall_index <= fall_end[:, None])
    found = fell.any(axis=1)
    first_below = np.minimum(peaks + 1 + np.argmax(fell, axis=1), n - 1)
    z0, z1 = clean[first_below - 1], clean[first_below]
    with np.errstate(invalid="ignore", divide="ignore"):
        fall_cross = first_below - 1 + np.where(z0 != z1, (z0 - half) / (z0 - z1), 0.0)
    width = np.where(found, fall_cross - rise_cross, np.nan)

    return _PpgBeats(
        foot=foot.astype(np.float64), minimum=minimum, upslope=upslope_frac.astype(np.float64),
        peak=peaks, amplitude=amplitude, width=width,
    )


def detect_ppg_beats(ppg: np.ndarray, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PPG pulses of a signal sampled at fs (Hz): (feet, systolic peaks, maximum-upslope points),
    each as sample indices (the tangent foot and upslope are rounded to the nearest sample)."""
    _check_rate(fs)
    x, _, _ = _repair_missing(ppg)
    beats = _ppg_beats_from_clean(_clean_ppg(x, fs), fs)
    return (
        np.rint(beats.foot).astype(np.intp), beats.peak.astype(np.intp), np.rint(beats.upslope).astype(np.intp),
    )


# ---------------------------------------------------------------------------------------------
# Quality checks on the raw channels
# ---------------------------------------------------------------------------------------------


def _flat_seconds(x: np.ndarray, fs: float) -> float:
    """Seconds covered by stretches of FLAT_WINDOW_S whose peak-to-peak is near zero relative to
    the channel's own typical amplitude (units differ between devices, so no absolute level).

    Works on 0.25-s blocks (max and min per block, then over runs of blocks) instead of sliding
    filters over every sample: the resolution is ample for a multi-second threshold.
    """
    block = max(1, round(_FLAT_BLOCK_S * fs))
    n_blocks = x.size // block
    per_window = max(1, round(FLAT_WINDOW_S / _FLAT_BLOCK_S))
    if n_blocks < per_window:
        return 0.0
    blocks = x[: n_blocks * block].reshape(n_blocks, block)
    highs, lows = blocks.max(axis=1), blocks.min(axis=1)
    # Typical amplitude: upper quartile of 2-s peak-to-peaks (2 s holds a beat down to 30 bpm), so
    # it stays representative while up to three quarters of the channel is flat.
    per_reference = max(1, round(2.0 / _FLAT_BLOCK_S))
    n_reference = max(1, n_blocks // per_reference)
    if n_blocks >= per_reference:
        spans = (highs[: n_reference * per_reference].reshape(n_reference, -1).max(axis=1)
                 - lows[: n_reference * per_reference].reshape(n_reference, -1).min(axis=1))
    else:
        spans = np.array([highs.max() - lows.min()])
    reference = float(np.partition(spans, (3 * spans.size) // 4)[(3 * spans.size) // 4])
    window_high = highs[: n_blocks - per_window + 1].copy()
    window_low = lows[: n_blocks - per_window + 1].copy()
    for shift in range(1, per_window):  # a handful of whole-array steps, not a loop over samples
        np.maximum(window_high, highs[shift : shift + window_high.size], out=window_high)
        np.minimum(window_low, lows[shift : shift + window_low.size], out=window_low)
    window_span = window_high - window_low
    flat_window = window_span <= FLAT_RELATIVE_RANGE * reference
    if not flat_window.any():
        return 0.0
    # Each flat window covers per_window blocks: widen back to the stretch it came from, then
    # extend each stretch sample by sample into its neighbouring blocks (a few runs at most), so
    # the reported duration is not rounded to blocks.
    covered = np.convolve(flat_window.astype(np.float64), np.ones(per_window)) > 0.5
    tolerance = FLAT_RELATIVE_RANGE * reference
    flat_samples = 0
    for first, last in zip(*_runs(covered)):
        begin, end = int(first) * block, int(last) * block
        stretch = x[begin:end]
        low, high = float(stretch.min()), float(stretch.max())
        before = x[max(0, begin - block) : begin][::-1]
        after = x[end : end + 2 * block]  # also reaches the samples after the last whole block
        flat_samples += end - begin
        for side in (before, after):
            inside = (side >= high - tolerance) & (side <= low + tolerance)
            flat_samples += side.size if inside.all() else int(np.argmin(inside))
    return flat_samples / fs


def _rail_share(x: np.ndarray) -> tuple[float, str]:
    """Largest share of samples sitting at the channel's minimum or maximum, and which rail."""
    low, high = float(x.min()), float(x.max())
    full = high - low
    if not full > 0:
        return 0.0, "none"
    tolerance = CLIP_RAIL_TOLERANCE * full
    top = np.count_nonzero(x >= high - tolerance) / x.size
    bottom = np.count_nonzero(x <= low + tolerance) / x.size
    return (top, "maximum") if top >= bottom else (bottom, "minimum")


def _channel_issues(name: str, raw: np.ndarray, fs: float) -> tuple[np.ndarray, list[QualityIssue]]:
    label = name.upper()
    x, n_missing, longest_gap = _repair_missing(raw)
    duration = x.size / fs
    issues: list[QualityIssue] = []
    if x.size == 0:
        return x, [QualityIssue(QualityReason.MISSING_SAMPLES, name, f"{label} has no samples")]
    share = n_missing / x.size
    if share > MISSING_MAX_SHARE or longest_gap / fs > MISSING_MAX_GAP_S:
        issues.append(QualityIssue(
            QualityReason.MISSING_SAMPLES, name,
            f"{label} missing {share:.1%} of samples ({n_missing / fs:.1f} s of {duration:.1f} s), "
            f"longest gap {longest_gap / fs:.2f} s (limits {MISSING_MAX_SHARE:.0%}, {MISSING_MAX_GAP_S:.1f} s)",
        ))
    flat_s = _flat_seconds(x, fs)
    if flat_s >= FLAT_MIN_S:
        issues.append(QualityIssue(
            QualityReason.FLATLINE, name, f"{label} flat for {flat_s:.1f} s of {duration:.1f} s",
        ))
    rail, side = _rail_share(x)
    if rail > CLIP_MAX_SHARE:
        issues.append(QualityIssue(
            QualityReason.CLIPPING, name,
            f"{label} at its {side} rail for {rail:.1%} of samples (limit {CLIP_MAX_SHARE:.0%})",
        ))
    return x, issues


def _check_rate(fs: float) -> None:
    if not (isinstance(fs, (int, float, np.floating, np.integer)) and math.isfinite(fs) and fs > 0):
        raise ValueError(f"sampling rate must be a positive number of Hz, got {fs!r}")


# ---------------------------------------------------------------------------------------------
# Window analysis
# ---------------------------------------------------------------------------------------------


def _match_beats(r_s: np.ndarray, foot_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into r_s, foot_s) of R-peaks followed by a foot PAT_MIN_MS..PAT_MAX_MS later; a foot
    claimed by two R-peaks (an extra ECG detection) goes to the later, closer one."""
    if r_s.size == 0 or foot_s.size == 0:
        empty = np.empty(0, dtype=np.intp)
        return empty, empty
    candidate = np.searchsorted(foot_s, r_s + PAT_MIN_MS / 1000.0, side="left")
    has = candidate < foot_s.size
    delay = np.full(r_s.size, np.inf)
    delay[has] = foot_s[candidate[has]] - r_s[has]
    ok = np.flatnonzero(has & (delay <= PAT_MAX_MS / 1000.0))
    feet = candidate[ok]
    last_claim = np.concatenate((feet[1:] != feet[:-1], [True])) if feet.size else np.empty(0, dtype=bool)
    return ok[last_claim], feet[last_claim]


def _heart_rate_issues(rr_s: np.ndarray, n_r_peaks: int) -> list[QualityIssue]:
    """A median rate outside HEART_RATE_MIN_BPM..HEART_RATE_MAX_BPM means the R-peaks found are not
    the heart's beats (RR intervals in s)."""
    median_hr = 60.0 / float(np.median(rr_s)) if rr_s.size else math.nan
    if rr_s.size and not HEART_RATE_MIN_BPM <= median_hr <= HEART_RATE_MAX_BPM:
        return [QualityIssue(
            QualityReason.IMPLAUSIBLE_HEART_RATE, "ecg",
            f"median heart rate {median_hr:.0f} bpm from {n_r_peaks} R-peaks "
            f"(plausible {HEART_RATE_MIN_BPM:.0f}-{HEART_RATE_MAX_BPM:.0f} bpm)",
        )]
    return []


def _too_few_beats_issues(matched: int, n_r_peaks: int, n_pulses: int) -> list[QualityIssue]:
    """Features need enough beats, and beats that stand for the window's pulses."""
    if matched < MIN_MATCHED_BEATS:
        return [QualityIssue(
            QualityReason.TOO_FEW_BEATS, "both",
            f"{matched} R-peaks matched to a PPG foot {PAT_MIN_MS:.0f}-{PAT_MAX_MS:.0f} ms later "
            f"({n_r_peaks} R-peaks, {n_pulses} PPG pulses; need {MIN_MATCHED_BEATS})",
        )]
    if matched < MIN_MATCHED_PULSE_SHARE * n_pulses:
        # Every pulse needs a heartbeat (the reverse need not hold: a premature beat may give no
        # pulse), so many unmatched pulses mean missed R-peaks or PPG artefact, and the matched
        # beats would be a biased sample.
        return [QualityIssue(
            QualityReason.TOO_FEW_BEATS, "both",
            f"only {matched} of {n_pulses} PPG pulses matched to an R-peak {PAT_MIN_MS:.0f}-{PAT_MAX_MS:.0f} ms "
            f"before (need {MIN_MATCHED_PULSE_SHARE:.0%})",
        )]
    return []


def _beat_shape_issues(
    ecg_clean: np.ndarray, ecg_fs: float, r_peaks: np.ndarray, ppg_clean: np.ndarray, ppg_fs: float,
    pulses: _PpgBeats,
) -> list[QualityIssue]:
    """Beats of one heart look alike; beats unlike their median template are artefact (rates in Hz)."""
    # Templates are short enough to hold one beat even at high rates: QRS from 60 ms before to
    # 100 ms after the R-peak; the PPG upstroke and systolic peak, 50 ms before to 300 ms after
    # the diastolic minimum.
    ecg_r = _mean_template_correlation(
        ecg_clean, r_peaks, round(_ECG_TEMPLATE_S[0] * ecg_fs), round(_ECG_TEMPLATE_S[1] * ecg_fs), detrend=True,
    )
    ppg_r = _mean_template_correlation(
        ppg_clean, pulses.minimum, round(_PPG_TEMPLATE_S[0] * ppg_fs), round(_PPG_TEMPLATE_S[1] * ppg_fs),
        detrend=False,
    )
    issues: list[QualityIssue] = []
    for channel, r in (("ecg", ecg_r), ("ppg", ppg_r)):
        limit = TEMPLATE_CORRELATION_MIN[channel]
        if math.isfinite(r) and r < limit:
            issues.append(QualityIssue(
                QualityReason.LOW_TEMPLATE_CORRELATION, channel,
                f"{channel.upper()} beats correlate {r:.2f} with their median template on average (need {limit:.2f})",
            ))
    return issues


def _matched_beat_features(
    r_s: np.ndarray, rr_s: np.ndarray, r_index: np.ndarray, foot_index: np.ndarray,
    foot_s: np.ndarray, upslope_s: np.ndarray, pulses: _PpgBeats, ppg_fs: float,
) -> BeatFeatures:
    """Features of each R-peak matched to a PPG foot; times in s on the ECG's clock, PPG rate in Hz."""
    # RR ending at each beat; the first R-peak borrows the following interval.
    rr_before = np.concatenate((rr_s[:1], rr_s)) if rr_s.size else np.full(r_s.size, np.nan)
    with np.errstate(divide="ignore"):
        heart_rate = 60.0 / rr_before[r_index]
    r_t = r_s[r_index]
    return BeatFeatures(
        r_peak_s=r_t,
        pat_foot_ms=(foot_s[foot_index] - r_t) * 1000.0,
        pat_upslope_ms=(upslope_s[foot_index] - r_t) * 1000.0,
        heart_rate_bpm=heart_rate,
        ppg_amplitude=pulses.amplitude[foot_index],
        rise_time_ms=(pulses.peak[foot_index] - pulses.foot[foot_index]) * (1000.0 / ppg_fs),
        pulse_width_ms=pulses.width[foot_index] * (1000.0 / ppg_fs),
    )


def _window_features(beats: BeatFeatures, matched: int) -> WindowFeatures | None:
    """Median and IQR of each beat feature; None below MIN_FEATURE_BEATS beats, too few for a spread."""
    if matched < MIN_FEATURE_BEATS:
        return None
    medians, iqrs = _quartiles(np.vstack([getattr(beats, name) for name in _FEATURE_NAMES]))
    aggregates: dict[str, float] = {}
    for name, median, iqr in zip(_FEATURE_NAMES, medians.tolist(), iqrs.tolist()):
        aggregates[f"{name}_median"], aggregates[f"{name}_iqr"] = median, iqr
    return WindowFeatures(beat_count=matched, **aggregates)


def analyse_window(
    ecg: np.ndarray, ecg_fs: float, ppg: np.ndarray, ppg_fs: float, *, ppg_delay_s: float = 0.0,
) -> WindowAnalysis:
    """Quality verdict and pulse-arrival-time features for one synchronised ECG + PPG window.

    ecg: ECG in mV at ecg_fs (Hz); ppg: PPG in device units at ppg_fs (Hz); both start at the same
    instant; NaN marks a missing sample.

    ppg_delay_s: known recording latency of the PPG channel behind the ECG (s), subtracted from PPG
    times before beats are matched. 0 for a synchronised wearable. The challenge2015 bedside
    monitors record PLETH about 0.9 s late (its foot trails the arterial-line foot by 0.95 s,
    median over the 60 records, where physiology allows tens of ms), so without it every R-peak
    would be paired with the pulse of an earlier beat.

    Every failing check is listed in `issues`; `usable` is True only when there are none.
    Features are filled whenever at least MIN_FEATURE_BEATS beats match, even for unusable
    windows, but only usable windows should be used downstream.
    """
    _check_rate(ecg_fs)
    _check_rate(ppg_fs)
    if not math.isfinite(ppg_delay_s):
        raise ValueError(f"ppg_delay_s must be a finite number of seconds, got {ppg_delay_s!r}")
    ecg_x, issues = _channel_issues("ecg", ecg, ecg_fs)
    ppg_x, ppg_issues = _channel_issues("ppg", ppg, ppg_fs)
    issues += ppg_issues

    ecg_clean = _clean_ecg(ecg_x, ecg_fs)
    ppg_clean = _clean_ppg(ppg_x, ppg_fs)
    r_peaks = _r_peaks_from_clean(ecg_clean, ecg_fs)
    pulses = _ppg_beats_from_clean(ppg_clean, ppg_fs)

    r_s = r_peaks / ecg_fs
    rr_s = np.diff(r_s)
    issues += _heart_rate_issues(rr_s, r_peaks.size)

    foot_s = pulses.foot / ppg_fs - ppg_delay_s
    upslope_s = pulses.upslope / ppg_fs - ppg_delay_s
    r_index, foot_index = _match_beats(r_s, foot_s)
    matched = int(r_index.size)
    issues += _too_few_beats_issues(matched, r_peaks.size, int(pulses.foot.size))
    issues += _beat_shape_issues(ecg_clean, ecg_fs, r_peaks, ppg_clean, ppg_fs, pulses)

    beats: BeatFeatures | None = None
    features: WindowFeatures | None = None
    if matched:
        beats = _matched_beat_features(r_s, rr_s, r_index, foot_index, foot_s, upslope_s, pulses, ppg_fs)
        features = _window_features(beats, matched)

    return WindowAnalysis(
        usable=not issues,
        issues=tuple(issues),
        features=features,
        beats=beats,
        r_peaks=r_peaks,
        ppg_feet=np.rint(pulses.foot).astype(np.intp),
    )


def matched_event_count(found: np.ndarray, reference: np.ndarray, tolerance: float) -> int:
    """How many reference events (e.g. R-peaks of a reference detector) have a found event within
    +-tolerance, in the same units (samples or s). Used to report beat agreement."""
    if found.size == 0 or reference.size == 0:
        return 0
    found = np.sort(found)
    after = np.searchsorted(found, reference)
    distance = np.full(reference.size, np.inf)
    for neighbour in (after - 1, after):
        ok = (neighbour >= 0) & (neighbour < found.size)
        distance[ok] = np.minimum(distance[ok], np.abs(found[neighbour[ok]] - reference[ok]))
    return int(np.count_nonzero(distance <= tolerance))
