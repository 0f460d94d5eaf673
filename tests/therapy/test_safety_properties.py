"""Safety properties of the pure therapy path (titration -> escalation -> routing), by hypothesis.

1. Over arbitrary plans, bounds, estimates, flags and patient states: a suggestion is auto-released
   only if an independent check of every bound passes (and then it is released), review and hold
   decisions always name a reason, and a step never skips a rung.
2. From a generated case that WOULD auto-release, injecting any single hazard (failing bound,
   stale / insufficient / low-quality / uncalibrated data, crisis, hypotension, red flag, side
   effect, low adherence, exclusion, beyond the max rung, the model suspended by monitoring) means it
   is never auto-released.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import event, given, settings, strategies as st

from therapy.domain import (
    ACE_CCB_THIAZIDE,
    ARB_CCB_THIAZIDE,
    HYPOTENSION_SYMPTOMS,
    AutonomyBounds,
    Direction,
    EstimateEvidence,
    Exclusion,
    ExclusionKind,
    PatientState,
    PlanRules,
    ProposalKind,
    Route,
    SideEffectReport,
    Symptom,
    SymptomReport,
)
from therapy.escalation import check_escalation
from therapy.routing import route
from therapy.titration import propose_step

NOW = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
FLAGS = ("calibration is 35 days old (limit 28)",
         "the active model is the carry-forward baseline: the estimate repeats the calibration cuff reading")
FAST = settings(max_examples=150, deadline=None)


# ------------------------------------------------------------------------------ strategies

@st.composite
def plans(draw) -> PlanRules:
    target_sbp = draw(st.sampled_from([130.0, 135.0, 140.0]))
    return PlanRules(
        target_sbp_mmhg=target_sbp,
        target_dbp_mmhg=draw(st.sampled_from([80.0, 85.0, 90.0])),
        look_back_days=draw(st.sampled_from([3.0, 7.0, 14.0])),
        min_usable_estimates=draw(st.integers(1, 15)),
        min_distinct_days=draw(st.integers(1, 5)),
        min_days_between_changes=draw(st.sampled_from([0.0, 14.0, 28.0])),
        step_down_sbp_mmhg=draw(st.sampled_from([105.0, 110.0, 115.0])),
    )


@st.composite
def bounds_(draw) -> AutonomyBounds:
    return AutonomyBounds(
        auto_directions=frozenset(draw(st.sets(st.sampled_from(list(Direction))))),
        max_auto_rung=draw(st.integers(0, 7)),
        max_interval_halfwidth_mmhg=draw(st.sampled_from([5.0, 8.0, 10.0, 15.0])),
        min_usable_window_share=draw(st.sampled_from([0.0, 0.5, 0.7, 0.9])),
        calibration_max_age_days=draw(st.sampled_from([7.0, 14.0, 28.0])),
        max_latest_estimate_age_days=draw(st.sampled_from([1.0, 2.0, 5.0])),
        min_adherence_share=draw(st.sampled_from([0.8, 0.9])),
    )


@st.composite
def estimates_(draw, *, max_size: int = 40) -> list[EstimateEvidence]:
    n = draw(st.integers(0, max_size))
    out = []
    for i in range(n):
        out.append(EstimateEvidence(
            recorded_at=NOW - dt.timedelta(minutes=draw(st.integers(-120, 16 * 24 * 60))),
            sbp_mmhg=draw(st.floats(85, 200)),
            dbp_mmhg=draw(st.floats(50, 125)),
            sbp_halfwidth_mmhg=draw(st.floats(0, 20)),
            dbp_halfwidth_mmhg=draw(st.floats(0, 15)),
            interval_level=0.9,
            flags=draw(st.one_of(st.just(()), st.just(()), st.just(()), st.tuples(st.sampled_from(FLAGS)))),
            estimate_id=i + 1,
        ))
    return out


times_recent = st.integers(-60, 10 * 24 * 60).map(lambda m: NOW - dt.timedelta(minutes=m))
exclusions_ = st.frozensets(st.builds(Exclusion, st.sampled_from(list(ExclusionKind)),
                                      st.sampled_from(["", "atrial fibrillation", "12 weeks"])), max_size=2)
symptoms_ = st.lists(st.builds(SymptomReport, st.sampled_from(list(Symptom)), times_recent), max_size=2)
side_effects_ = st.lists(st.builds(SideEffectReport, st.sampled_from(["dry cough", "ankle swelling"]), times_recent),
                         max_size=1)
adherence_ = st.one_of(st.none(), st.floats(0, 1))
share_ = st.one_of(st.none(), st.floats(0, 1))
cal_age_ = st.one_of(st.none(), st.floats(0, 60))


def run(plan, ladder, bounds, state, estimates, *, share, cal_age, suspensions=()):
    proposal = propose_step(plan, ladder, state, estimates, now=NOW, usable_window_share=share)
    escalations = check_escalation(estimates, state.symptoms, state.side_effects, now=NOW)
    window = [e for e in estimates if NOW - dt.timedelta(days=plan.look_back_days) < e.recorded_at <= NOW]
    decision = route(proposal, bounds, estimates=window, calibration_age_days=cal_age,
                     adherence=state.adherence_share, exclusions=state.exclusions, escalations=escalations, now=NOW,
                     suspensions=suspensions)
    return proposal, escalations, window, decision


def independent_failures(plan, bounds, state, proposal, escalations, window, *, share, cal_age,
                         suspensions=()) -> list[str]:
    """Every reason an automatic release would be unsafe, checked here without the routing code."""
    failures = []
    if proposal.kind not in (ProposalKind.STEP_UP, ProposalKind.STEP_DOWN):
        failures.append("not a step")
        return failures
    up = proposal.to_rung > proposal.from_rung
    if (Direction.UP if up else Direction.DOWN) not in bounds.auto_directions:
        failures.append("direction")
    if proposal.to_rung > bounds.max_auto_rung:
        failures.append("beyond max rung")
    days = {e.recorded_at.astimezone(dt.timezone.utc).date() for e in window}
    if len(window) < plan.min_usable_estimates or len(days) < plan.min_distinct_days:
        failures.append("insufficient")
    if not window or (NOW - max(e.recorded_at for e in window)) > dt.timedelta(days=bounds.max_latest_estimate_age_days):
        failures.append("stale")
    if window:
        n = len(window)
        if max(sum(e.sbp_halfwidth_mmhg for e in window) / n,
               sum(e.dbp_halfwidth_mmhg for e in window) / n) > bounds.max_interval_halfwidth_mmhg + 1e-9:
            failures.append("wide interval")
    if share is None or share < bounds.min_usable_window_share:
        failures.append("low quality")
    if cal_age is None or cal_age > bounds.calibration_max_age_days:
        failures.append("uncalibrated")
    if any(e.flags for e in window):
        failures.append("flagged")
    if any(e.sbp_mmhg >= 180 or e.dbp_mmhg >= 120 for e in window):
        failures.append("crisis-level reading")
    if up and any(e.sbp_mmhg < 100 for e in window):
        failures.append("low reading before an increase")
    if up and (state.adherence_share is None or state.adherence_share < 0.8
               or state.adherence_share < bounds.min_adherence_share):
        failures.append("adherence")
    if state.exclusions:
        failures.append("excluded")
    if suspensions:
        failures.append("model suspended by monitoring")
    if escalations:
        failures.append("escalation")
    return failures


# ------------------------------------------------------------------------------ 1. arbitrary cases

@FAST
@given(plan=plans(), ladder=st.sampled_from([ACE_CCB_THIAZIDE, ARB_CCB_THIAZIDE]), bounds=bounds_(),
       estimates=estimates_(), data=st.data(), share=share_, cal_age=cal_age_)
def test_auto_release_exactly_when_every_bound_holds_and_steps_never_skip_a_rung(
        plan, ladder, bounds, estimates, data, share, cal_age):
    state = PatientState(
        current_rung=data.draw(st.integers(0, ladder.top)),
        last_change_at=data.draw(st.one_of(st.none(), st.integers(-2, 90).map(lambda d: NOW - dt.timedelta(days=d)))),
        adherence_share=data.draw(adherence_),
        exclusions=data.draw(st.one_of(st.just(frozenset()), exclusions_)),
        symptoms=tuple(data.draw(st.one_of(st.just([]), symptoms_))),
        side_effects=tuple(data.draw(st.one_of(st.just([]), side_effects_))),
    )
    suspensions = data.draw(st.one_of(st.just(()), st.just(("bp-1: SBP error SD 9.1 mmHg against cuff readings",))))
    proposal, escalations, window, decision = run(plan, ladder, bounds, state, estimates, share=share, cal_age=cal_age,
                                                  suspensions=suspensions)

    # a step never skips a rung, and stays on the ladder
    assert abs(proposal.to_rung - proposal.from_rung) <= 1
    assert ladder.has(proposal.to_rung)
    assert (proposal.kind is ProposalKind.STEP_UP) == (proposal.to_rung == proposal.from_rung + 1)
    assert (proposal.kind is ProposalKind.STEP_DOWN) == (proposal.to_rung == proposal.from_rung - 1)

    failures = independent_failures(plan, bounds, state, proposal, escalations, window, share=share, cal_age=cal_age,
                                    suspensions=suspensions)
    event(f"{proposal.kind.value} -> {decision.route.value}")
    if failures:
        assert not decision.auto_release, failures
        assert decision.reasons, "a decision that is not released names at least one reason"
        assert all(isinstance(r, str) and r.strip() for r in decision.reasons)
    else:
        assert decision.auto_release and decision.reasons == ()

    if proposal.kind in (ProposalKind.HOLD, ProposalKind.ESCALATE):
        assert decision.route is (Route.INFORMATION if proposal.kind is ProposalKind.HOLD else Route.REVIEW)
        assert proposal.reasons


@FAST
@given(plan=plans(), estimates=estimates_(), rung=st.integers(0, ACE_CCB_THIAZIDE.top),
       changed=st.integers(0, 90))
def test_titration_never_steps_up_while_a_change_is_younger_than_the_minimum_interval(plan, estimates, rung, changed):
    state = PatientState(current_rung=rung, last_change_at=NOW - dt.timedelta(days=changed), adherence_share=1.0)
    proposal = propose_step(plan, ACE_CCB_THIAZIDE, state, estimates, now=NOW, usable_window_share=1.0)
    if changed < plan.min_days_between_changes:
        assert proposal.kind is not ProposalKind.STEP_UP


# ------------------------------------------------------------------------------ 2. one hazard each

PLAN = PlanRules()


@st.composite
def releasable(draw):
    """An uncontrolled patient whose step up every bound allows (checked before use)."""
    limit = draw(st.sampled_from([8.0, 10.0, 12.0]))
    rung = draw(st.integers(0, ACE_CCB_THIAZIDE.top - 1))
    bounds = AutonomyBounds(
        auto_directions=frozenset({Direction.UP}) | draw(st.sets(st.just(Direction.DOWN))),
        max_auto_rung=draw(st.integers(rung + 1, ACE_CCB_THIAZIDE.top)),
        max_interval_halfwidth_mmhg=limit, min_usable_window_share=0.7, calibration_max_age_days=28.0,
    )
    estimates = [
        EstimateEvidence(NOW - dt.timedelta(days=d, minutes=draw(st.integers(10, 500))),
                         draw(st.floats(140, 175)), draw(st.floats(70, 110)),
                         draw(st.floats(0, limit)), draw(st.floats(0, limit)), 0.9, (), 100 * d + k)
        for d in range(7) for k in range(draw(st.integers(2, 4)))
    ]
    state = PatientState(current_rung=rung, last_change_at=NOW - dt.timedelta(days=draw(st.integers(28, 120))),
                         adherence_share=draw(st.floats(0.8, 1.0)))
    return bounds, state, estimates, draw(st.floats(0.7, 1.0)), draw(st.floats(0, 28))


def _pair(sbp: float, dbp: float, minutes_ago: int) -> list[EstimateEvidence]:
    return [EstimateEvidence(NOW - dt.timedelta(minutes=minutes_ago), sbp, dbp, 5, 5),
            EstimateEvidence(NOW - dt.timedelta(minutes=minutes_ago - 20), sbp, dbp, 5, 5)]


def _flag_one(estimates: list[EstimateEvidence], d) -> list[EstimateEvidence]:
    i = d.draw(st.integers(0, len(estimates) - 1))
    flagged = dataclasses.replace(estimates[i], flags=(d.draw(st.sampled_from(FLAGS)),))
    return [*estimates[:i], flagged, *estimates[i + 1:]]


HAZARDS = {
    "step up not allowed": lambda c, d: c | {"bounds": dataclasses.replace(
        c["bounds"], auto_directions=frozenset(d.draw(st.sampled_from([set(), {Direction.DOWN}]))))},
    "beyond the max rung": lambda c, d: c | {"bounds": dataclasses.replace(c["bounds"], max_auto_rung=c["state"].current_rung)},
    "wide interval": lambda c, d: c | {"estimates": [dataclasses.replace(
        e, sbp_halfwidth_mmhg=c["bounds"].max_interval_halfwidth_mmhg + d.draw(st.floats(0.5, 10))) for e in c["estimates"]]},
    "low share of usable windows": lambda c, d: c | {"share": d.draw(st.one_of(st.none(), st.floats(0, 0.69)))},
    "stale calibration": lambda c, d: c | {"cal_age": d.draw(st.floats(28.5, 400))},
    "uncalibrated": lambda c, d: c | {"cal_age": None},
    "a flagged estimate": lambda c, d: c | {"estimates": _flag_one(c["estimates"], d)},
    "insufficient data": lambda c, d: c | {"estimates": c["estimates"][: d.draw(st.integers(0, 11))]},
    "stale data": lambda c, d: c | {"estimates": [
        dataclasses.replace(e, recorded_at=e.recorded_at - dt.timedelta(days=d.draw(st.floats(2.5, 10))))
        for e in c["estimates"]]},
    "confirmed crisis": lambda c, d: c | {"estimates": c["estimates"] + _pair(
        d.draw(st.floats(180, 230)), d.draw(st.floats(90, 140)), d.draw(st.integers(25, 3000)))},
    "single crisis reading": lambda c, d: c | {"estimates": c["estimates"] + [EstimateEvidence(
        NOW - dt.timedelta(minutes=d.draw(st.integers(1, 3000))), 150, d.draw(st.floats(120, 140)), 5, 5)]},
    "confirmed low SBP": lambda c, d: c | {"estimates": c["estimates"] + _pair(
        d.draw(st.floats(70, 99.9)), 60, d.draw(st.integers(25, 3000)))},
    "hypotension symptom": lambda c, d: c | {"state": dataclasses.replace(c["state"], symptoms=(SymptomReport(
        d.draw(st.sampled_from(sorted(HYPOTENSION_SYMPTOMS))), NOW - dt.timedelta(minutes=d.draw(st.integers(1, 6 * 24 * 60)))),))},
    "red-flag symptom": lambda c, d: c | {"state": dataclasses.replace(c["state"], symptoms=(SymptomReport(
        d.draw(st.sampled_from([Symptom.CHEST_PAIN, Symptom.FAINTING, Symptom.SEVERE_HEADACHE,
                                Symptom.SHORTNESS_OF_BREATH, Symptom.NEUROLOGICAL])), NOW - dt.timedelta(hours=2)),))},
    "side effect": lambda c, d: c | {"state": dataclasses.replace(c["state"], side_effects=(
        SideEffectReport("dry cough", NOW - dt.timedelta(days=1)),))},
    "low adherence": lambda c, d: c | {"state": dataclasses.replace(
        c["state"], adherence_share=d.draw(st.one_of(st.none(), st.floats(0, 0.79))))},
    "excluded patient": lambda c, d: c | {"state": dataclasses.replace(
        c["state"], exclusions=frozenset({Exclusion(d.draw(st.sampled_from(list(ExclusionKind))))}))},
    "recent change": lambda c, d: c | {"state": dataclasses.replace(
        c["state"], last_change_at=NOW - dt.timedelta(days=d.draw(st.floats(0, 27.9))))},
    "model suspended by monitoring": lambda c, d: c | {"suspensions": ("bp-1: data drift: pat_foot_ms_median PSI 0.41",)},
}


@settings(max_examples=300, deadline=None)
@given(case=releasable(), hazard=st.sampled_from(sorted(HAZARDS)), data=st.data())
def test_any_single_hazard_stops_an_automatic_release(case, hazard, data):
    bounds, state, estimates, share, cal_age = case
    base = dict(bounds=bounds, state=state, estimates=estimates, share=share, cal_age=cal_age, suspensions=())

    def decide(c):
        return run(PLAN, ACE_CCB_THIAZIDE, c["bounds"], c["state"], c["estimates"], share=c["share"], cal_age=c["cal_age"],
                   suspensions=c["suspensions"])

    proposal, _, _, decision = decide(base)
    assert proposal.kind is ProposalKind.STEP_UP and decision.auto_release, decision.reasons  # the case is releasable

    proposal, _, _, decision = decide(HAZARDS[hazard](base, data))
    assert not decision.auto_release, hazard
    assert decision.reasons, hazard
    assert abs(proposal.to_rung - proposal.from_rung) <= 1
