"""The interval of the mean of n BP estimates (monitoring/bp/mean_interval.py): the error
components are recovered from synthetic errors whose true values are known, the half-width shrinks
with n toward the shared part and never below it, bad inputs are refused, the registry entry reads
back, and training on the shipped recordings stores it for both registered versions."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from django.conf import settings
from sklearn.linear_model import Ridge
from sklearn.multioutput import MultiOutputRegressor

from monitoring.bp import arterial_reference, feature_deltas, learning, protocol
from monitoring.bp import mean_interval as mi

Z_90 = 1.6449


def synthetic_errors(*, shared_sd: float, window_sd: float, n_records: int = 400, bias: float = 0.0,
                     seed: int = 0) -> mi.RecordErrors:
    """Errors e = bias + c_r + w (mmHg), c_r ~ N(0, shared_sd) per record, w ~ N(0, window_sd) per
    window, 1 to 12 windows per record; DBP gets half the SDs."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 13, size=n_records)
    records = np.repeat([f"r{i:04d}" for i in range(n_records)], counts)
    columns = []
    for scale in (1.0, 0.5):
        shared = np.repeat(rng.normal(0.0, shared_sd * scale, n_records), counts)
        columns.append(bias + shared + rng.normal(0.0, window_sd * scale, records.size))
    return mi.RecordErrors(records, np.column_stack(columns))


def model(**overrides) -> mi.MeanErrorModel:
    values = dict(sbp_shared_sd_mmhg=6.0, sbp_window_sd_mmhg=8.0, dbp_shared_sd_mmhg=4.0, dbp_window_sd_mmhg=5.0)
    return mi.MeanErrorModel(**{**values, **overrides})


# ---------------------------------------------------------------------------------------------
# Estimating the components
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shared_sd, window_sd", [(6.0, 4.0), (3.0, 9.0), (8.0, 8.0)])
def test_the_components_are_recovered_from_errors_whose_true_values_are_known(shared_sd, window_sd):
    # 2,000 records: the shared SD's relative standard error is ~7 % in the hardest case (3 vs 9,
    # measured over 100 seeds), the window SD's under 1 %; the tolerances are 3 standard errors.
    errors = synthetic_errors(shared_sd=shared_sd, window_sd=window_sd, n_records=2000)
    fitted = mi.fit_mean_error_model(errors, calibrate=False)
    assert fitted.sbp_shared_sd_mmhg == pytest.approx(shared_sd, rel=0.2)
    assert fitted.sbp_window_sd_mmhg == pytest.approx(window_sd, rel=0.03)
    assert fitted.dbp_shared_sd_mmhg == pytest.approx(shared_sd / 2, rel=0.2)
    assert fitted.dbp_window_sd_mmhg == pytest.approx(window_sd / 2, rel=0.03)


def test_no_shared_error_gives_a_shared_part_near_zero_never_negative():
    errors = synthetic_errors(shared_sd=0.0, window_sd=5.0, n_records=2000)
    parts = mi.error_components(errors.of("sbp"), errors.record)
    assert 0.0 <= parts.shared_sd_mmhg < 1.2  # at most 0.9 mmHg over 100 seeds
    assert parts.window_sd_mmhg == pytest.approx(5.0, rel=0.03)
    assert (parts.n_records, parts.n_windows) == (2000, errors.record.size)


def test_a_bias_shared_by_all_records_counts_in_the_shared_part():
    errors = synthetic_errors(shared_sd=3.0, window_sd=4.0, bias=4.0)
    parts = mi.error_components(errors.of("sbp"), errors.record)
    assert parts.shared_sd_mmhg == pytest.approx(5.0, rel=0.1)  # sqrt(3^2 + 4^2)
    assert parts.window_sd_mmhg == pytest.approx(4.0, rel=0.05)


def test_the_components_match_a_hand_computed_example():
    # record a: errors 1, 3 (mean 2); record b: errors -1, -1, 2 (mean 0)
    parts = mi.error_components([1.0, 3.0, -1.0, -1.0, 2.0], ["a", "a", "b", "b", "b"])
    window_var = (1 + 1 + 1 + 1 + 4) / (1 + 2)  # pooled within-record variance, 8/3
    shared_var = (2**2 + 0**2) / 2 - window_var * (1 / 2 + 1 / 3) / 2
    assert parts.window_sd_mmhg == pytest.approx(math.sqrt(window_var))
    assert parts.shared_sd_mmhg == pytest.approx(math.sqrt(shared_var))


def test_gaussian_errors_give_a_calibrated_multiplier_near_z_and_honest_coverage_near_nominal():
    errors = synthetic_errors(shared_sd=5.0, window_sd=6.0, seed=1)
    fitted = mi.fit_mean_error_model(errors)
    assert fitted.multiplier("sbp") == pytest.approx(Z_90, abs=0.25)
    coverage = mi.mean_interval_coverage(errors)
    assert 85.0 <= coverage.sbp_pct <= 95.0 and 85.0 <= coverage.dbp_pct <= 95.0
    assert coverage.n_records == 400


def test_a_record_is_judged_by_an_interval_fitted_without_it():
    # 20 records with a small shared error, one with a huge one: left out, its own error cannot
    # widen the interval that judges it, so it falls outside.
    errors = synthetic_errors(shared_sd=1.0, window_sd=1.0, n_records=20, seed=2)
    outlier = mi.RecordErrors(np.array(["big"] * 4, dtype=object), np.full((4, 2), 50.0))
    both = mi.RecordErrors(np.concatenate([errors.record, outlier.record]),
                           np.vstack([errors.error_mmhg, outlier.error_mmhg]))
    honest = mi.mean_interval_coverage(both)
    assert honest.sbp_pct <= 100.0 * 20 / 21
    in_sample = mi.mean_interval_coverage(both, model=mi.fit_mean_error_model(both, calibrate=False))
    assert in_sample.n_records == 21


def test_too_few_records_for_a_conformal_multiplier_are_refused_and_the_entry_says_so():
    errors = synthetic_errors(shared_sd=2.0, window_sd=3.0, n_records=5)
    with pytest.raises(ValueError, match="too few"):
        mi.fit_mean_error_model(errors)
    entry = mi.mean_interval_metrics(errors)
    assert "too few" in entry["unavailable"] and mi.from_metrics(entry) is None


# ---------------------------------------------------------------------------------------------
# The half-width of the mean
# ---------------------------------------------------------------------------------------------


def test_the_halfwidth_is_the_gaussian_formula_by_default():
    m = model()
    assert m.level == 0.9
    assert m.multiplier("sbp") == pytest.approx(Z_90, abs=1e-4)
    assert m.halfwidth_mmhg("sbp", 1) == pytest.approx(Z_90 * 10.0, abs=1e-3)  # sqrt(6^2 + 8^2)
    assert m.halfwidth_mmhg("dbp", 4) == pytest.approx(Z_90 * math.sqrt(16 + 25 / 4), abs=1e-3)
    calibrated = model(sbp_multiplier=2.0)
    assert calibrated.halfwidth_mmhg("sbp", 1) == pytest.approx(20.0)
    assert calibrated.multiplier("dbp") == pytest.approx(Z_90, abs=1e-4)


@pytest.mark.parametrize("target", ["sbp", "dbp"])
def test_the_halfwidth_shrinks_with_n_toward_the_shared_part_and_never_below_it(target):
    m = model(dbp_multiplier=1.9)
    floor = m.multiplier(target) * m.shared_sd_mmhg(target)
    widths = [m.halfwidth_mmhg(target, n) for n in (1, 2, 3, 12, 14, 100, 2016, 10**9)]
    assert all(a > b for a, b in zip(widths, widths[1:]))
    assert all(w >= floor for w in widths)
    assert widths[-1] == pytest.approx(floor, rel=1e-6)


def test_with_no_shared_part_the_halfwidth_falls_as_one_over_root_n():
    m = model(sbp_shared_sd_mmhg=0.0)
    assert m.halfwidth_mmhg("sbp", 16) == pytest.approx(m.halfwidth_mmhg("sbp", 1) / 4)


@pytest.mark.parametrize("n", [0, -1, 1.5, True, None, "12"])
def test_fewer_than_one_estimate_or_a_non_integer_count_is_refused(n):
    with pytest.raises(ValueError):
        model().halfwidth_mmhg("sbp", n)


def test_an_unknown_target_is_refused():
    with pytest.raises(ValueError, match="sbp"):
        model().halfwidth_mmhg("map", 3)


@pytest.mark.parametrize("overrides", [
    {"sbp_shared_sd_mmhg": math.nan}, {"sbp_window_sd_mmhg": math.inf}, {"dbp_shared_sd_mmhg": -1.0},
    {"dbp_window_sd_mmhg": None}, {"sbp_multiplier": math.nan}, {"dbp_multiplier": 0.0}, {"level": 1.0},
    {"level": math.nan},
])
def test_non_finite_or_negative_components_are_refused(overrides):
    with pytest.raises(ValueError):
        model(**overrides)


def test_non_finite_errors_are_refused():
    with pytest.raises(ValueError, match="finite"):
        mi.error_components([1.0, math.nan], ["a", "a"])
    with pytest.raises(ValueError, match="finite"):
        mi.RecordErrors(np.array(["a", "b"], dtype=object), np.array([[1.0, 2.0], [math.inf, 0.0]]))
    with pytest.raises(ValueError):
        mi.error_components([], [])


# ---------------------------------------------------------------------------------------------
# The registry entry
# ---------------------------------------------------------------------------------------------


def test_the_registry_entry_reads_back_through_json():
    errors = synthetic_errors(shared_sd=5.0, window_sd=6.0, n_records=60)
    entry = json.loads(json.dumps(mi.mean_interval_metrics(errors)))
    assert {"level", "method", "sbp", "dbp", "coverage", "n_records", "n_windows"} <= set(entry)
    assert set(entry["coverage"]) >= {"sbp_pct", "dbp_pct", "n_records"}
    read = mi.from_metrics({"mean_interval": entry, "test": {}})
    assert read is not None and read == mi.from_metrics(entry)
    fitted = mi.fit_mean_error_model(errors)
    for target in ("sbp", "dbp"):
        for n in (1, 12, 14, 100):
            assert read.halfwidth_mmhg(target, n) == pytest.approx(fitted.halfwidth_mmhg(target, n))
            assert entry[target]["halfwidth_mmhg"][str(n)] == pytest.approx(fitted.halfwidth_mmhg(target, n))


def test_an_entry_without_a_multiplier_uses_the_gaussian_one():
    entry = {"level": 0.9, "sbp": {"shared_sd_mmhg": 3.0, "window_sd_mmhg": 4.0},
             "dbp": {"shared_sd_mmhg": 2.0, "window_sd_mmhg": 2.0}}
    assert mi.from_metrics(entry).halfwidth_mmhg("sbp", 1) == pytest.approx(Z_90 * 5.0, abs=1e-3)


@pytest.mark.parametrize("metrics", [
    None, {}, {"test": {}}, {"mean_interval": None}, {"mean_interval": "x"},
    {"mean_interval": {"level": 0.9, "sbp": {"shared_sd_mmhg": 3.0, "window_sd_mmhg": 4.0}}},
    {"mean_interval": {"level": 0.9, "sbp": {"shared_sd_mmhg": math.nan, "window_sd_mmhg": 4.0},
                       "dbp": {"shared_sd_mmhg": 2.0, "window_sd_mmhg": 2.0}}},
    {"mean_interval": {"level": 0.9, "sbp": {"shared_sd_mmhg": None, "window_sd_mmhg": 4.0},
                       "dbp": {"shared_sd_mmhg": 2.0, "window_sd_mmhg": 2.0}}},
    {"mean_interval": {"level": 0.9, "sbp": {"shared_sd_mmhg": 3.0, "window_sd_mmhg": 4.0, "multiplier": math.inf},
                       "dbp": {"shared_sd_mmhg": 2.0, "window_sd_mmhg": 2.0}}},
    {"mean_interval": {"level": math.nan, "sbp": {"shared_sd_mmhg": 3.0, "window_sd_mmhg": 4.0},
                       "dbp": {"shared_sd_mmhg": 2.0, "window_sd_mmhg": 2.0}}},
])
def test_a_missing_or_non_finite_entry_reads_as_none(metrics):
    assert mi.from_metrics(metrics) is None


# ---------------------------------------------------------------------------------------------
# Out-of-record errors
# ---------------------------------------------------------------------------------------------


def tiny_dataset(shift: float = 0.0) -> protocol.BPDataset:
    """Six records of five windows; record r5's reference SBP is shifted by `shift` mmHg."""
    rng = np.random.default_rng(3)
    samples = []
    for r in range(6):
        calibration = feature_deltas.Calibration(120.0, 80.0, {**{name: 0.0 for name in feature_deltas.FEATURES}, "ppg_amplitude_median": 1.0})
        for i in range(5):
            features = {name: float(rng.normal()) for name in feature_deltas.FEATURES}
            features["ppg_amplitude_median"] = math.exp(features["ppg_amplitude_median"])  # enters as a log ratio
            sbp = 120.0 - 5.0 * features["pat_foot_ms_median"] + rng.normal() + (shift if r == 5 else 0.0)
            reference = arterial_reference.ReferenceBP(sbp, 80.0 + rng.normal(), 20)
            samples.append(protocol.WindowSample(f"r{r}", 60.0 + 30 * i, reference, calibration, features))
    return protocol.BPDataset(samples=tuple(samples), outcomes=())


def ridge() -> MultiOutputRegressor:
    return MultiOutputRegressor(Ridge(alpha=1.0))


def test_a_record_is_predicted_by_a_model_that_never_saw_it():
    records = [f"r{r}" for r in range(6)]
    plain, shifted = tiny_dataset(), tiny_dataset(shift=40.0)
    errors = {}
    for name, data in (("plain", plain), ("shifted", shifted)):
        fitted = ridge().fit(data.X(), data.y())
        errors[name] = mi.out_of_record_errors(fitted, data, trained_on=records)
    mine = errors["plain"].record == "r5"
    # r5's own references moved by 40 mmHg; its predictions did not, so its errors moved by exactly -40
    assert errors["shifted"].of("sbp")[mine] == pytest.approx(errors["plain"].of("sbp")[mine] - 40.0)
    # a record outside `trained_on` is predicted by the given estimator as it is
    fitted = ridge().fit(plain.X(), plain.y())
    as_is = mi.out_of_record_errors(fitted, plain, trained_on=())
    expected = learning.predict_bp(fitted, plain.X(), plain.calibration_bp()) - plain.reference_bp()
    assert as_is.error_mmhg == pytest.approx(expected)
    grouped = mi.out_of_record_errors(fitted, plain, trained_on=records, n_folds=3)
    assert grouped.error_mmhg.shape == (30, 2) and np.isfinite(grouped.error_mmhg).all()
    assert mi.record_groups(records, 3) == [("r0", "r3"), ("r1", "r4"), ("r2", "r5")]


# ---------------------------------------------------------------------------------------------
# Training on the shipped recordings
# ---------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_training_on_the_shipped_recordings_stores_the_interval_of_the_mean_for_both_versions():
    from clinops.base.audit import SYSTEM
    from monitoring.bp.training import bp_models_train

    run = bp_models_train(actor=SYSTEM, data_dir=settings.RECORDINGS_DIR / "challenge2015", trained_by="test")
    for version in (run.learned, run.baseline):
        version.refresh_from_db()
        entry = version.metrics["mean_interval"]
        assert entry["level"] == pytest.approx(0.9) and entry["method"]
        assert entry["n_records"] >= 40 and entry["n_windows"] >= 250
        for target in ("sbp", "dbp"):
            for key in ("shared_sd_mmhg", "window_sd_mmhg"):
                assert math.isfinite(entry[target][key]) and entry[target][key] > 0
            assert 0.0 <= entry["coverage"][f"{target}_pct"] <= 100.0
        assert entry["coverage"]["n_records"] == entry["n_records"]
        read = mi.from_metrics(version.metrics)
        assert read is not None
        for target in ("sbp", "dbp"):
            widths = [read.halfwidth_mmhg(target, n) for n in (1, 12, 14, 100)]
            assert all(math.isfinite(w) and w > 0 for w in widths) and widths == sorted(widths, reverse=True)
