"""Prediction interval of the MEAN of n wearable BP estimates (the therapy engine decides on a
week's mean, not on one window).

No Django, no clock, no I/O: plain values in, plain values out. Units: blood pressure and every
error, SD and half-width in mmHg; error = estimate - reference.

Error model. The error of one estimate of record (patient/calibration) r is

    e = c_r + w,

c_r a part shared by every estimate of that record (the calibration offset, and any bias of the
model, which is shared by all records), w a per-window part. With sigma_c the root-mean-square of
the shared part over records (about 0, so a systematic bias counts in it) and sigma_w the SD of
the per-window part, the mean of n estimates of one record has an error of RMS
sqrt(sigma_c^2 + sigma_w^2 / n), and its interval half-width at level L is

    k * sqrt(sigma_c^2 + sigma_w^2 / n)   (mmHg),

k the multiplier: the Gaussian z_{(1+L)/2} (1.6449 at 90 %) by default, or one calibrated
conformally on the records (`fit_mean_error_model`): the ceil((R + 1) L)-th smallest of the R
records' |mean error| / sqrt(sigma_c^2 + sigma_w^2 / n_r).

Honest estimation (`out_of_record_errors`): every window's error comes from a model that never
saw its record. `mean_interval_coverage` then checks the interval on each record with sigma_c,
sigma_w and k re-estimated without that record (cross-conformal), so the coverage it reports is
that of a record the interval was not fitted on.

The windows here are the challenge2015 protocol's test windows (60-300 s of 5-minute ICU
recordings, monitoring/bp/protocol.py), so sigma_c is the shared error of ONE calibration over minutes;
how the shared part drifts over the days and weeks of a home wearer is not measured by them.
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.multioutput import MultiOutputRegressor

from monitoring.bp import conformal, feature_deltas, learning, protocol

DEFAULT_LEVEL = 0.9
TARGETS: tuple[str, str] = ("sbp", "dbp")

METHOD = (
    "Errors of each window from a model that never saw its record (records outside the model's "
    "training split predicted by the registered model, each training-split record by the same "
    "configuration refitted without it; the carry-forward baseline applied as is); per target, the "
    "per-window SD is the pooled within-record SD, the shared SD the root-mean-square of the "
    "per-record mean error less the within-record part (floored at 0), and the multiplier the "
    "split-conformal quantile of the records' standardised mean errors at the interval level; coverage is "
    "leave-one-record-out (components and multiplier refitted without the record judged)."
)


def gaussian_multiplier(level: float) -> float:
    """z_{(1 + level) / 2} of the standard normal (1.6449 at level 0.9): the two-sided multiplier."""
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    return NormalDist().inv_cdf((1.0 + level) / 2.0)


def _finite_non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0.0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return number


@dataclass(frozen=True, kw_only=True)
class MeanErrorModel:
    """Error components of a model's BP estimates, and the interval of the mean they give.

    level: interval level (0.9). *_shared_sd_mmhg: RMS over records of the error shared by every
    estimate of one record/calibration, bias included (mmHg). *_window_sd_mmhg: SD of the
    per-window error within a record (mmHg). *_multiplier: half-width multiplier; None means the
    Gaussian z_{(1+level)/2} (1.6449 at 0.9). Every value must be finite and >= 0 (multipliers > 0).
    """

    level: float = DEFAULT_LEVEL
    sbp_shared_sd_mmhg: float
    sbp_window_sd_mmhg: float
    dbp_shared_sd_mmhg: float
    dbp_window_sd_mmhg: float
    sbp_multiplier: float | None = None
    dbp_multiplier: float | None = None

    def __post_init__(self) -> None:
        gaussian_multiplier(self.level)  # validates the level
        for target in TARGETS:
            for part in ("shared", "window"):
                name = f"{target}_{part}_sd_mmhg"
                object.__setattr__(self, name, _finite_non_negative(name, getattr(self, name)))
            name = f"{target}_multiplier"
            value = getattr(self, name)
            if value is not None:
                number = _finite_non_negative(name, value)
                if number == 0.0:
                    raise ValueError(f"{name} must be > 0, got {value!r}")
                object.__setattr__(self, name, number)

    def shared_sd_mmhg(self, target: str) -> float:
        """The shared part's RMS (mmHg) for 'sbp' or 'dbp'."""
        return float(getattr(self, f"{_target(target)}_shared_sd_mmhg"))

    def window_sd_mmhg(self, target: str) -> float:
        """The per-window part's SD (mmHg) for 'sbp' or 'dbp'."""
        return float(getattr(self, f"{_target(target)}_window_sd_mmhg"))

    def multiplier(self, target: str) -> float:
        """The half-width multiplier for 'sbp' or 'dbp' (calibrated, else the Gaussian z at `level`)."""
        value = getattr(self, f"{_target(target)}_multiplier")
        return gaussian_multiplier(self.level) if value is None else float(value)

    def halfwidth_mmhg(self, target: str, n: int) -> float:
        """Half-width (mmHg) of the `level` (90 %) prediction interval of the mean of n estimates of
        one patient/calibration: multiplier * sqrt(shared_sd^2 + window_sd^2 / n). It shrinks with n
        toward multiplier * shared_sd and never goes below it. Raises ValueError for n < 1 (or not
        an integer) and for a target other than 'sbp' / 'dbp'."""
        target = _target(target)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise ValueError(f"n must be an integer number of estimates, got {n!r}")
        if n < 1:
            raise ValueError(f"the mean of n estimates needs n >= 1, got {n}")
        shared, window = self.shared_sd_mmhg(target), self.window_sd_mmhg(target)
        return self.multiplier(target) * math.sqrt(shared * shared + window * window / int(n))


def _target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target must be 'sbp' or 'dbp', got {target!r}")
    return target


def from_metrics(metrics: Mapping[str, Any] | None) -> MeanErrorModel | None:
    """The MeanErrorModel stored by training: `metrics` is a BPModelVersion's metrics (its
    "mean_interval" entry is read) or that entry itself. None when absent, malformed, or when any
    value is missing or non-finite (a caller then treats every error as shared)."""
    if not isinstance(metrics, Mapping):
        return None
    entry = metrics.get("mean_interval", metrics)
    if not isinstance(entry, Mapping):
        return None
    try:
        values: dict[str, Any] = {"level": float(entry["level"])}
        for target in TARGETS:
            part = entry[target]
            values[f"{target}_shared_sd_mmhg"] = float(part["shared_sd_mmhg"])
            values[f"{target}_window_sd_mmhg"] = float(part["window_sd_mmhg"])
            multiplier = part.get("multiplier")
            values[f"{target}_multiplier"] = None if multiplier is None else float(multiplier)
        if not all(v is None or math.isfinite(v) for v in values.values()):
            return None
        return MeanErrorModel(**values)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


# ==============================================================================================
# Out-of-record errors
# ==============================================================================================


@dataclass(frozen=True, eq=False)
class RecordErrors:
    """Per-window errors (estimate - reference, mmHg) with the record each window belongs to.

    record: (n,) record names; error_mmhg: (n, 2) SBP and DBP errors. All values finite.
    """

    record: np.ndarray
    error_mmhg: np.ndarray

    def __post_init__(self) -> None:
        record = np.asarray(self.record, dtype=object).ravel()
        error = np.asarray(self.error_mmhg, dtype=np.float64).reshape(-1, 2)
        if record.size != error.shape[0]:
            raise ValueError(f"{record.size} record names for {error.shape[0]} errors")
        if not np.isfinite(error).all():
            raise ValueError("errors must be finite (mmHg)")
        object.__setattr__(self, "record", record)
        object.__setattr__(self, "error_mmhg", error)

    @property
    def records(self) -> tuple[str, ...]:
        """Distinct records in order of first appearance."""
        return tuple(dict.fromkeys(self.record.tolist()))

    def without(self, record: str) -> RecordErrors:
        """The same errors without one record's windows."""
        keep = self.record != record
        return RecordErrors(self.record[keep], self.error_mmhg[keep])

    def of(self, target: str) -> np.ndarray:
        """The errors (mmHg) of 'sbp' or 'dbp'."""
        return self.error_mmhg[:, TARGETS.index(_target(target))]


def record_groups(records: Sequence[str], n_folds: int | None = None) -> list[tuple[str, ...]]:
    """Records grouped into folds: one record per fold (n_folds None: leave-one-record-out), else
    n_folds groups dealt round-robin over the sorted names (deterministic)."""
    names = sorted(set(records))
    if n_folds is None or n_folds >= len(names):
        return [(name,) for name in names]
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    return [tuple(names[i::n_folds]) for i in range(n_folds)]


def out_of_record_errors(
    estimator: MultiOutputRegressor, dataset: protocol.BPDataset, *, trained_on: Collection[str] = (),
    extra_training: Sequence[protocol.WindowSample] = (), features: Sequence[str] = feature_deltas.FEATURES,
    n_folds: int | None = None,
) -> RecordErrors:
    """Errors (mmHg) of every window of `dataset`, each predicted by a model that never saw its record.

    estimator: the fitted, registered estimator. trained_on: the dataset's records it was fitted
    on (with `extra_training`, e.g. production windows). A record outside `trained_on` is
    predicted by `estimator` itself; the records of `trained_on` are held out fold by fold
    (`record_groups`: one record per fold by default) and predicted by a clone of `estimator`
    (same configuration and random_state) refitted on the rest of `trained_on` plus
    `extra_training`. For the carry-forward baseline pass trained_on=() (it learns nothing)."""
    if not dataset.samples:
        return RecordErrors(np.empty(0, dtype=object), np.empty((0, 2)))
    names = dataset.record_of_window()
    X, reference, calibration = dataset.X(features), dataset.reference_bp(), dataset.calibration_bp()
    predicted = np.full(reference.shape, np.nan)
    trained = set(trained_on)
    unseen = np.array([name not in trained for name in names.tolist()], dtype=bool)
    if unseen.any():
        predicted[unseen] = learning.predict_bp(estimator, X[unseen], calibration[unseen])
    held = sorted(trained & set(names.tolist()))
    if held:
        training = dataset.subset(trained)
        extra = protocol.BPDataset(samples=tuple(extra_training), outcomes=())
        X_extra, y_extra = extra.X(features), extra.y()
        train_names = training.record_of_window()
        X_train, y_train = training.X(features), training.y()
        for group in record_groups(held, n_folds):
            out = np.isin(train_names, list(group))
            fitted = clone(estimator).fit(np.vstack([X_train[~out], X_extra]), np.vstack([y_train[~out], y_extra]))
            mine = np.isin(names, list(group))
            predicted[mine] = learning.predict_bp(fitted, X[mine], calibration[mine])
    return RecordErrors(names, predicted - reference)


# ==============================================================================================
# Components, multiplier, coverage
# ==============================================================================================


@dataclass(frozen=True)
class Components:
    """Error components of one target (mmHg) and what they were estimated from."""

    shared_sd_mmhg: float
    window_sd_mmhg: float
    n_records: int
    n_windows: int


def error_components(errors: Sequence[float] | np.ndarray, records: Sequence[str] | np.ndarray) -> Components:
    """sigma_c and sigma_w (mmHg) of one target's errors (mmHg), one per window, grouped by record.

    sigma_w^2 = pooled within-record variance: sum over records of sum (e - mean_r)^2 over
    sum (n_r - 1) (records of one window add nothing to it; 0 when no record has two).
    sigma_c^2 = mean over records of mean_r^2 less sigma_w^2 * mean(1 / n_r), floored at 0: the
    per-record mean error's mean square about 0 is sigma_c^2 + sigma_w^2 / n_r on average, so a
    bias shared by all records counts in sigma_c. Every record weighs the same.
    Raises ValueError on no errors, a non-finite error, or a length mismatch."""
    e = np.asarray(errors, dtype=np.float64).ravel()
    names = np.asarray(records, dtype=object).ravel()
    if e.size == 0:
        raise ValueError("no errors to estimate the components from")
    if e.size != names.size:
        raise ValueError(f"{e.size} errors for {names.size} record names")
    if not np.isfinite(e).all():
        raise ValueError("errors must be finite (mmHg)")
    _, index = np.unique(names.astype(str), return_inverse=True)
    counts = np.bincount(index).astype(np.float64)
    means = np.bincount(index, weights=e) / counts
    within = float(np.sum((e - means[index]) ** 2))
    dof = float(np.sum(counts - 1.0))
    window_var = within / dof if dof > 0 else 0.0
    shared_var = max(float(np.mean(means**2)) - window_var * float(np.mean(1.0 / counts)), 0.0)
    return Components(math.sqrt(shared_var), math.sqrt(window_var), int(counts.size), int(e.size))


def _record_means(errors: np.ndarray, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, index = np.unique(records.astype(str), return_inverse=True)
    counts = np.bincount(index)
    return np.bincount(index, weights=errors) / counts, counts


def fit_mean_error_model(
    errors: RecordErrors, *, level: float = DEFAULT_LEVEL, calibrate: bool = True,
) -> MeanErrorModel:
    """MeanErrorModel from out-of-record errors: `error_components` per target and, with
    calibrate, a conformal multiplier per target = the ceil((R + 1) level)-th smallest of the R
    records' |mean error| / sqrt(sigma_c^2 + sigma_w^2 / n_r); without calibrate (or when both
    components are 0), the Gaussian z. Raises ValueError when R is too small for that level
    (a conformal quantile needs R >= level / (1 - level), 9 records at 0.9) or the errors are empty."""
    gaussian_multiplier(level)
    values: dict[str, Any] = {"level": level}
    for target in TARGETS:
        e = errors.of(target)
        parts = error_components(e, errors.record)
        values[f"{target}_shared_sd_mmhg"] = parts.shared_sd_mmhg
        values[f"{target}_window_sd_mmhg"] = parts.window_sd_mmhg
        if calibrate and (parts.shared_sd_mmhg > 0 or parts.window_sd_mmhg > 0):
            means, counts = _record_means(e, errors.record)
            scale = np.sqrt(parts.shared_sd_mmhg**2 + parts.window_sd_mmhg**2 / counts)
            multiplier = conformal.conformal_halfwidth(np.abs(means) / scale, level)
            if not math.isfinite(multiplier):
                raise ValueError(f"{means.size} records are too few for a conformal multiplier at level {level}")
            values[f"{target}_multiplier"] = max(multiplier, 1e-12)
    return MeanErrorModel(**values)


@dataclass(frozen=True)
class MeanIntervalCoverage:
    """Share of records (%) whose mean error lies inside the interval of the mean, per target."""

    sbp_pct: float
    dbp_pct: float
    n_records: int
    n_windows: int

    def as_dict(self) -> dict[str, Any]:
        return {"sbp_pct": self.sbp_pct, "dbp_pct": self.dbp_pct, "n_records": self.n_records,
                "n_windows": self.n_windows}


def mean_interval_coverage(
    errors: RecordErrors, *, level: float = DEFAULT_LEVEL, calibrate: bool = True,
    model: MeanErrorModel | None = None,
) -> MeanIntervalCoverage:
    """Coverage of the interval of the mean, record by record: the record's mean error (mean of
    its windows' estimates - mean of their references, mmHg) against halfwidth_mmhg(target, n_r),
    n_r its number of windows. With model None (the honest default) the MeanErrorModel judging a
    record is fitted by `fit_mean_error_model` WITHOUT that record (leave-one-record-out); pass a
    model to judge every record with it (in-sample if it was fitted on these errors)."""
    names = errors.records
    if not names:
        raise ValueError("no records to measure coverage on")
    inside = {target: 0 for target in TARGETS}
    for name in names:
        judge = model if model is not None else fit_mean_error_model(errors.without(name), level=level, calibrate=calibrate)
        mine = errors.record == name
        n = int(mine.sum())
        for target in TARGETS:
            if abs(float(np.mean(errors.of(target)[mine]))) <= judge.halfwidth_mmhg(target, n):
                inside[target] += 1
    return MeanIntervalCoverage(
        sbp_pct=100.0 * inside["sbp"] / len(names), dbp_pct=100.0 * inside["dbp"] / len(names),
        n_records=len(names), n_windows=int(errors.record.size),
    )


def mean_interval_metrics(
    errors: RecordErrors, *, level: float = DEFAULT_LEVEL, method: str = METHOD,
) -> dict[str, Any]:
    """The registry's "mean_interval" entry (JSON-ready; every SD and half-width in mmHg):
    {"level", "method", "sbp": {"shared_sd_mmhg", "window_sd_mmhg", "multiplier",
    "gaussian_multiplier", "halfwidth_mmhg": {"1", "12", "14", "100"}}, "dbp": {...},
    "coverage": {"sbp_pct", "dbp_pct", "n_records", "n_windows"} (leave-one-record-out, calibrated
    multiplier), "coverage_gaussian": the same with the Gaussian z, "n_records", "n_windows"}.
    `from_metrics` reads it back. When there are too few records for the conformal multiplier
    (with one record left out), the entry holds "unavailable" (the reason) instead of the figures,
    and `from_metrics` returns None for it."""
    entry: dict[str, Any] = {"level": level, "method": method}
    try:
        model = fit_mean_error_model(errors, level=level)
        coverage = mean_interval_coverage(errors, level=level)
        coverage_gaussian = mean_interval_coverage(errors, level=level, calibrate=False)
    except ValueError as exc:
        return {**entry, "unavailable": str(exc), "n_records": len(errors.records),
                "n_windows": int(errors.record.size)}
    for target in TARGETS:
        entry[target] = {
            "shared_sd_mmhg": model.shared_sd_mmhg(target),
            "window_sd_mmhg": model.window_sd_mmhg(target),
            "multiplier": model.multiplier(target),
            "gaussian_multiplier": gaussian_multiplier(level),
            "halfwidth_mmhg": {str(n): model.halfwidth_mmhg(target, n) for n in (1, 12, 14, 100)},
        }
    entry["coverage"] = coverage.as_dict()
    entry["coverage_gaussian"] = coverage_gaussian.as_dict()
    entry["n_records"] = len(errors.records)
    entry["n_windows"] = int(errors.record.size)
    return entry


def mean_error_model_leave_record_out(
    estimator: MultiOutputRegressor, dataset: protocol.BPDataset, *, trained_on: Collection[str] = (),
    extra_training: Sequence[protocol.WindowSample] = (), features: Sequence[str] = feature_deltas.FEATURES,
    n_folds: int | None = None, level: float = DEFAULT_LEVEL,
) -> tuple[MeanErrorModel, RecordErrors]:
    """`out_of_record_errors` then `fit_mean_error_model`: the components (mmHg) of `estimator`
    measured on records it never saw, and the errors they came from (for `mean_interval_coverage`)."""
    errors = out_of_record_errors(estimator, dataset, trained_on=trained_on, extra_training=extra_training,
                                  features=features, n_folds=n_folds)
    return fit_mean_error_model(errors, level=level), errors


__all__ = [
    "DEFAULT_LEVEL", "METHOD", "Components", "MeanErrorModel", "MeanIntervalCoverage", "RecordErrors",
    "error_components", "fit_mean_error_model", "from_metrics", "gaussian_multiplier",
    "mean_error_model_leave_record_out", "mean_interval_coverage", "mean_interval_metrics",
    "out_of_record_errors", "record_groups",
]
