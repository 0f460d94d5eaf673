"""Escalation scenarios (therapy.escalation.check_escalation): urgent review items in words."""
from __future__ import annotations

import datetime as dt

from therapy.domain import (
    ACE_CCB_THIAZIDE,
    AutonomyBounds,
    Direction,
    EscalationKind,
    EstimateEvidence,
    PatientState,
    PlanRules,
    Route,
    SideEffectReport,
    Symptom,
    SymptomReport,
)
from therapy.escalation import check_escalation, needs_escalation_check
from therapy.routing import route
from therapy.titration import propose_step

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc)


def reading(minutes_ago: float, sbp: float, dbp: float, id_: int | None = None) -> EstimateEvidence:
    return EstimateEvidence(NOW - dt.timedelta(minutes=minutes_ago), sbp, dbp, 6.0, 5.0, 0.9, (), id_)


def test_crisis_reading_confirmed_within_30_min_is_an_urgent_escalation_telling_the_patient_to_seek_care():
    items = check_escalation([reading(50, 186, 112, 1), reading(38, 183, 118, 2)], [], [], now=NOW)
    assert len(items) == 1
    crisis = items[0]
    assert crisis.kind is EscalationKind.CRISIS and crisis.urgent and crisis.seek_care
    assert crisis.estimate_ids == (1, 2)
    assert crisis.reason == (
        "hypertensive crisis confirmed: 186/112 mmHg and 183/118 mmHg within 12 min "
        "(threshold SBP >= 180 or DBP >= 120 mmHg); patient told to seek care now"
    )


def test_diastolic_crisis_counts():
    items = check_escalation([reading(20, 165, 121), reading(5, 170, 124)], [], [], now=NOW)
    assert [i.kind for i in items] == [EscalationKind.CRISIS]


def test_a_single_crisis_reading_or_two_far_apart_is_not_confirmed():
    assert check_escalation([reading(10, 190, 100)], [], [], now=NOW) == []
    assert check_escalation([reading(100, 190, 100), reading(10, 190, 100)], [], [], now=NOW) == []


def test_confirmed_low_sbp_holds_any_increase():
    items = check_escalation([reading(30, 96, 60), reading(10, 92, 58)], [], [], now=NOW)
    assert [i.kind for i in items] == [EscalationKind.CONFIRMED_LOW_SBP]
    assert items[0].holds_increase and "below 100 mmHg" in items[0].reason


def test_each_red_flag_symptom_is_an_urgent_item():
    reports = [SymptomReport(s, NOW - dt.timedelta(hours=1)) for s in
               (Symptom.CHEST_PAIN, Symptom.FAINTING, Symptom.SEVERE_HEADACHE, Symptom.SHORTNESS_OF_BREATH,
                Symptom.NEUROLOGICAL)]
    items = check_escalation([], reports, [], now=NOW)
    assert [i.kind for i in items] == [EscalationKind.RED_FLAG_SYMPTOM] * 5
    assert items[0].reason == "red-flag symptom reported: chest pain"


def test_neurological_symptom_detail_is_kept_in_words():
    items = check_escalation([], [SymptomReport(Symptom.NEUROLOGICAL, NOW, "slurred speech")], [], now=NOW)
    assert items[0].reason == "red-flag symptom reported: neurological symptoms (slurred speech)"


def test_side_effect_is_an_urgent_review_item():
    items = check_escalation([], [], [SideEffectReport("ankle swelling", NOW - dt.timedelta(days=2), "amlodipine")], now=NOW)
    assert [(i.kind, i.reason) for i in items] == [
        (EscalationKind.SIDE_EFFECT, "side effect reported: ankle swelling (on amlodipine)")
    ]


def test_old_reports_and_future_stamps_are_not_escalated():
    old = SymptomReport(Symptom.CHEST_PAIN, NOW - dt.timedelta(days=8))
    future = SymptomReport(Symptom.CHEST_PAIN, NOW + dt.timedelta(hours=1))
    assert check_escalation([], [old, future], [], now=NOW) == []


def test_crisis_reading_is_never_auto_released():
    estimates = [EstimateEvidence(NOW - dt.timedelta(days=d, hours=1 + k), 150, 92, 6, 5) for d in range(7) for k in range(3)]
    estimates += [reading(50, 186, 112), reading(38, 183, 118)]
    state = PatientState(current_rung=1, last_change_at=NOW - dt.timedelta(days=60), adherence_share=1.0)
    proposal = propose_step(PlanRules(), ACE_CCB_THIAZIDE, state, estimates, now=NOW, usable_window_share=1.0)
    bounds = AutonomyBounds(auto_directions=frozenset(Direction), max_auto_rung=6)
    escalations = check_escalation(estimates, [], [], now=NOW)
    decision = route(proposal, bounds, estimates=estimates, calibration_age_days=1, adherence=1.0,
                     exclusions=(), escalations=escalations, now=NOW)
    assert proposal.kind.value == "step_up"
    assert decision.route is Route.REVIEW
    assert any(r.startswith("urgent: hypertensive crisis confirmed") for r in decision.reasons)


def cuff(minutes_ago: float, sbp: float, dbp: float, id_: int) -> EstimateEvidence:
    from therapy.evidence import CuffEvidence

    return EstimateEvidence.from_cuff(CuffEvidence(NOW - dt.timedelta(minutes=minutes_ago), sbp, dbp, True, reading_id=id_))


def test_a_crisis_cuff_reading_waits_for_its_repeat_then_escalates_on_its_own():
    assert check_escalation([cuff(2, 192, 124, 7)], [], [], now=NOW) == []  # the patient is repeating it
    late = check_escalation([cuff(6, 192, 124, 7)], [], [], now=NOW)
    assert [(i.kind, i.seek_care, i.sources) for i in late] == [(EscalationKind.CRISIS, True, frozenset({"cuff:7"}))]
    assert late[0].reason.startswith("crisis-level cuff reading 192/124 mmHg (cuff) not repeated within 5 min")


def test_a_crisis_cuff_reading_confirmed_by_its_repeat_escalates_at_once_and_a_lower_repeat_does_not():
    confirmed = check_escalation([cuff(2, 192, 124, 7), cuff(1, 188, 121, 8)], [], [], now=NOW)
    assert [i.kind for i in confirmed] == [EscalationKind.CRISIS] and confirmed[0].sources == {"cuff:7", "cuff:8"}
    assert check_escalation([cuff(8, 192, 124, 7), cuff(7, 150, 95, 8)], [], [], now=NOW) == []


def test_a_low_cuff_reading_not_repeated_holds_any_increase_and_alerts():
    items = check_escalation([cuff(9, 94, 60, 3)], [], [], now=NOW)
    assert [(i.kind, i.holds_increase, i.seek_care) for i in items] == [(EscalationKind.CONFIRMED_LOW_SBP, True, False)]


def test_evidence_stamped_a_few_minutes_ahead_still_counts_for_crisis_and_red_flags():
    ahead = [reading(-4, 190, 121, 1), reading(-3, 188, 122, 2)]
    assert [i.kind for i in check_escalation(ahead, [], [], now=NOW)] == [EscalationKind.CRISIS]
    pain = SymptomReport(Symptom.CHEST_PAIN, NOW + dt.timedelta(minutes=3))
    assert [i.kind for i in check_escalation([], [pain], [], now=NOW)] == [EscalationKind.RED_FLAG_SYMPTOM]


def test_naive_report_times_are_refused_when_the_report_is_made():
    import pytest

    with pytest.raises(ValueError):
        SymptomReport(Symptom.CHEST_PAIN, dt.datetime(2026, 3, 1, 9, 0))
    with pytest.raises(ValueError):
        SideEffectReport("dry cough", dt.datetime(2026, 3, 1, 9, 0))


def test_a_new_reading_is_checked_at_once_when_crisis_or_low_level_or_unknown():
    """The per-estimate check (monitoring.tasks._check_escalations) looks at the new reading alone;
    it fails closed on a value that is not a finite number."""
    checked = [(180, 90), (150, 120), (99.9, 60), (float("nan"), 80), (140, float("inf")), (-float("inf"), 80)]
    waits = [(179.9, 119.9), (100, 60), (135, 85)]
    assert all(needs_escalation_check(sbp_mmhg=s, dbp_mmhg=d) for s, d in checked)
    assert not any(needs_escalation_check(sbp_mmhg=s, dbp_mmhg=d) for s, d in waits)
