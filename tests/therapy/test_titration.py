"""Titration scenarios (therapy.titration.propose_step): pure values, no database."""
from __future__ import annotations

import datetime as dt

import pytest

from therapy.domain import (
    ACE_CCB_THIAZIDE,
    ARB_CCB_THIAZIDE,
    EstimateEvidence,
    PatientState,
    PlanRules,
    ProposalKind,
    Symptom,
    SymptomReport,
)
from therapy.titration import propose_step

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
LADDER = ACE_CCB_THIAZIDE
PLAN = PlanRules()


def week_of_readings(sbp: float, dbp: float, *, days: int = 7, per_day: int = 3, halfwidth: float = 7.0,
                     flags: tuple[str, ...] = ()) -> list[EstimateEvidence]:
    """`per_day` estimates a day for the last `days` days, all at `sbp`/`dbp` mmHg."""
    out = []
    for d in range(days):
        for k in range(per_day):
            at = NOW - dt.timedelta(days=d, hours=1 + k)  # same UTC day as NOW - d days (NOW is 09:00)
            out.append(EstimateEvidence(at, sbp, dbp, halfwidth, halfwidth * 0.7, 0.9, flags, estimate_id=len(out) + 1))
    return out


def on_rung(rung: int, *, changed_days_ago: float = 60, **kw) -> PatientState:
    return PatientState(current_rung=rung, last_change_at=NOW - dt.timedelta(days=changed_days_ago),
                        adherence_share=0.95, **kw)


def test_the_example_ladder_reads_like_the_design():
    assert [LADDER.describe(i) for i in range(len(LADDER.rungs))] == [
        "lisinopril 10 mg once daily",
        "lisinopril 20 mg once daily",
        "lisinopril 40 mg once daily",
        "lisinopril 40 mg once daily + amlodipine 5 mg once daily",
        "lisinopril 40 mg once daily + amlodipine 10 mg once daily",
        "lisinopril 40 mg once daily + amlodipine 10 mg once daily + hydrochlorothiazide 12.5 mg once daily",
        "lisinopril 40 mg once daily + amlodipine 10 mg once daily + hydrochlorothiazide 25 mg once daily",
    ]
    assert ARB_CCB_THIAZIDE.describe(0) == "losartan 50 mg once daily"


def test_uncontrolled_7_day_mean_148_over_92_steps_up_one_rung():
    proposal = propose_step(PLAN, LADDER, on_rung(1), week_of_readings(148, 92), now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.STEP_UP
    assert (proposal.from_rung, proposal.to_rung) == (1, 2)
    assert proposal.to_regimen == "lisinopril 40 mg once daily"
    ev = proposal.evidence
    assert ev.n_estimates == 21 and ev.n_distinct_days == 7 and ev.sufficient
    assert ev.mean_sbp_mmhg == pytest.approx(148) and ev.mean_dbp_mmhg == pytest.approx(92)
    assert sorted(ev.estimate_ids) == list(range(1, 22))
    assert "148/92" in proposal.reasons[0]


def test_diastolic_alone_above_target_steps_up():
    proposal = propose_step(PLAN, LADDER, on_rung(0), week_of_readings(128, 88), now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.STEP_UP and proposal.to_rung == 1


def test_at_target_holds():
    proposal = propose_step(PLAN, LADDER, on_rung(2), week_of_readings(126, 78), now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.HOLD and proposal.to_rung == 2
    assert "at target" in proposal.reasons[0]


def test_too_few_estimates_holds_naming_the_rule():
    readings = week_of_readings(150, 95, days=7, per_day=1)  # 7 estimates on 7 days
    proposal = propose_step(PLAN, LADDER, on_rung(1), readings, now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.HOLD
    assert proposal.reasons == (
        "not enough data: 7 usable estimates in the last 7 days, the plan needs at least 12",
        "home cuff series incomplete: 0 of 12 readings on 0 of 4 days in the last 7 days: 12 more reading(s) and "
        "readings on 4 more day(s) needed",
    )


def test_too_few_distinct_days_holds_naming_the_rule():
    readings = week_of_readings(150, 95, days=3, per_day=6)  # 18 estimates on 3 days
    proposal = propose_step(PLAN, LADDER, on_rung(1), readings, now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.HOLD
    assert any("3 distinct days" in r and "at least 4" in r for r in proposal.reasons)


def test_estimates_outside_the_look_back_do_not_count():
    old = [EstimateEvidence(NOW - dt.timedelta(days=8 + i / 10), 200, 130, 5, 5) for i in range(30)]
    proposal = propose_step(PLAN, LADDER, on_rung(1), old, now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.HOLD and proposal.evidence.n_estimates == 0


def test_last_change_within_minimum_interval_holds_saying_so():
    proposal = propose_step(PLAN, LADDER, on_rung(1, changed_days_ago=10), week_of_readings(148, 92),
                            now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.HOLD
    assert "last change was 10 days ago" in proposal.reasons[0]
    assert "minimum interval between changes is 28 days" in proposal.reasons[0]


def test_top_of_ladder_escalates_to_a_clinician():
    proposal = propose_step(PLAN, LADDER, on_rung(LADDER.top), week_of_readings(150, 95), now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.ESCALATE
    assert proposal.to_rung == proposal.from_rung == LADDER.top
    assert "top rung of the ladder" in proposal.reasons[0]


def test_mean_sbp_below_110_steps_down_one_rung_even_soon_after_a_change():
    proposal = propose_step(PLAN, LADDER, on_rung(3, changed_days_ago=5), week_of_readings(106, 70),
                            now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.STEP_DOWN and (proposal.from_rung, proposal.to_rung) == (3, 2)
    assert "below 110" in proposal.reasons[0]


def test_mean_sbp_below_110_on_the_lowest_rung_holds():
    proposal = propose_step(PLAN, LADDER, on_rung(0), week_of_readings(106, 70), now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.HOLD and "lowest rung" in proposal.reasons[0]


def test_dizziness_on_standing_steps_down_even_on_little_data():
    state = on_rung(2, symptoms=(SymptomReport(Symptom.LIGHTHEADED_ON_STANDING, NOW - dt.timedelta(hours=3)),))
    proposal = propose_step(PLAN, LADDER, state, week_of_readings(130, 80, days=1, per_day=2),
                            now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.STEP_DOWN and proposal.to_rung == 1
    assert "light-headedness on standing" in proposal.reasons[0]


def test_confirmed_low_sbp_holds_any_increase():
    readings = week_of_readings(150, 95) + [
        EstimateEvidence(NOW - dt.timedelta(hours=30), 96, 60, 6, 5),
        EstimateEvidence(NOW - dt.timedelta(hours=30, minutes=-10), 94, 58, 6, 5),
    ]
    proposal = propose_step(PLAN, LADDER, on_rung(1), readings, now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.HOLD and "increase is held" in proposal.reasons[0]


def test_flagged_estimates_count_in_the_mean_and_are_carried_as_evidence():
    readings = week_of_readings(148, 92, flags=("calibration is 35 days old (limit 28)",))
    proposal = propose_step(PLAN, LADDER, on_rung(1), readings, now=NOW, usable_window_share=0.9)
    assert proposal.kind is ProposalKind.STEP_UP
    assert proposal.evidence.n_flagged == 21
    assert proposal.evidence.flags == ("calibration is 35 days old (limit 28)",)


def test_a_rung_off_the_ladder_is_refused():
    with pytest.raises(ValueError):
        propose_step(PLAN, LADDER, on_rung(7), week_of_readings(148, 92), now=NOW, usable_window_share=0.9)
