"""Promotion gates: when a trained BP model may serve (ISO 81060-2, interval coverage, and beating
the honest baselines). No Django inside.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitoring.bp.accuracy import BASELINES, MAX_ABS_MEAN_ERROR_MMHG, MAX_SD_ERROR_MMHG
from monitoring.bp.feature_deltas import TARGETS

MAX_COVERAGE_GAP_POINTS = 2.0  # interval coverage within this many percentage points of nominal


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

