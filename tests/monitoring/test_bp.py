"""Calibrated BP estimation: reference BP, the fixed protocol, split, conformal intervals, the
evaluation math, the promotion gates, and a real end-to-end train whose skops file round-trips.

No database: the pure modules of monitoring.bp (arterial_reference, protocol, feature_deltas, learning,
conformal, accuracy, promotion_gates) read nothing but WFDB folders.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from django.conf import settings
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from monitoring.bp import accuracy, arterial_reference, conformal, feature_deltas, learning, promotion_gates, protocol
from monitoring.signals.pipeline import detect_r_peaks
from monitoring.signals.recordings import iter_windows, with_pleth_delay_removed

CHALLENGE = Path(settings.RECORDINGS_DIR) / "challenge2015"


@pytest.fixture(scope="module")
def v140s():
    """A clean real record, as a one-clock wearable would send it (PLETH latency removed)."""
    return with_pleth_delay_removed(protocol.read_record(CHALLENGE, "v140s"))


# ---------------------------------------------------------------------------------------------
# Evaluation math
# ---------------------------------------------------------------------------------------------


def test_error_metrics_match_hand_computed_values():
    # given five windows with errors +10, +2, -6, -1, -12 mmHg from three records
    predicted = np.array([110.0, 120.0, 130.0, 140.0, 150.0])
    reference = np.array([100.0, 118.0, 136.0, 141.0, 162.0])

    metrics = accuracy.error_metrics(predicted, reference, records=["a", "a", "b", "b", "c"], halfwidth_mmhg=6.0)

    # then: ME = -7/5; deviations 11.4, 3.4, -4.6, 0.4, -10.6 -> sum of squares 275.2, / (5 - 1)
    assert metrics["n_windows"] == 5 and metrics["n_records"] == 3
    assert metrics["mean_error_mmhg"] == pytest.approx(-1.4)
    assert metrics["sd_error_mmhg"] == pytest.approx(math.sqrt(275.2 / 4))
    assert metrics["mae_mmhg"] == pytest.approx(31 / 5)
    assert metrics["within_5_mmhg_pct"] == pytest.approx(40.0)  # |2|, |-1|
    assert metrics["within_10_mmhg_pct"] == pytest.approx(80.0)  # 10 counts: "within" is <=
    assert metrics["within_15_mmhg_pct"] == pytest.approx(100.0)
    assert metrics["coverage_pct"] == pytest.approx(60.0)  # |2|, |-6|, |-1| <= 6
    assert metrics["bhs_grade"] == "C"  # 40 / 80 / 100: C needs 40 / 65 / 85, B needs 50 / ...
    assert metrics["iso_81060_2_pass"] is False  # SD 8.29 > 8
    json.dumps(metrics)


def test_error_metrics_take_per_window_interval_half_widths():
    metrics = accuracy.error_metrics([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0], halfwidth_mmhg=np.array([1, 1, 3, 3]))
    assert metrics["coverage_pct"] == pytest.approx(50.0)  # 1 <= 1, 2 > 1, 3 <= 3, 4 > 3
    assert metrics["n_records"] is None


def test_error_metrics_of_one_window_have_no_sd_and_of_none_have_no_numbers():
    one = accuracy.error_metrics([120.0], [118.0])
    assert one["sd_error_mmhg"] is None and one["iso_81060_2_pass"] is None and one["mae_mmhg"] == 2.0
    empty = accuracy.error_metrics([], [])
    assert empty["n_windows"] == 0 and empty["mae_mmhg"] is None and empty["bhs_grade"] is None


@pytest.mark.parametrize(("shares", "grade"), [
    ((60, 85, 95), "A"), ((59.9, 85, 95), "B"), ((100, 100, 94.9), "B"), ((50, 75, 90), "B"),
    ((49, 75, 90), "C"), ((40, 65, 85), "C"), ((39, 99, 99), "D"), ((90, 90, 84), "D"),
])
def test_bhs_grade_needs_all_three_shares(shares, grade):
    assert accuracy.bhs_grade(*shares) == grade


@pytest.mark.parametrize(("mean_error", "sd", "passes"), [
    (5.0, 8.0, True), (-5.0, 0.0, True), (-5.01, 1.0, False), (0.0, 8.01, False),
])
def test_iso_81060_2_style_pass_is_mean_error_within_5_and_sd_at_most_8(mean_error, sd, passes):
    assert accuracy.iso_81060_2_pass(mean_error, sd) is passes


# ---------------------------------------------------------------------------------------------
# Reference BP from the arterial line
# ---------------------------------------------------------------------------------------------


def test_reference_bp_of_a_real_window_agrees_with_per_heartbeat_max_and_min(v140s):
    # given a real 30-s arterial trace, cut independently into heartbeats at the ECG R-peaks
    window = next(iter_windows(v140s, window_s=30))
    r_peaks = detect_r_peaks(window.ecg, window.ecg_fs)
    segments = [window.abp[a:b] for a, b in zip(r_peaks[:-1], r_peaks[1:])]
    simple_sbp = float(np.median([s.max() for s in segments]))
    simple_dbp = float(np.median([s.min() for s in segments]))

    reference = arterial_reference.reference_bp(window.abp, window.ecg_fs)

    assert reference is not None and reference.beat_count >= len(segments) - 2
    assert reference.sbp_mmhg == pytest.approx(simple_sbp, abs=2.0)
    assert reference.dbp_mmhg == pytest.approx(simple_dbp, abs=2.0)
    # and it lies within the trace's own percentile bounds
    assert np.percentile(window.abp, 90) - 2 <= reference.sbp_mmhg <= window.abp.max()
    assert window.abp.min() <= reference.dbp_mmhg <= np.percentile(window.abp, 10) + 2


def _pulse_train(fs: float, seconds: float, heart_rate_bpm: float, sbp: float, dbp: float) -> np.ndarray:
    """A synthetic arterial pressure (mmHg) with a systolic peak and a dicrotic wave per beat."""
    t = np.arange(int(seconds * fs)) / fs
    phase = (t * heart_rate_bpm / 60.0) % 1.0
    shape = np.exp(-((phase - 0.15) / 0.06) ** 2) + 0.25 * np.exp(-((phase - 0.45) / 0.05) ** 2)
    return dbp + (sbp - dbp) * shape / shape.max()


def test_reference_bp_ignores_the_dicrotic_wave():
    # at 60 bpm the dicrotic wave comes 0.3 s after the systolic peak, beyond the refractory
    # distance, so only the prominence threshold keeps it out
    abp = _pulse_train(250.0, 30.0, 60.0, sbp=120.0, dbp=80.0)
    assert 0.3 > arterial_reference.ABP_REFRACTORY_S
    reference = arterial_reference.reference_bp(abp, 250.0)
    assert reference is not None
    assert reference.beat_count == 29  # 30 systolic maxima; the first has no beat before it
    assert reference.sbp_mmhg == pytest.approx(abp.max(), abs=0.5)
    assert reference.dbp_mmhg == pytest.approx(abp.min(), abs=0.5)


def test_reference_bp_needs_five_beats(v140s):
    window = next(iter_windows(v140s, window_s=30))
    short = window.abp[: int(2.0 * window.ecg_fs)]  # ~4 beats at this patient's ~138 bpm
    assert arterial_reference.abp_beats(short, window.ecg_fs)[0].size < 5
    assert arterial_reference.reference_bp(short, window.ecg_fs) is None
    assert arterial_reference.reference_bp(np.full(7500, 93.0), 250.0) is None  # a flat (damped / closed) line


def test_arterial_line_flush_beats_are_not_beats():
    abp = _pulse_train(250.0, 30.0, 60.0, sbp=130.0, dbp=70.0)
    abp[2500:5000] = np.where(np.arange(2500) % 250 < 125, 320.0, -40.0)  # flush / zeroing artefact
    systolic, diastolic = arterial_reference.abp_beats(abp, 250.0)
    assert systolic.max() <= arterial_reference.BEAT_SBP_RANGE_MMHG[1] and diastolic.min() >= arterial_reference.BEAT_DBP_RANGE_MMHG[0]
    reference = arterial_reference.reference_bp(abp, 250.0)
    assert reference is not None and reference.sbp_mmhg == pytest.approx(130.0, abs=1.0)


# ---------------------------------------------------------------------------------------------
# The fixed protocol
# ---------------------------------------------------------------------------------------------


def test_calibration_windows_start_before_60_s_and_test_windows_lie_in_60_to_300_s():
    starts = np.arange(0.0, 331.0, 30.0)
    assert [s for s in starts if protocol.is_calibration_window(s)] == [0.0, 30.0]
    assert [s for s in starts if protocol.is_test_window(s)] == [60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0]
    assert not protocol.is_test_window(300.0) and not protocol.is_test_window(285.0)


def test_a_record_gives_non_overlapping_30_s_test_windows_calibrated_on_its_first_minute(v140s):
    outcome = protocol.record_outcome(v140s)

    assert outcome.skipped_reason is None
    starts = [s.start_s for s in outcome.samples]
    assert starts == sorted(starts) and all(60.0 <= s and s + 30.0 <= 300.0 for s in starts)
    assert all(b - a >= 30.0 for a, b in zip(starts, starts[1:]))  # back to back, never overlapping
    # 299.1 s after the PLETH correction: the 270-300 s window is incomplete, so 60..240 s
    assert outcome.test_windows == 7 and outcome.calibration_windows == 2
    # cuff reading = mean of the references of the windows at 0 and 30 s
    first_minute = [arterial_reference.reference_bp(w.abp, w.ecg_fs) for w in iter_windows(v140s, window_s=30) if w.start_s < 60]
    calibration = outcome.samples[0].calibration
    assert calibration.sbp_mmhg == pytest.approx(np.mean([r.sbp_mmhg for r in first_minute]))
    assert calibration.dbp_mmhg == pytest.approx(np.mean([r.dbp_mmhg for r in first_minute]))
    assert calibration.n_feature_windows == 2
    assert all(s.calibration is calibration for s in outcome.samples)
    # features are those of the windows, and the model input is their change from the calibration
    x = feature_deltas.feature_vector(outcome.samples[0].features, calibration.features)
    assert x[0] == pytest.approx(outcome.samples[0].features["pat_foot_ms_median"]
                                 - calibration.features["pat_foot_ms_median"])
    assert feature_deltas.FEATURES[0] == "pat_foot_ms_median"


def test_a_record_without_a_usable_calibration_window_is_skipped_and_counted(v140s):
    # given the ECG lead falls off during the whole first minute
    ecg = v140s.ecg.copy()
    ecg[: int(60 * v140s.ecg_fs)] = 0.0
    outcome = protocol.record_outcome(dataclasses.replace(v140s, ecg=ecg))

    assert outcome.samples == ()
    assert outcome.skipped_reason == "no calibration window passes the signal quality gate"
    assert outcome.calibration_usable == 0 and outcome.calibration_references == 2
    dataset = protocol.dataset_from_outcomes([outcome])
    assert dataset.skipped_records == {"v140s": outcome.skipped_reason}
    assert dataset.summary()["records_evaluated"] == 0


def test_missing_features_enter_the_model_as_missing_and_amplitude_as_a_log_ratio():
    window = {"pat_foot_ms_median": 200.0, "ppg_amplitude_median": 2.0, "pulse_width_ms_median": None}
    calibration = {"pat_foot_ms_median": 210.0, "ppg_amplitude_median": 1.0, "pulse_width_ms_median": 300.0}
    x = feature_deltas.feature_vector(window, calibration, ("pat_foot_ms_median", "ppg_amplitude_median", "pulse_width_ms_median"))
    assert x[0] == -10.0 and x[1] == pytest.approx(math.log(2.0)) and math.isnan(x[2])


# ---------------------------------------------------------------------------------------------
# Split and fingerprint
# ---------------------------------------------------------------------------------------------


def test_record_split_is_disjoint_complete_and_deterministic_for_the_seed():
    names = protocol.record_names(CHALLENGE)
    split = protocol.split_records(names, seed=2015)

    parts = [set(split.train), set(split.validation), set(split.test)]
    assert [len(p) for p in parts] == [36, 12, 12]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(names)
    assert protocol.split_records(list(reversed(names)), seed=2015) == split  # input order does not matter
    assert protocol.split_records(names, seed=2016) != split
    assert split.sha256 == protocol.split_records(names, seed=2015).sha256 != protocol.split_records(names, seed=2016).sha256


def test_fingerprint_hashes_every_record_file_and_changes_when_one_changes(tmp_path):
    for name in ("v140s", "v154s"):
        for suffix in (".hea", ".mat"):
            shutil.copy(CHALLENGE / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    split = protocol.split_records(["v140s", "v154s"], fractions=(0.5, 0.5, 0.0))
    before = protocol.fingerprint_records(tmp_path, split)
    assert sorted(before.files) == ["v140s.hea", "v140s.mat", "v154s.hea", "v154s.mat"]

    data = bytearray((tmp_path / "v154s.mat").read_bytes())
    data[-1] ^= 1
    (tmp_path / "v154s.mat").write_bytes(bytes(data))
    after = protocol.fingerprint_records(tmp_path, split)

    assert after.files["v140s.mat"] == before.files["v140s.mat"]
    assert after.files["v154s.mat"] != before.files["v154s.mat"]
    assert after.records_sha256 != before.records_sha256 and after.sha256 != before.sha256
    assert after.split_sha256 == before.split_sha256
    json.dumps(after.as_dict())


# ---------------------------------------------------------------------------------------------
# Split-conformal intervals
# ---------------------------------------------------------------------------------------------


def test_conformal_interval_covers_held_out_data_close_to_nominal():
    rng = np.random.default_rng(7)
    coverages = []
    for _ in range(300):
        held_out = rng.standard_t(df=3, size=200) * 5.0  # heavy-tailed residuals (mmHg)
        q = conformal.conformal_halfwidth(np.abs(held_out), 0.90)
        new = rng.standard_t(df=3, size=2000) * 5.0
        coverages.append(np.mean(np.abs(new) <= q))
    # guaranteed >= 90 % on average, and at most 90 % + 1 / (n + 1)
    assert 0.895 <= float(np.mean(coverages)) <= 0.90 + 1 / 201 + 0.005


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    residuals=st.lists(st.floats(min_value=0.0, max_value=200.0, allow_nan=False), min_size=1, max_size=300),
    coverage=st.sampled_from([0.5, 0.8, 0.9, 0.95]),
)
def test_conformal_half_width_covers_at_least_the_nominal_share_of_its_own_residuals(residuals, coverage):
    q = conformal.conformal_halfwidth(np.array(residuals), coverage)
    n = len(residuals)
    if math.ceil((n + 1) * coverage) > n:
        assert q == math.inf  # too few held-out cases for that level: say so, never a narrow interval
    else:
        assert q in residuals
        assert np.mean(np.array(residuals) <= q) >= coverage


# ---------------------------------------------------------------------------------------------
# Promotion gates
# ---------------------------------------------------------------------------------------------


def _metrics(mae: float, mean_error: float = 0.5, sd: float = 6.0, coverage: float | None = 90.5) -> dict:
    return {"mae_mmhg": mae, "mean_error_mmhg": mean_error, "sd_error_mmhg": sd, "coverage_pct": coverage}


def _report(model: dict, carry_forward: float, population_mean: float) -> dict:
    target = {"model": model, "carry_forward": _metrics(carry_forward, coverage=None),
              "population_mean": _metrics(population_mean, coverage=None)}
    return {"nominal_coverage_pct": 90.0, "sbp": target, "dbp": json.loads(json.dumps(target))}


def test_a_model_that_beats_both_baselines_and_meets_validation_thresholds_passes():
    ok, reasons = promotion_gates.passes_promotion_gates(_report(_metrics(4.0), 5.0, 12.0), _report(_metrics(4.2), 5.1, 12.0))
    assert ok and reasons == []


def test_a_model_worse_than_carry_forward_fails_and_the_reason_names_that_baseline():
    test_report = _report(_metrics(5.5), carry_forward=5.0, population_mean=12.0)
    ok, reasons = promotion_gates.passes_promotion_gates(test_report, _report(_metrics(4.2), 5.1, 12.0))
    assert not ok
    assert len(reasons) == 2  # SBP and DBP
    assert all("carry-forward baseline" in r and "does not beat" in r for r in reasons)
    assert reasons[0].startswith("SBP") and reasons[1].startswith("DBP")


def test_a_model_only_equal_to_a_baseline_does_not_beat_it():
    ok, reasons = promotion_gates.passes_promotion_gates(_report(_metrics(12.0), 5.0, 12.0), _report(_metrics(4.2), 5.1, 12.0))
    assert not ok and any("population-mean baseline" in r for r in reasons)


def test_validation_bias_spread_and_coverage_are_gated():
    validation = _report(_metrics(4.0, mean_error=-5.5, sd=8.5, coverage=86.0), 5.1, 12.0)
    ok, reasons = promotion_gates.passes_promotion_gates(_report(_metrics(4.0), 5.0, 12.0), validation)
    assert not ok
    text = " | ".join(reasons)
    assert "mean error -5.50 mmHg" in text and "SD of error 8.50 mmHg" in text and "coverage 86.00 %" in text


# ---------------------------------------------------------------------------------------------
# End to end on real records, and the skops file
# ---------------------------------------------------------------------------------------------

TRAIN_RECORDS = ("v140s", "v154s", "v162s", "v166s", "v201l", "v205l", "v217l", "v218s", "v254s", "v255l")
VALIDATION_RECORDS = ("v291l", "v292s", "v312s", "v319l", "v325l")


@pytest.fixture(scope="module")
def small_model():
    dataset = protocol.load_dataset(CHALLENGE, TRAIN_RECORDS + VALIDATION_RECORDS)
    train, validation = dataset.subset(TRAIN_RECORDS), dataset.subset(VALIDATION_RECORDS)
    return learning.train_bp_model(train, validation), train, validation


def test_training_on_real_records_chooses_by_validation_and_sets_finite_intervals(small_model):
    model, train, validation = small_model
    assert model.name in learning.candidate_estimators()
    best = min(model.validation_mae_mmhg.values(), key=lambda mae: float(np.mean(mae)))
    assert model.validation_mae_mmhg[model.name] == best
    assert all(0 < q < math.inf for q in model.halfwidth_mmhg)
    assert model.population_mean_mmhg == pytest.approx(tuple(train.reference_bp().mean(axis=0)))
    json.dumps(model.metadata())

    report = accuracy.evaluate(model, validation)
    json.dumps(report)
    assert report["sbp"]["model"]["n_windows"] == len(validation.samples)
    assert report["sbp"]["model"]["n_records"] == len(validation.records)
    # split conformal on these very residuals: at least nominal coverage
    assert report["sbp"]["model"]["coverage_pct"] >= 90.0 and report["dbp"]["model"]["coverage_pct"] >= 90.0
    assert report["sbp"]["carry_forward"]["coverage_pct"] is None
    table = accuracy.format_report(report)
    assert "carry_forward" in table and "population_mean" in table and "SBP" in table


def test_validation_coverage_is_judged_per_record_against_the_other_records_intervals(small_model):
    model, _, validation = small_model
    report = accuracy.evaluate(model, validation, cross_conformal=True)

    records = validation.record_of_window()
    predicted = learning.predict_bp(model.estimator, validation.X(model.features), validation.calibration_bp())
    residual = np.abs(predicted[:, 0] - validation.reference_bp()[:, 0])
    covered = [residual[i] <= conformal.conformal_halfwidth(residual[records != records[i]], 0.90)
               for i in range(residual.size)]
    assert report["sbp"]["model"]["coverage_pct"] == pytest.approx(100.0 * np.mean(covered))
    assert report["coverage_method"].startswith("leave-one-record-out")
    assert report["sbp"]["model"]["mae_mmhg"] == accuracy.evaluate(model, validation)["sbp"]["model"]["mae_mmhg"]


def test_a_saved_model_loads_with_the_documented_trusted_types_and_predicts_identically(small_model):
    model, _, validation = small_model
    data = learning.estimator_to_bytes(model.estimator)

    loaded = learning.estimator_from_bytes(data)

    X = validation.X(model.features)
    np.testing.assert_array_equal(loaded.predict(X), model.estimator.predict(X))
    with pytest.raises(sio.exceptions.UntrustedTypesFoundException):
        sio.loads(data)  # nothing beyond skops' defaults is trusted silently


def test_every_candidate_saves_with_only_the_documented_trusted_types():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, len(feature_deltas.FEATURES))), rng.normal(size=(60, 2))
    for name, estimator in learning.candidate_estimators().items():
        untrusted = sio.get_untrusted_types(data=learning.estimator_to_bytes(estimator.fit(X, y)))
        assert set(untrusted) <= set(learning.SKOPS_TRUSTED_TYPES), name


def test_an_estimate_is_the_calibration_plus_the_predicted_change_with_its_interval(small_model):
    model, _, validation = small_model
    sample = validation.samples[0]
    estimate = learning.estimate_bp(model.estimator, sample.features, sample.calibration,
                              halfwidth_mmhg=model.halfwidth_mmhg)
    change = model.estimator.predict(feature_deltas.feature_vector(sample.features, sample.calibration.features)[None, :])[0]
    assert estimate.sbp_mmhg == pytest.approx(sample.calibration.sbp_mmhg + change[0])
    assert estimate.dbp_mmhg == pytest.approx(sample.calibration.dbp_mmhg + change[1])
    assert estimate.sbp_high_mmhg - estimate.sbp_mmhg == pytest.approx(model.halfwidth_mmhg[0])
    assert estimate.dbp_mmhg - estimate.dbp_low_mmhg == pytest.approx(model.halfwidth_mmhg[1])
