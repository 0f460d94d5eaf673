"""Accuracy of BP estimates against a reference (mmHg; error = estimate - reference): error metrics,
the BHS grade and the ISO 81060-2 criterion, a model's evaluation on a dataset and its printed
report. No Django inside.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monitoring.bp.conformal import conformal_halfwidth
from monitoring.bp.feature_deltas import TARGETS
from monitoring.bp.learning import TrainedBPModel, jsonable, predict_bp
from monitoring.bp.protocol import BPDataset

MAX_ABS_MEAN_ERROR_MMHG = 5.0  # ISO 81060-2 criterion 1: |mean error| <= 5 mmHg ...
MAX_SD_ERROR_MMHG = 8.0  # ... and SD of error <= 8 mmHg
BHS_GRADES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("A", (60.0, 85.0, 95.0)),  # % of errors within 5 / 10 / 15 mmHg
    ("B", (50.0, 75.0, 90.0)),
    ("C", (40.0, 65.0, 85.0)),
)


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
        report[target]["model"]["interval_halfwidth_mmhg"] = jsonable(model.halfwidth_mmhg[i])
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
