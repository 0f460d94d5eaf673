"""The fixed evaluation protocol of the BP models on recordings (challenge2015 layout: ECG lead II,
PLETH, ABP, 250 Hz), applied to each record of a folder; the split of records and the data's
fingerprint. No Django inside; the only I/O is `load_dataset` and `fingerprint_records`, which
read a folder of WFDB records.

- the PLETH latency of the bedside monitor is removed first (`with_pleth_delay_removed`), so the
  windows are one-clock windows like a wearable sends; ABP stays on the ECG clock;
- non-overlapping 30-s windows from t = 0 (a window must lie wholly inside the delay-corrected
  recording, so a 300-s record, 299.1 s after the correction, has windows starting 0..240 s);
- reference SBP/DBP of a window = median of its ABP beat values (>= 5 beats, else the window
  has no reference and is skipped; monitoring/bp/arterial_reference.py);
- windows starting before 60 s are the calibration: cuff reading = mean of their references;
  calibration features = mean of the features of those of them the quality gate calls usable;
- test windows start at 60 s and end by 300 s; only usable windows (quality gate of
  monitoring/signals/pipeline.py) with a reference are evaluated;
- a record with no calibration reference or no usable calibration window is skipped and counted
  (an estimate needs a calibration: the system would flag it, not guess).

These are ICU patients with arterial lines, not ambulatory wearable users, and the test windows
lie within 5 minutes of the calibration: reports must say so.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from monitoring.bp.arterial_reference import ReferenceBP, hold_last, reference_bp
from monitoring.bp.feature_deltas import (
    FEATURES,
    Calibration,
    FeatureDict,
    calibration_from_windows,
    feature_vector,
    target_vector,
)
from monitoring.signals.pipeline import analyse_window
from monitoring.signals.recordings import (
    CHALLENGE2015_PLETH_DELAY_S,
    Recording,
    iter_windows,
    with_pleth_delay_removed,
)

WINDOW_S = 30.0  # window length (s), windows back to back from t = 0
CALIBRATION_END_S = 60.0  # windows starting before this (s) are the record's calibration
TEST_START_S = 60.0  # test windows start at or after this (s) ...
TEST_END_S = 300.0  # ... and end by this (s)

SPLIT_SEED = 2015
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)  # train / validation / test, by record


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

    The recording must carry ABP. Windows are analysed by monitoring.signals.pipeline.analyse_window.
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
        ecg=hold_last(signals[:, ecg_index]), ecg_lead=names[ecg_index], ecg_fs=fs,
        ppg=hold_last(signals[:, names.index("PLETH")]), ppg_fs=fs,
        abp=hold_last(signals[:, names.index("ABP")]), abp_fs=fs,
    )



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
