"""Estimates: relative to the patient's calibration, with interval and full lineage; flagged when
they may not support an automatic release; none at all without a calibration."""
import datetime as dt

import pytest
from django.utils import timezone

from clinops.base.audit import SYSTEM
from monitoring.bp import cuff_calibration, estimation, registry
from monitoring.models import BPEstimate
from tests.monitoring.test_bp_registry import register

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]
NOW = timezone.now().replace(microsecond=0)


@pytest.fixture
def baseline():
    model = register("carry-forward", test_mae=5.0, kind="baseline")
    return registry.model_version_promote(actor=SYSTEM, model=model)


def calibrate(patient, processed_window_at, at, sbp=150.0, dbp=92.0):
    processed_window_at(at, 0)
    return cuff_calibration.cuff_reading_record(actor=SYSTEM, patient=patient, measured_at=at, sbp_mmhg=sbp, dbp_mmhg=dbp,
                                        source="clinician").calibration


def test_an_estimate_carries_its_window_calibration_model_and_interval(patient, processed_window_at, baseline):
    calibration = calibrate(patient, processed_window_at, NOW - dt.timedelta(hours=3))
    window = processed_window_at(NOW - dt.timedelta(hours=1), 1)
    [estimate] = estimation.window_estimate(window_id=window.pk)
    assert (estimate.window, estimate.patient, estimate.model_version, estimate.calibration) == (window, patient, baseline, calibration)
    assert estimate.analysis == window.analyses.get()
    # The carry-forward baseline repeats the calibration cuff reading, with its conformal interval.
    assert (estimate.sbp_mmhg, estimate.dbp_mmhg) == (150.0, 92.0)
    assert (estimate.sbp_low_mmhg, estimate.sbp_high_mmhg) == (138.0, 162.0)
    assert (estimate.dbp_low_mmhg, estimate.dbp_high_mmhg) == (84.0, 100.0)
    assert estimate.interval_level == 0.9 and not estimate.shadow
    assert estimate.calibration_age_days == pytest.approx(2 / 24)


def test_a_baseline_estimate_never_supports_an_automatic_release(patient, processed_window_at, baseline):
    calibrate(patient, processed_window_at, NOW - dt.timedelta(hours=3))
    [estimate] = estimation.window_estimate(window_id=processed_window_at(NOW - dt.timedelta(hours=1), 1).pk)
    assert any("carry-forward baseline" in flag for flag in estimate.flags)
    assert not estimate.supports_automatic_release


def test_an_estimate_against_a_calibration_older_than_28_days_is_flagged(patient, processed_window_at):
    learned = register("learned", test_mae=4.0)
    registry.model_version_promote(actor=SYSTEM, model=learned)
    calibrate(patient, processed_window_at, NOW - dt.timedelta(days=29))
    fresh_calibration_window = processed_window_at(NOW - dt.timedelta(days=27), 1)
    stale_window = processed_window_at(NOW - dt.timedelta(hours=1), 2)
    [fresh] = estimation.window_estimate(window_id=fresh_calibration_window.pk)
    [stale] = estimation.window_estimate(window_id=stale_window.pk)
    assert fresh.flags == [] and fresh.supports_automatic_release
    assert stale.flags == ["calibration is 29 days old (limit 28)"] and not stale.supports_automatic_release


def test_no_calibration_means_no_estimate(patient, processed_window_at, baseline):
    window = processed_window_at(NOW - dt.timedelta(hours=1))
    assert estimation.window_estimate(window_id=window.pk) == []
    assert not BPEstimate.objects.exists()


def test_a_shadow_model_estimates_beside_the_active_one_and_is_marked_shadow(patient, processed_window_at, baseline):
    candidate = register("candidate", test_mae=4.5)
    registry.model_version_set_shadow(actor=SYSTEM, model=candidate, shadow=True)
    calibrate(patient, processed_window_at, NOW - dt.timedelta(hours=3))
    estimates = estimation.window_estimate(window_id=processed_window_at(NOW - dt.timedelta(hours=1), 1).pk)
    assert {(e.model_version.version, e.shadow) for e in estimates} == {("carry-forward", False), ("candidate", True)}
    assert not next(e for e in estimates if e.shadow).supports_automatic_release


def test_estimating_twice_changes_nothing(patient, processed_window_at, baseline):
    calibrate(patient, processed_window_at, NOW - dt.timedelta(hours=3))
    window = processed_window_at(NOW - dt.timedelta(hours=1), 1)
    first = estimation.window_estimate(window_id=window.pk)
    assert estimation.window_estimate(window_id=window.pk) == first
    assert BPEstimate.objects.count() == 1


def test_a_window_keeps_its_one_live_estimate_after_another_model_is_promoted(patient, processed_window_at, baseline):
    calibrate(patient, processed_window_at, NOW - dt.timedelta(hours=3))
    window = processed_window_at(NOW - dt.timedelta(hours=1), 1)
    [first] = estimation.window_estimate(window_id=window.pk)
    registry.model_version_promote(actor=SYSTEM, model=register("learned", test_mae=4.0))
    assert estimation.window_estimate(window_id=window.pk) == [first]
    assert BPEstimate.objects.filter(window=window, shadow=False).count() == 1


def test_an_estimate_is_flagged_when_its_features_come_from_another_pipeline(patient, processed_window_at, baseline):
    from monitoring.models import Calibration

    calibrate(patient, processed_window_at, NOW - dt.timedelta(hours=3))
    Calibration.objects.update(pipeline_version="signals-0.9")
    [estimate] = estimation.window_estimate(window_id=processed_window_at(NOW - dt.timedelta(hours=1), 1).pk)
    assert any("different signal pipelines" in flag for flag in estimate.flags)
