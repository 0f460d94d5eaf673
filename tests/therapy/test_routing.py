"""Routing scenarios (therapy.routing.route): auto-release only when every bound holds."""
from __future__ import annotations

import dataclasses
import datetime as dt

from therapy.domain import (
    ACE_CCB_THIAZIDE,
    AutonomyBounds,
    Direction,
    EstimateEvidence,
    Exclusion,
    ExclusionKind,
    PatientState,
    PlanRules,
    Route,
    SideEffectReport,
    Symptom,
    SymptomReport,
)
from therapy.escalation import check_escalation
from therapy.evidence import WearableAgreement
from therapy.routing import route
from therapy.titration import propose_step

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
LADDER = ACE_CCB_THIAZIDE
PLAN = PlanRules()
# The patient's wearable agrees with their cuff (8 prospective pairs, within ISO 81060-2's numbers).
TRUSTED = WearableAgreement(n_pairs=8, period_days=60, sbp_bias_mmhg=1.5, sbp_sd_mmhg=5.0, sbp_mae_mmhg=4.0,
                            dbp_bias_mmhg=-1.0, dbp_sd_mmhg=4.0, dbp_mae_mmhg=3.2)
UP_AUTO = AutonomyBounds(auto_directions=frozenset({Direction.UP, Direction.DOWN}), max_auto_rung=4,
                         max_interval_halfwidth_mmhg=10.0, min_usable_window_share=0.7, calibration_max_age_days=28)


def readings(sbp: float, dbp: float, *, halfwidth: float = 7.0, flags: tuple[str, ...] = (),
             days: int = 7, per_day: int = 3) -> list[EstimateEvidence]:
    return [
        EstimateEvidence(NOW - dt.timedelta(days=d, hours=1 + k), sbp, dbp, halfwidth, halfwidth * 0.7, 0.9, flags)
        for d in range(days) for k in range(per_day)
    ]


def clinic(estimates, *, bounds=UP_AUTO, rung=1, adherence=0.95, exclusions=frozenset(), calibration_age_days=10.0,
           symptoms=(), side_effects=(), usable_window_share=0.9, changed_days_ago=60, agreement=TRUSTED):
    """Run the whole pure path: titration, escalation, routing."""
    state = PatientState(current_rung=rung, last_change_at=NOW - dt.timedelta(days=changed_days_ago),
                         adherence_share=adherence, exclusions=exclusions, symptoms=symptoms, side_effects=side_effects)
    proposal = propose_step(PLAN, LADDER, state, estimates, now=NOW, usable_window_share=usable_window_share,
                            agreement=agreement)
    escalations = check_escalation(estimates, symptoms, side_effects, now=NOW)
    decision = route(proposal, bounds, estimates=estimates, calibration_age_days=calibration_age_days,
                     adherence=adherence, exclusions=exclusions, escalations=escalations, now=NOW)
    return proposal, decision


def test_uncontrolled_7_day_mean_148_over_92_with_fresh_calibration_and_up_auto_allowed_is_auto_released():
    proposal, decision = clinic(readings(148, 92))
    assert proposal.kind.value == "step_up" and proposal.to_rung == 2
    assert decision.auto_release and decision.route is Route.AUTO_RELEASE and decision.reasons == ()


def test_same_with_a_wide_interval_goes_to_review_because_estimate_uncertainty_is_too_high():
    _, decision = clinic(readings(148, 92, halfwidth=14.0))
    assert not decision.auto_release
    assert decision.reasons == (
        "uncertainty of the mean too high: 90 % interval of the wearable estimates mean ±14 mmHg, limit ±10 mmHg",)


def test_step_up_not_allowed_automatically_goes_to_review():
    bounds = dataclasses.replace(UP_AUTO, auto_directions=frozenset({Direction.DOWN}))
    _, decision = clinic(readings(148, 92), bounds=bounds)
    assert decision.route is Route.REVIEW
    assert decision.reasons == ("automatic steps up are not allowed by this plan (allowed automatically: down)",)


def test_beyond_the_max_automatic_rung_goes_to_review():
    _, decision = clinic(readings(148, 92), rung=4)
    assert decision.route is Route.REVIEW
    assert "above the highest rung allowed automatically (rung 5)" in decision.reasons[0]


def test_low_adherence_never_steps_up_automatically():
    _, decision = clinic(readings(148, 92), adherence=0.6)
    assert decision.route is Route.REVIEW
    assert decision.reasons == (
        "low adherence: 60 % of doses taken over the look-back, below 80 %; more drug is not the answer to missed doses",
    )


def test_unknown_adherence_never_steps_up_automatically():
    _, decision = clinic(readings(148, 92), adherence=None)
    assert decision.route is Route.REVIEW and "adherence unknown" in decision.reasons[0]


def test_low_adherence_does_not_block_an_automatic_step_down():
    proposal, decision = clinic(readings(105, 68), rung=3, adherence=0.5)
    assert proposal.kind.value == "step_down" and decision.auto_release


def test_patient_with_atrial_fibrillation_is_excluded_from_automatic_changes():
    af = frozenset({Exclusion(ExclusionKind.IRREGULAR_RHYTHM, "atrial fibrillation")})
    _, decision = clinic(readings(148, 92), exclusions=af)
    assert decision.route is Route.REVIEW
    assert decision.reasons == ("patient excluded from automatic changes: irregular rhythm (atrial fibrillation)",)


def test_stale_calibration_goes_to_review():
    _, decision = clinic(readings(148, 92), calibration_age_days=35)
    assert decision.reasons == ("calibration is 35 days old, limit 28 days",)


def test_flagged_estimates_go_to_review_naming_the_flag():
    flag = "the active model is the carry-forward baseline: the estimate repeats the calibration cuff reading"
    _, decision = clinic(readings(148, 92, flags=(flag,)))
    assert decision.route is Route.REVIEW and flag in decision.reasons[0]


def test_too_few_usable_windows_goes_to_review():
    _, decision = clinic(readings(148, 92), usable_window_share=0.55)
    assert decision.reasons == ("too few usable recordings: 55 % of windows usable over the look-back, minimum 70 %",)


def test_stale_data_goes_to_review():
    old = [dataclasses.replace(e, recorded_at=e.recorded_at - dt.timedelta(days=3)) for e in readings(148, 92, days=4)]
    _, decision = clinic(old)
    assert decision.route is Route.REVIEW and any("data are stale" in r for r in decision.reasons)


def test_a_reported_side_effect_blocks_automatic_release():
    cough = (SideEffectReport("dry cough", NOW - dt.timedelta(days=1), drug="lisinopril"),)
    _, decision = clinic(readings(148, 92), side_effects=cough)
    assert decision.reasons == ("urgent: side effect reported: dry cough (on lisinopril)",)


def test_symptom_driven_step_down_goes_to_review():
    dizzy = (SymptomReport(Symptom.DIZZINESS, NOW - dt.timedelta(hours=2)),)
    proposal, decision = clinic(readings(130, 80), rung=3, symptoms=dizzy)
    assert proposal.kind.value == "step_down"
    assert decision.route is Route.REVIEW and "urgent: symptom of low blood pressure reported: dizziness" in decision.reasons


def test_a_hold_is_information_never_released():
    proposal, decision = clinic(readings(148, 92), changed_days_ago=10)
    assert proposal.kind.value == "hold"
    assert decision.route is Route.INFORMATION and not decision.auto_release
    assert "minimum interval" in decision.reasons[0]


def test_top_of_ladder_goes_to_review():
    proposal, decision = clinic(readings(150, 95), rung=LADDER.top)
    assert proposal.kind.value == "escalate" and decision.route is Route.REVIEW and decision.reasons


def test_every_failing_bound_is_named():
    bounds = AutonomyBounds()  # nothing automatic
    _, decision = clinic(readings(148, 92, halfwidth=14.0), bounds=bounds, adherence=0.5, calibration_age_days=40)
    text = " | ".join(decision.reasons)
    for words in ("not allowed", "highest rung", "uncertainty of the mean too high", "calibration is 40 days old", "low adherence"):
        assert words in text


def test_an_unknown_bound_or_rule_is_refused_when_it_is_made_so_no_check_can_pass_on_it():
    import math

    import pytest

    for bad in (math.nan, math.inf, -math.inf):
        for name in ("max_auto_rung", "max_interval_halfwidth_mmhg", "min_usable_window_share",
                     "calibration_max_age_days", "max_latest_estimate_age_days", "agreement_max_bias_mmhg",
                     "agreement_max_sd_mmhg", "agreement_period_days"):
            with pytest.raises(ValueError):
                AutonomyBounds(**{name: bad})
        for name in ("target_sbp_mmhg", "target_dbp_mmhg", "look_back_days", "min_days_between_changes",
                     "step_down_sbp_mmhg"):
            with pytest.raises(ValueError):
                PlanRules(**{name: bad})
