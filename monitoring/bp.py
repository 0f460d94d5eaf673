"""Calibrated cuffless blood-pressure estimation: reference BP, dataset protocol, training,
split-conformal intervals, honest baselines, evaluation and promotion gates.

No Django, no clock, and no I/O except the two functions that take a folder of WFDB records
(`load_dataset`, `fingerprint_records`); everything else is plain values in, plain values out.

Units: blood pressure mmHg; times s (window starts) or ms (PAT, rise time, pulse width); heart
rate bpm; sample rates Hz. Errors are prediction minus reference (mmHg).

The model is calibration-relative (DESIGN.md section 3): it predicts the change of SBP and DBP
from the patient's calibration (a cuff reading and the windows recorded around it) from the
change of the window features (PAT falls as BP rises), so an estimate is
calibration BP + predicted change, with a split-conformal interval (prediction +/- q mmHg).

Fixed evaluation protocol (issue 4), applied to each record of a folder (challenge2015 layout:
ECG lead II, PLETH, ABP, 250 Hz):
- the PLETH latency of the bedside monitor is removed first (`with_pleth_delay_removed`), so the
  windows are one-clock windows like a wearable sends; ABP stays on the ECG clock;
- non-overlapping 30-s windows from t = 0 (a window must lie wholly inside the delay-corrected
  recording, so a 300-s record, 299.1 s after the correction, has windows starting 0..240 s);
- reference SBP/DBP of a window = median of its ABP beat values (>= 5 beats, else the window
  has no reference and is skipped);
- windows starting before 60 s are the calibration: cuff reading = mean of their references;
  calibration features = mean of the features of those of them the quality gate calls usable;
- test windows start at 60 s and end by 300 s; only usable windows (quality gate of
  monitoring.signals) with a reference are evaluated;
- a record with no calibration reference or no usable calibration window is skipped and counted
  (an estimate needs a calibration: the system would flag it, not guess).

These are ICU patients with arterial lines, not ambulatory wearable users, and the test windows
lie within 5 minutes of the calibration: reports must say so.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wfdb
from scipy.signal import find_peaks
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import HuberRegressor, QuantileRegressor, Ridge
from sklearn.multioutput import MultiOutputRegressor
from sklearn.dummy import DummyRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from monitoring.recordings import (
    CHALLENGE2015_PLETH_DELAY_S,
    Recording,
    iter_windows,
    with_pleth_delay_removed,
)
from monitoring.signals import analyse_window

MODEL_FAMILY = "bp-calibrated-delta-1"

# --- protocol (issue 4) -----------------------------------------------------------------------
WINDOW_S = 30.0  # window length (s), windows back to back from t = 0
CALIBRATION_END_S = 60.0  # windows starting before this (s) are the record's calibration
TEST_START_S = 60.0  # test windows start at or after this (s) ...
TEST_END_S = 300.0  # ... and end by this (s)
MIN_REFERENCE_BEATS = 5  # fewer valid ABP beats in a window -> no reference BP

# --- ABP beat detection -----------------------------------------------------------------------
ABP_REFRACTORY_S = 0.27  # systolic maxima at least this far apart (s): heart rates up to 222 bpm
ABP_MIN_PROMINENCE_MMHG = 5.0  # a systolic maximum rises at least this far above its bases (mmHg) ...
ABP_RELATIVE_PROMINENCE = 0.5  # ... and at least this share of the typical pulse pressure (the dicrotic wave does not)
_ABP_PULSE_BLOCK_S = 2.0  # typical pulse pressure = median peak-to-peak over blocks of this length (s)
# A beat counts when it is physiologically plausible; line flushes, zeroing and transducer
# artefacts of the arterial line are not beats.
BEAT_SBP_RANGE_MMHG = (40.0, 300.0)
BEAT_DBP_RANGE_MMHG = (10.0, 200.0)
BEAT_MIN_PULSE_PRESSURE_MMHG = 5.0

# --- features ---------------------------------------------------------------------------------
# Keys of WindowFeatures.as_dict(); PAT to foot first. Each enters the model as its change from
# the calibration (window - calibration, in the feature's units); the PPG amplitude, in device
# units that differ between devices and placements, enters as the natural log of its ratio.
FEATURES: tuple[str, ...] = (
    "pat_foot_ms_median",
    "pat_upslope_ms_median",
    "heart_rate_bpm_median",
    "ppg_amplitude_median",
    "rise_time_ms_median",
    "pulse_width_ms_median",
)
_LOG_RATIO_FEATURES = frozenset({"ppg_amplitude_median"})
TARGETS: tuple[str, str] = ("sbp", "dbp")

# --- training, intervals, gates ---------------------------------------------------------------
SPLIT_SEED = 2015
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train / validation / test, by record
RANDOM_STATE = 0
NOMINAL_COVERAGE = 0.90  # prediction interval level
MAX_ABS_MEAN_ERROR_MMHG = 5.0  # ISO 81060-2 criterion 1: |mean error| <= 5 mmHg ...
MAX_SD_ERROR_MMHG = 8.0  # ... and SD of error <= 8 mmHg
MAX_COVERAGE_GAP_POINTS = 2.0  # interval coverage within this many percentage points of nominal
BHS_GRADES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("A", (60.0, 85.0, 95.0)),  # % of errors within 5 / 10 / 15 mmHg
    ("B", (50.0, 75.0, 90.0)),
    ("C", (40.0, 65.0, 85.0)),
)

# skops: types outside skops' default trust that a saved estimator of this module holds.
# numpy.dtype appears in every fitted pipeline; TreePredictor only in the gradient-boosting one.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


# ==============================================================================================
# Reference blood pressure from the arterial line
# ==============================================================================================


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
    x = _hold_last(np.asarray(abp, dtype=np.float64).ravel())  # NaN (missing) holds the last value
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


# ==============================================================================================
# Calibration and the calibration-relative feature vector
# ==============================================================================================

FeatureDict = Mapping[str, float | int | None]


@dataclass(frozen=True)
class Calibration:
    """A calibration point: cuff SBP/DBP (mmHg) and the mean features of its usable windows.

    features maps each WindowFeatures key to the mean over the calibration windows that had a
    value (None when none had). n_reference_windows / n_feature_windows: how many windows gave
    the cuff reading / the features.
    """

    sbp_mmhg: float
    dbp_mmhg: float
    features: dict[str, float | None]
    n_reference_windows: int = 1
    n_feature_windows: int = 1


def mean_features(feature_dicts: Sequence[FeatureDict]) -> dict[str, float | None]:
    """Per-key mean of window feature dicts, ignoring missing (None/NaN) values; None if all missing."""
    keys: list[str] = []
    for features in feature_dicts:
        keys.extend(key for key in features if key not in keys)
    out: dict[str, float | None] = {}
    for key in keys:
        values = [float(v) for f in feature_dicts if (v := f.get(key)) is not None and math.isfinite(float(v))]
        out[key] = float(np.mean(values)) if values else None
    return out


def calibration_from_windows(
    references: Sequence[ReferenceBP], usable_features: Sequence[FeatureDict],
) -> Calibration | None:
    """Calibration from its windows: cuff = mean of the windows' reference SBP/DBP (mmHg),
    features = mean of the usable windows' features. None when either list is empty."""
    if not references or not usable_features:
        return None
    return Calibration(
        sbp_mmhg=float(np.mean([r.sbp_mmhg for r in references])),
        dbp_mmhg=float(np.mean([r.dbp_mmhg for r in references])),
        features=mean_features(usable_features),
        n_reference_windows=len(references),
        n_feature_windows=len(usable_features),
    )


def _as_float(value: float | int | None) -> float:
    return math.nan if value is None else float(value)


def feature_vector(
    features: FeatureDict, calibration_features: FeatureDict, names: Sequence[str] = FEATURES,
) -> np.ndarray:
    """Model input for one window: the change of each feature in `names` from the calibration.

    window - calibration in the feature's units (ms, bpm), except the PPG amplitude: ln(window /
    calibration). NaN where either value is missing (the fitted pipelines read NaN as "no change").
    """
    out = np.empty(len(names))
    for i, name in enumerate(names):
        value, reference = _as_float(features.get(name)), _as_float(calibration_features.get(name))
        if name in _LOG_RATIO_FEATURES:
            out[i] = math.log(value / reference) if value > 0 and reference > 0 else math.nan
        else:
            out[i] = value - reference
    return out


def target_vector(reference: ReferenceBP, calibration: Calibration) -> np.ndarray:
    """Training target: (SBP - calibration SBP, DBP - calibration DBP) in mmHg."""
    return np.array([reference.sbp_mmhg - calibration.sbp_mmhg, reference.dbp_mmhg - calibration.dbp_mmhg])


# ==============================================================================================
# Dataset under the fixed protocol
# ==============================================================================================


@dataclass(frozen=True)
class WindowSample:
    """One evaluated window: where it is, its reference BP, its record's calibration, its features."""

    record: str
    start_s: float
    reference: ReferenceBP
    calibration: Calibration
    features: dict[str, float | int | None]


@dataclass(frozen=True)
class RecordOutcome:
    """What the protocol made of one record: its test samples, or why it was skipped.

    Window counts: calibration windows with a reference / usable; test windows seen, without a
    reference (skipped), unusable by the quality gate (skipped), evaluated (= len(samples)).
    """

    record: str
    samples: tuple[WindowSample, ...]
    skipped_reason: str | None
    calibration_windows: int
    calibration_references: int
    calibration_usable: int
    test_windows: int
    test_without_reference: int
    test_unusable: int


@dataclass(frozen=True)
class BPDataset:
    """Evaluated windows of a set of records, with the record-level bookkeeping."""

    samples: tuple[WindowSample, ...]
    outcomes: tuple[RecordOutcome, ...]

    @property
    def records(self) -> tuple[str, ...]:
        """Records that contributed at least one window, in order."""
        return tuple(dict.fromkeys(s.record for s in self.samples))

    @property
    def skipped_records(self) -> dict[str, str]:
        """Record name -> plain-word reason it was skipped."""
        return {o.record: o.skipped_reason for o in self.outcomes if o.skipped_reason is not None}

    def subset(self, records: Iterable[str]) -> BPDataset:
        """The same dataset restricted to `records`."""
        keep = set(records)
        return BPDataset(
            samples=tuple(s for s in self.samples if s.record in keep),
            outcomes=tuple(o for o in self.outcomes if o.record in keep),
        )

    def X(self, names: Sequence[str] = FEATURES) -> np.ndarray:
        """Feature matrix (n windows x len(names)), see `feature_vector`."""
        if not self.samples:
            return np.empty((0, len(names)))
        return np.vstack([feature_vector(s.features, s.calibration.features, names) for s in self.samples])

    def y(self) -> np.ndarray:
        """Targets (n x 2): change of SBP and DBP from the calibration (mmHg)."""
        if not self.samples:
            return np.empty((0, 2))
        return np.vstack([target_vector(s.reference, s.calibration) for s in self.samples])

    def reference_bp(self) -> np.ndarray:
        """Reference (n x 2): SBP, DBP (mmHg)."""
        return np.array([[s.reference.sbp_mmhg, s.reference.dbp_mmhg] for s in self.samples]).reshape(-1, 2)

    def calibration_bp(self) -> np.ndarray:
        """The calibration cuff reading of each window's record (n x 2): SBP, DBP (mmHg)."""
        return np.array([[s.calibration.sbp_mmhg, s.calibration.dbp_mmhg] for s in self.samples]).reshape(-1, 2)

    def record_of_window(self) -> np.ndarray:
        """Record name of each window (n,)."""
        return np.array([s.record for s in self.samples], dtype=object)

    def summary(self) -> dict[str, Any]:
        """Counts of records and windows, JSON-ready."""
        used = [o for o in self.outcomes if o.skipped_reason is None]
        return {
            "records": len(self.outcomes),
            "records_evaluated": len(self.records),
            "records_skipped": self.skipped_records,
            "test_windows": sum(o.test_windows for o in used),
            "test_windows_without_reference": sum(o.test_without_reference for o in used),
            "test_windows_unusable": sum(o.test_unusable for o in used),
            "windows_evaluated": len(self.samples),
        }


def is_calibration_window(start_s: float) -> bool:
    """Protocol: a window starting before CALIBRATION_END_S (s) belongs to the calibration."""
    return start_s < CALIBRATION_END_S


def is_test_window(start_s: float, window_s: float = WINDOW_S) -> bool:
    """Protocol: a test window starts at or after TEST_START_S and ends by TEST_END_S (s)."""
    return start_s >= TEST_START_S and start_s + window_s <= TEST_END_S + 1e-9


def record_outcome(recording: Recording) -> RecordOutcome:
    """Apply the fixed protocol to one one-clock recording (PLETH delay already removed).

    The recording must carry ABP. Windows are analysed by monitoring.signals.analyse_window.
    """
    if recording.abp is None or recording.abp_fs is None:
        raise ValueError(f"record {recording.name} has no ABP channel: no reference BP")
    abp_fs = recording.abp_fs
    calibration_refs: list[ReferenceBP] = []
    calibration_features: list[FeatureDict] = []
    pending: list[tuple[float, ReferenceBP | None, dict[str, float | int | None] | None]] = []
    calibration_windows = test_windows = 0
    for window in iter_windows(recording, window_s=WINDOW_S):
        calibration, test = is_calibration_window(window.start_s), is_test_window(window.start_s)
        if not (calibration or test):
            continue
        reference = reference_bp(window.abp, abp_fs) if window.abp is not None else None
        analysis = analyse_window(window.ecg, window.ecg_fs, window.ppg, window.ppg_fs)
        features = analysis.features.as_dict() if analysis.usable and analysis.features is not None else None
        if calibration:
            calibration_windows += 1
            if reference is not None:
                calibration_refs.append(reference)
            if features is not None:
                calibration_features.append(features)
        else:
            test_windows += 1
            pending.append((window.start_s, reference, features))

    counts = dict(
        calibration_windows=calibration_windows,
        calibration_references=len(calibration_refs),
        calibration_usable=len(calibration_features),
        test_windows=test_windows,
        test_without_reference=sum(r is None for _, r, _ in pending),
        test_unusable=sum(r is not None and f is None for _, r, f in pending),
    )
    skipped: str | None = None
    if not calibration_refs:
        skipped = "no calibration window has a reference BP (>= 5 ABP beats)"
    elif not calibration_features:
        skipped = "no calibration window passes the signal quality gate"
    calibration_point = calibration_from_windows(calibration_refs, calibration_features)
    if skipped is not None or calibration_point is None:
        return RecordOutcome(recording.name, (), skipped, **counts)
    samples = tuple(
        WindowSample(recording.name, start_s, reference, calibration_point, features)
        for start_s, reference, features in pending
        if reference is not None and features is not None
    )
    if not samples:
        skipped = "no test window has both a reference BP and usable signals"
    return RecordOutcome(recording.name, samples, skipped, **counts)


def dataset_from_outcomes(outcomes: Iterable[RecordOutcome]) -> BPDataset:
    """Assemble a dataset from per-record outcomes."""
    outcomes = tuple(outcomes)
    return BPDataset(samples=tuple(s for o in outcomes for s in o.samples), outcomes=outcomes)


def record_names(folder: Path) -> list[str]:
    """Record names of a WFDB folder: its RECORDS file, or else every <name>.hea, sorted."""
    listing = Path(folder) / "RECORDS"
    if listing.exists():
        return listing.read_text().split()
    return sorted(path.stem for path in Path(folder).glob("*.hea"))


def read_record(folder: Path, name: str) -> Recording:
    """Read one WFDB record with ECG (lead II, else the first channel), PLETH and ABP.

    Missing samples (NaN) hold the last value, as a device would send. Raises ValueError when
    PLETH or ABP is absent.
    """
    record = wfdb.rdrecord(str(Path(folder) / name))
    names = list(record.sig_name)
    for required in ("PLETH", "ABP"):
        if required not in names:
            raise ValueError(f"record {name} has no {required} channel (has {', '.join(names)})")
    signals = record.p_signal
    fs = float(record.fs)
    ecg_index = names.index("II") if "II" in names else 0
    return Recording(
        name=name,
        ecg=_hold_last(signals[:, ecg_index]), ecg_lead=names[ecg_index], ecg_fs=fs,
        ppg=_hold_last(signals[:, names.index("PLETH")]), ppg_fs=fs,
        abp=_hold_last(signals[:, names.index("ABP")]), abp_fs=fs,
    )


def _hold_last(signal: np.ndarray) -> np.ndarray:
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


def load_dataset(
    folder: Path, names: Sequence[str] | None = None, *, pleth_delay_s: float = CHALLENGE2015_PLETH_DELAY_S,
) -> BPDataset:
    """Read the records `names` (default: `record_names(folder)`) of a WFDB folder and apply the
    protocol to each. pleth_delay_s: recording latency of PLETH behind ECG/ABP (s), removed first
    (0.90 s for challenge2015; 0 for a one-clock device)."""
    names = record_names(folder) if names is None else list(names)
    return dataset_from_outcomes(
        record_outcome(with_pleth_delay_removed(read_record(folder, name), pleth_delay_s)) for name in names
    )


# ==============================================================================================
# Split and fingerprint
# ==============================================================================================


@dataclass(frozen=True)
class RecordSplit:
    """Records per split (each sorted), and how they were drawn."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    fractions: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        return {"train": list(self.train), "validation": list(self.validation), "test": list(self.test),
                "seed": self.seed, "fractions": list(self.fractions)}

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of the split (which records went where, seed, fractions)."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


def split_records(
    names: Sequence[str], *, seed: int = SPLIT_SEED, fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
) -> RecordSplit:
    """Split records (never windows) into train / validation / test: the sorted, de-duplicated
    names are permuted by numpy's default_rng(seed); the first round(f_train * n) go to train, the
    next round(f_validation * n) to validation, the rest to test. Same names + seed -> same split."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative shares summing to 1, got {fractions}")
    unique = sorted(set(names))
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[i] for i in order]
    n_train = int(round(fractions[0] * len(unique)))
    n_validation = int(round(fractions[1] * len(unique)))
    return RecordSplit(
        train=tuple(sorted(shuffled[:n_train])),
        validation=tuple(sorted(shuffled[n_train:n_train + n_validation])),
        test=tuple(sorted(shuffled[n_train + n_validation:])),
        seed=seed, fractions=tuple(fractions),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class DataFingerprint:
    """Training-data fingerprint for the registry: SHA-256 of each record file (.hea, .mat, ...),
    of their combination, of the split, and of both together (`sha256`)."""

    files: dict[str, str]
    records_sha256: str
    split_sha256: str
    sha256: str
    split: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"files": dict(self.files), "records_sha256": self.records_sha256,
                "split_sha256": self.split_sha256, "sha256": self.sha256, "split": self.split}


def fingerprint_records(folder: Path, split: RecordSplit) -> DataFingerprint:
    """Hash every file of the split's records in `folder` (<name>.hea and the signal files it
    names, e.g. <name>.mat). records_sha256 = SHA-256 of the sorted "file sha256" lines."""
    folder = Path(folder)
    files: dict[str, str] = {}
    for name in sorted(split.train + split.validation + split.test):
        header = folder / f"{name}.hea"
        paths = {header}
        paths.update(folder / line.split()[0] for line in header.read_text().splitlines()[1:]
                     if line.strip() and not line.startswith("#"))
        for path in sorted(paths):
            files[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    records_sha256 = hashlib.sha256("".join(f"{k} {v}\n" for k, v in sorted(files.items())).encode()).hexdigest()
    split_sha256 = split.sha256
    return DataFingerprint(
        files=files, records_sha256=records_sha256, split_sha256=split_sha256,
        sha256=hashlib.sha256(f"{records_sha256}\n{split_sha256}\n".encode()).hexdigest(),
        split=split.as_dict(),
    )


# ==============================================================================================
# Training and split-conformal intervals
# ==============================================================================================


def candidate_estimators(random_state: int = RANDOM_STATE) -> dict[str, MultiOutputRegressor]:
    """The candidates compared on validation, each a plain-sklearn MultiOutputRegressor (one
    regressor per target, SBP then DBP, fitted independently). Every pipeline imputes a missing
    feature change as 0 (no change); the linear ones standardise. The arterial-line references
    hold artefacts (damping, flushes), so robust losses (Huber, median, absolute error) sit beside
    least squares."""

    def linear(regressor: Any) -> MultiOutputRegressor:
        return MultiOutputRegressor(Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=0.0)),
            ("scale", StandardScaler()),
            ("regress", regressor),
        ]))

    def boosting(max_depth: int) -> MultiOutputRegressor:
        return MultiOutputRegressor(Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=0.0)),
            ("regress", HistGradientBoostingRegressor(
                loss="absolute_error", learning_rate=0.05, max_iter=150, max_depth=max_depth,
                min_samples_leaf=20, l2_regularization=1.0, random_state=random_state,
            )),
        ]))

    return {
        "ridge_alpha_1": linear(Ridge(alpha=1.0)),
        "ridge_alpha_10": linear(Ridge(alpha=10.0)),
        "ridge_alpha_100": linear(Ridge(alpha=100.0)),
        "huber_alpha_1": linear(HuberRegressor(alpha=1.0, epsilon=1.35, max_iter=1000)),
        "median_linear_alpha_0.01": linear(QuantileRegressor(quantile=0.5, alpha=0.01)),
        "hist_gradient_boosting_depth_2": boosting(2),
        "hist_gradient_boosting_depth_3": boosting(3),
    }


CARRY_FORWARD = "carry_forward_baseline"


def carry_forward_estimator() -> dict[str, MultiOutputRegressor]:
    """The "carry the calibration value forward" baseline as a registrable model: it predicts no
    change from the calibration (0 mmHg), so its estimate is the calibration cuff reading, with a
    split-conformal interval like any candidate. ClinOps uses it while no learned model beats it."""
    return {CARRY_FORWARD: MultiOutputRegressor(Pipeline([
        ("carry_forward", DummyRegressor(strategy="constant", constant=0.0)),
    ]))}


def conformal_halfwidth(abs_residuals: np.ndarray, coverage: float = NOMINAL_COVERAGE) -> float:
    """Split-conformal half-width (mmHg): the ceil((n + 1) * coverage)-th smallest |residual| of
    held-out data, so that prediction +/- it covers a new exchangeable case with probability >=
    coverage. inf when n is too small for that level."""
    r = np.sort(np.abs(np.asarray(abs_residuals, dtype=np.float64)))
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be in (0, 1), got {coverage}")
    k = math.ceil((r.size + 1) * coverage)
    return float(r[k - 1]) if k <= r.size else math.inf


@dataclass(frozen=True)
class TrainedBPModel:
    """A fitted model and what the registry needs to record about it.

    estimator: MultiOutputRegressor predicting the (SBP, DBP) change from the calibration (mmHg);
    save it with `estimator_to_bytes`. halfwidth_mmhg: conformal interval half-widths (SBP, DBP)
    at `coverage`. population_mean_mmhg: training windows' mean reference (SBP, DBP), the
    population-mean baseline. validation_mae_mmhg: candidate name -> [SBP, DBP] validation MAE.
    """

    estimator: MultiOutputRegressor
    name: str
    features: tuple[str, ...]
    hyperparameters: dict[str, Any]
    halfwidth_mmhg: tuple[float, float]
    coverage: float
    population_mean_mmhg: tuple[float, float]
    validation_mae_mmhg: dict[str, list[float]]
    n_train_windows: int
    n_validation_windows: int
    family: str = MODEL_FAMILY

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description for the registry (everything except the estimator)."""
        return {
            "family": self.family, "estimator": self.name, "features": list(self.features),
            "hyperparameters": self.hyperparameters, "interval_halfwidth_mmhg": dict(zip(TARGETS, self.halfwidth_mmhg)),
            "coverage": self.coverage, "population_mean_mmhg": dict(zip(TARGETS, self.population_mean_mmhg)),
            "validation_mae_mmhg": self.validation_mae_mmhg, "n_train_windows": self.n_train_windows,
            "n_validation_windows": self.n_validation_windows, "skops_trusted_types": list(SKOPS_TRUSTED_TYPES),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return repr(value)


def _mae(predicted: np.ndarray, reference: np.ndarray) -> list[float]:
    return np.mean(np.abs(predicted - reference), axis=0).tolist()


def train_bp_model(
    train: BPDataset, validation: BPDataset, *, coverage: float = NOMINAL_COVERAGE,
    random_state: int = RANDOM_STATE, candidates: Mapping[str, MultiOutputRegressor] | None = None,
    features: Sequence[str] = FEATURES,
) -> TrainedBPModel:
    """Fit every candidate on `train`, keep the one with the lowest validation MAE (mean of SBP
    and DBP, mmHg; ties go to the first listed), and set its interval half-widths by split
    conformal on the validation residuals. The chosen estimator is not refitted on validation,
    which the conformal step needs held out."""
    if not train.samples or not validation.samples:
        raise ValueError("training needs windows in both the train and the validation split")
    candidates = dict(candidate_estimators(random_state) if candidates is None else candidates)
    X_train, y_train = train.X(features), train.y()
    X_val, y_val = validation.X(features), validation.y()
    scores: dict[str, list[float]] = {}
    fitted: dict[str, MultiOutputRegressor] = {}
    for name, estimator in candidates.items():
        fitted[name] = estimator.fit(X_train, y_train)
        scores[name] = _mae(fitted[name].predict(X_val), y_val)
    best = min(scores, key=lambda name: float(np.mean(scores[name])))
    residuals = np.abs(fitted[best].predict(X_val) - y_val)
    halfwidth = (conformal_halfwidth(residuals[:, 0], coverage), conformal_halfwidth(residuals[:, 1], coverage))
    population = train.reference_bp().mean(axis=0)
    return TrainedBPModel(
        estimator=fitted[best], name=best, features=tuple(features),
        hyperparameters=_jsonable({step: params.get_params(deep=False)
                                   for step, params in fitted[best].estimator.steps}),
        halfwidth_mmhg=halfwidth, coverage=coverage,
        population_mean_mmhg=(float(population[0]), float(population[1])),
        validation_mae_mmhg=scores, n_train_windows=len(train.samples), n_validation_windows=len(validation.samples),
    )


def estimator_to_bytes(estimator: MultiOutputRegressor) -> bytes:
    """The fitted estimator as a skops file (bytes); hash and store it, never pickle it."""
    import skops.io as sio

    return sio.dumps(estimator)


def estimator_from_bytes(data: bytes) -> MultiOutputRegressor:
    """Load a skops file written by `estimator_to_bytes`, trusting only SKOPS_TRUSTED_TYPES beyond
    skops' defaults (skops raises UntrustedTypesFoundException for anything else)."""
    import skops.io as sio

    estimator = sio.loads(data, trusted=list(SKOPS_TRUSTED_TYPES))
    if not isinstance(estimator, MultiOutputRegressor):
        raise TypeError(f"expected a MultiOutputRegressor, the file holds {type(estimator).__name__}")
    return estimator


# ==============================================================================================
# Prediction
# ==============================================================================================


@dataclass(frozen=True)
class BPEstimate:
    """One window's estimate (mmHg) with its prediction interval [low, high] (mmHg)."""

    sbp_mmhg: float
    dbp_mmhg: float
    sbp_low_mmhg: float
    sbp_high_mmhg: float
    dbp_low_mmhg: float
    dbp_high_mmhg: float
    coverage: float


def predict_bp(estimator: MultiOutputRegressor, X: np.ndarray, calibration_bp: np.ndarray) -> np.ndarray:
    """Absolute predictions (n x 2, SBP and DBP, mmHg) = calibration BP (n x 2) + predicted change."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.atleast_2d(calibration_bp) + estimator.predict(X).reshape(-1, 2)


def estimate_bp(
    estimator: MultiOutputRegressor, features: FeatureDict, calibration: Calibration, *,
    halfwidth_mmhg: tuple[float, float], coverage: float = NOMINAL_COVERAGE, names: Sequence[str] = FEATURES,
) -> BPEstimate:
    """Estimate one usable window against a calibration; halfwidth_mmhg from the model's registry entry."""
    x = feature_vector(features, calibration.features, names)
    sbp, dbp = predict_bp(estimator, x, np.array([calibration.sbp_mmhg, calibration.dbp_mmhg]))[0].tolist()
    return BPEstimate(
        sbp_mmhg=sbp, dbp_mmhg=dbp,
        sbp_low_mmhg=sbp - halfwidth_mmhg[0], sbp_high_mmhg=sbp + halfwidth_mmhg[0],
        dbp_low_mmhg=dbp - halfwidth_mmhg[1], dbp_high_mmhg=dbp + halfwidth_mmhg[1],
        coverage=coverage,
    )


# ==============================================================================================
# Evaluation
# ==============================================================================================


def bhs_grade(within_5_pct: float, within_10_pct: float, within_15_pct: float) -> str:
    """British Hypertension Society grade from the % of absolute errors within 5 / 10 / 15 mmHg:
    A needs >= 60 / 85 / 95, B 50 / 75 / 90, C 40 / 65 / 85 (all three); otherwise D."""
    for grade, (p5, p10, p15) in BHS_GRADES:
        if within_5_pct >= p5 and within_10_pct >= p10 and within_15_pct >= p15:
            return grade
    return "D"


def iso_81060_2_pass(mean_error_mmhg: float, sd_error_mmhg: float) -> bool:
    """ISO 81060-2 style criterion 1: |mean error| <= 5 mmHg and SD of error <= 8 mmHg."""
    return abs(mean_error_mmhg) <= MAX_ABS_MEAN_ERROR_MMHG and sd_error_mmhg <= MAX_SD_ERROR_MMHG


def error_metrics(
    predicted: np.ndarray, reference: np.ndarray, *, records: Sequence[str] | np.ndarray | None = None,
    halfwidth_mmhg: float | np.ndarray | None = None,
) -> dict[str, Any]:
    """Agreement of predictions with references (both mmHg, one per window), JSON-ready.

    error = predicted - reference. n_windows; n_records (distinct `records`, None if not given);
    mean_error_mmhg; sd_error_mmhg (ddof=1; None for one window); mae_mmhg; within_{5,10,15}_mmhg_pct
    (% of windows with |error| <= 5/10/15); coverage_pct (% with |error| <= the interval
    half-width, None without intervals); bhs_grade; iso_81060_2_pass. Empty input -> counts 0,
    the rest None.
    """
    predicted = np.asarray(predicted, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    if predicted.shape != reference.shape:
        raise ValueError(f"{predicted.size} predictions for {reference.size} references")
    n = int(predicted.size)
    n_records = None if records is None else len(set(np.asarray(records, dtype=object).ravel().tolist()))
    if n == 0:
        return {"n_windows": 0, "n_records": n_records, "mean_error_mmhg": None, "sd_error_mmhg": None,
                "mae_mmhg": None, "within_5_mmhg_pct": None, "within_10_mmhg_pct": None,
                "within_15_mmhg_pct": None, "coverage_pct": None, "bhs_grade": None, "iso_81060_2_pass": None}
    error = predicted - reference
    absolute = np.abs(error)
    mean_error = float(error.mean())
    sd = float(error.std(ddof=1)) if n > 1 else None
    within = {limit: float(np.mean(absolute <= limit) * 100.0) for limit in (5, 10, 15)}
    coverage = None
    if halfwidth_mmhg is not None:
        coverage = float(np.mean(absolute <= np.asarray(halfwidth_mmhg, dtype=np.float64)) * 100.0)
    return {
        "n_windows": n,
        "n_records": n_records,
        "mean_error_mmhg": mean_error,
        "sd_error_mmhg": sd,
        "mae_mmhg": float(absolute.mean()),
        "within_5_mmhg_pct": within[5],
        "within_10_mmhg_pct": within[10],
        "within_15_mmhg_pct": within[15],
        "coverage_pct": coverage,
        "bhs_grade": bhs_grade(within[5], within[10], within[15]),
        "iso_81060_2_pass": None if sd is None else iso_81060_2_pass(mean_error, sd),
    }


BASELINES: tuple[str, ...] = ("carry_forward", "population_mean")


def evaluate(model: TrainedBPModel, dataset: BPDataset, *, cross_conformal: bool = False) -> dict[str, Any]:
    """Model and both baselines on every evaluated window of `dataset`, JSON-ready.

    report["sbp"|"dbp"]["model"|"carry_forward"|"population_mean"] = `error_metrics`;
    carry_forward predicts the calibration cuff value, population_mean the training windows' mean
    reference. Only the model has an interval (coverage). report["dataset"] = dataset.summary().

    cross_conformal: set it for the split the intervals were calibrated on (validation). There
    the model's own half-width covers ceil((n + 1) * level) / n of the windows by construction
    (92.3 % for 65 windows at 90 %), which says nothing about new patients; instead each record's
    windows are judged against the half-width computed from the other records' residuals
    (leave-one-record-out split conformal), an honest estimate of coverage on unseen records.
    """
    reference = dataset.reference_bp()
    calibration = dataset.calibration_bp()
    records = dataset.record_of_window()
    predicted = predict_bp(model.estimator, dataset.X(model.features), calibration) if dataset.samples else reference
    population = np.broadcast_to(np.array(model.population_mean_mmhg), reference.shape)
    report: dict[str, Any] = {
        "model": {"family": model.family, "estimator": model.name, "features": list(model.features)},
        "nominal_coverage_pct": model.coverage * 100.0,
        "coverage_method": ("leave-one-record-out split conformal on this split" if cross_conformal
                            else "model interval half-widths (split conformal on validation)"),
        "dataset": dataset.summary(),
    }
    for i, target in enumerate(TARGETS):
        halfwidth: float | np.ndarray = model.halfwidth_mmhg[i]
        if cross_conformal:
            residual = np.abs(predicted[:, i] - reference[:, i])
            halfwidth = np.empty(residual.size)
            for record in set(records.tolist()):
                mine = records == record
                halfwidth[mine] = conformal_halfwidth(residual[~mine], model.coverage) if (~mine).any() else math.inf
        report[target] = {
            "model": error_metrics(predicted[:, i], reference[:, i], records=records, halfwidth_mmhg=halfwidth),
            "carry_forward": error_metrics(calibration[:, i], reference[:, i], records=records),
            "population_mean": error_metrics(population[:, i], reference[:, i], records=records),
        }
        report[target]["model"]["interval_halfwidth_mmhg"] = _jsonable(model.halfwidth_mmhg[i])
    return report


def format_report(report: Mapping[str, Any]) -> str:
    """A plain-text table of an `evaluate` report: one row per target and predictor."""
    columns = (
        ("n", "n_windows", "{:d}"), ("rec", "n_records", "{:d}"), ("ME", "mean_error_mmhg", "{:+.2f}"),
        ("SD", "sd_error_mmhg", "{:.2f}"), ("MAE", "mae_mmhg", "{:.2f}"), ("<=5", "within_5_mmhg_pct", "{:.1f}"),
        ("<=10", "within_10_mmhg_pct", "{:.1f}"), ("<=15", "within_15_mmhg_pct", "{:.1f}"),
        ("cover", "coverage_pct", "{:.1f}"), ("BHS", "bhs_grade", "{}"), ("ISO", "iso_81060_2_pass", "{}"),
    )

    def cell(value: Any, fmt: str) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "pass" if value else "fail"
        return fmt.format(value)

    header = f"{'':4} {'predictor':16}" + "".join(f"{title:>8}" for title, _, _ in columns)
    model = report.get("model", {})
    lines = [
        f"model {model.get('estimator')} ({model.get('family')}); features: {', '.join(model.get('features', []))}",
        f"errors in mmHg (prediction - reference); within-N and coverage in % "
        f"(nominal {report.get('nominal_coverage_pct', 0):.0f} %; {report.get('coverage_method', '')})",
        header,
        "-" * len(header),
    ]
    for target in TARGETS:
        for predictor in ("model",) + BASELINES:
            metrics = report[target][predictor]
            lines.append(f"{target.upper():4} {predictor:16}" + "".join(
                f"{cell(metrics.get(key), fmt):>8}" for _, key, fmt in columns))
    summary = report.get("dataset")
    if summary:
        skipped = summary.get("records_skipped") or {}
        lines.append(
            f"{summary['records_evaluated']} of {summary['records']} records, {summary['windows_evaluated']} windows "
            f"evaluated; test windows skipped: {summary['test_windows_without_reference']} without reference, "
            f"{summary['test_windows_unusable']} unusable; records skipped: {len(skipped)}"
            + "".join(f"\n  {name}: {reason}" for name, reason in sorted(skipped.items()))
        )
    return "\n".join(lines)


# ==============================================================================================
# Promotion gates
# ==============================================================================================


def passes_promotion_gates(
    test_report: Mapping[str, Any], validation_report: Mapping[str, Any],
) -> tuple[bool, list[str]]:
    """Whether a candidate may be promoted, and in plain words every reason it may not.

    On the test split the model's MAE must be below both baselines' ("carry the calibration value
    forward" and "population mean") for SBP and for DBP. On the validation split, per target:
    |mean error| <= 5 mmHg, SD of error <= 8 mmHg, and interval coverage within 2 percentage
    points of nominal. Missing numbers fail. Returns (True, []) only when every check passes.
    Make validation_report with evaluate(..., cross_conformal=True): the in-sample coverage of
    the split the intervals were calibrated on is fixed by its size, not measured.
    """
    reasons: list[str] = []
    labels = {"carry_forward": "carry-forward baseline (predict the calibration value)",
              "population_mean": "population-mean baseline"}
    for target in TARGETS:
        tag = target.upper()
        test = test_report.get(target, {})
        model_mae = test.get("model", {}).get("mae_mmhg")
        for baseline in BASELINES:
            baseline_mae = test.get(baseline, {}).get("mae_mmhg")
            if model_mae is None or baseline_mae is None:
                reasons.append(f"{tag}: no test-split MAE to compare with the {labels[baseline]}")
            elif not model_mae < baseline_mae:
                reasons.append(f"{tag}: the model's test MAE {model_mae:.2f} mmHg does not beat the "
                               f"{labels[baseline]} ({baseline_mae:.2f} mmHg)")
        validation = validation_report.get(target, {}).get("model", {})
        mean_error, sd = validation.get("mean_error_mmhg"), validation.get("sd_error_mmhg")
        coverage, nominal = validation.get("coverage_pct"), validation_report.get("nominal_coverage_pct")
        if mean_error is None or abs(mean_error) > MAX_ABS_MEAN_ERROR_MMHG:
            reasons.append(f"{tag}: validation mean error {_fmt(mean_error)} mmHg is outside "
                           f"+/-{MAX_ABS_MEAN_ERROR_MMHG:g} mmHg")
        if sd is None or sd > MAX_SD_ERROR_MMHG:
            reasons.append(f"{tag}: validation SD of error {_fmt(sd)} mmHg is above {MAX_SD_ERROR_MMHG:g} mmHg")
        if coverage is None or nominal is None or abs(coverage - nominal) > MAX_COVERAGE_GAP_POINTS:
            reasons.append(f"{tag}: validation interval coverage {_fmt(coverage)} % is not within "
                           f"{MAX_COVERAGE_GAP_POINTS:g} points of the nominal {_fmt(nominal)} %")
    return not reasons, reasons


def passes_baseline_gates(
    test_report: Mapping[str, Any], validation_report: Mapping[str, Any],
) -> tuple[bool, list[str]]:
    """Gates for the carry-forward baseline (it cannot beat itself): on the test split it must beat
    the population-mean baseline, and on validation its interval coverage must be within 2 points
    of nominal, per target. Its mean error and SD are reported, not gated: it is the fallback."""
    reasons: list[str] = []
    for target in TARGETS:
        tag = target.upper()
        test = test_report.get(target, {})
        own, population = test.get("model", {}).get("mae_mmhg"), test.get("population_mean", {}).get("mae_mmhg")
        if own is None or population is None or not own < population:
            reasons.append(f"{tag}: test MAE {_fmt(own)} mmHg does not beat the population-mean baseline "
                           f"({_fmt(population)} mmHg)")
        coverage = validation_report.get(target, {}).get("model", {}).get("coverage_pct")
        nominal = validation_report.get("nominal_coverage_pct")
        if coverage is None or nominal is None or abs(coverage - nominal) > MAX_COVERAGE_GAP_POINTS:
            reasons.append(f"{tag}: validation interval coverage {_fmt(coverage)} % is not within "
                           f"{MAX_COVERAGE_GAP_POINTS:g} points of the nominal {_fmt(nominal)} %")
    return not reasons, reasons


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.2f}"


__all__ = [
    "BASELINES", "FEATURES", "SKOPS_TRUSTED_TYPES", "TARGETS", "BPDataset", "BPEstimate", "Calibration",
    "DataFingerprint", "RecordOutcome", "RecordSplit", "ReferenceBP", "TrainedBPModel", "WindowSample",
    "abp_beats", "bhs_grade", "calibration_from_windows", "candidate_estimators", "conformal_halfwidth",
    "dataset_from_outcomes", "error_metrics", "estimate_bp", "estimator_from_bytes", "estimator_to_bytes",
    "evaluate", "feature_vector", "fingerprint_records", "format_report", "is_calibration_window",
    "is_test_window", "iso_81060_2_pass", "load_dataset", "mean_features", "passes_promotion_gates",
    "predict_bp", "read_record", "record_names", "record_outcome", "reference_bp", "split_records",
    "target_vector",
]
