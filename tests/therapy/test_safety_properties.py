"""Safety properties of the pure therapy path (titration -> escalation -> routing), by hypothesis.

1. Over arbitrary plans, bounds, estimates, flags and patient states: a suggestion is auto-released
   only if an independent check of every bound passes (and then it is released), review and hold
   decisions always name a reason, and a step never skips a rung.
2. From a generated case that WOULD auto-release, injecting any single hazard (failing bound,
   stale / insufficient / low-quality / uncalibrated data, crisis, hypotension, red flag, side
   effect, low adherence, exclusion, beyond the max rung, the model suspended by monitoring, an
   untrusted wearable, a crisis or confirmed low cuff reading) means it is never auto-released.
3. Home cuff series: over arbitrary cuff readings, estimates and wearable agreements, an automatic
   release rests on a complete series from validated cuffs or, without one, on a wearable trusted
   for this patient, and never crosses a crisis-level reading; and from a releasable complete
   series, an incomplete one, an unvalidated cuff or a crisis reading stops the release.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from hypothesis import event, given, settings
from hypothesis import strategies as st

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
from therapy.evidence import CuffEvidence, WearableAgreement
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


# The patient's wearable agrees with their cuff (within ISO 81060-2's numbers, enough pairs).
TRUSTED = WearableAgreement(n_pairs=8, period_days=60, sbp_bias_mmhg=1.5, sbp_sd_mmhg=5.0, sbp_mae_mmhg=4.0,
                            dbp_bias_mmhg=-1.0, dbp_sd_mmhg=4.0, dbp_mae_mmhg=3.2)


@st.composite
def agreements(draw) -> WearableAgreement:
    n = draw(st.integers(0, 12))
    fig = st.one_of(st.none(), st.floats(-12, 12))
    sd = st.one_of(st.none(), st.floats(0, 14))
    return WearableAgreement(n_pairs=n, period_days=60, sbp_bias_mmhg=draw(fig), sbp_sd_mmhg=draw(sd),
                             sbp_mae_mmhg=None, dbp_bias_mmhg=draw(fig), dbp_sd_mmhg=draw(sd), dbp_mae_mmhg=None)


def trusted(agreement: WearableAgreement, bounds: AutonomyBounds) -> bool:
    """The trust rule, written out here without the evidence code."""
    figures = (agreement.sbp_bias_mmhg, agreement.dbp_bias_mmhg, agreement.sbp_sd_mmhg, agreement.dbp_sd_mmhg)
    return (agreement.n_pairs >= bounds.agreement_min_pairs and None not in figures
            and abs(agreement.sbp_bias_mmhg) <= bounds.agreement_max_bias_mmhg
            and abs(agreement.dbp_bias_mmhg) <= bounds.agreement_max_bias_mmhg
            and agreement.sbp_sd_mmhg <= bounds.agreement_max_sd_mmhg
            and agreement.dbp_sd_mmhg <= bounds.agreement_max_sd_mmhg)


def run(plan, ladder, bounds, state, estimates, *, share, cal_age, suspensions=(), agreement=TRUSTED, cuff=()):
    proposal = propose_step(plan, ladder, state, estimates, now=NOW, usable_window_share=share, agreement=agreement,
                            cuff_readings=cuff)
    window = [e for e in estimates if NOW - dt.timedelta(days=plan.look_back_days) < e.recorded_at <= NOW]
    readings = [*estimates, *(EstimateEvidence.from_cuff(r) for r in cuff)]
    escalations = check_escalation(readings, state.symptoms, state.side_effects, now=NOW)
    seen = [*window, *(EstimateEvidence.from_cuff(r) for r in cuff
                       if NOW - dt.timedelta(days=plan.look_back_days) < r.measured_at <= NOW + dt.timedelta(minutes=5))]
    decision = route(proposal, bounds, estimates=seen, calibration_age_days=cal_age,
                     adherence=state.adherence_share, exclusions=state.exclusions, escalations=escalations, now=NOW,
                     suspensions=suspensions)
    return proposal, escalations, window, decision


def independent_failures(plan, bounds, state, proposal, escalations, window, *, share, cal_age,
                         suspensions=(), agreement=TRUSTED) -> list[str]:
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
    if not trusted(agreement, bounds):
        failures.append("wearable not trusted for this patient")
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
    agreement = data.draw(st.one_of(st.just(TRUSTED), agreements()))
    proposal, escalations, window, decision = run(plan, ladder, bounds, state, estimates, share=share, cal_age=cal_age,
                                                  suspensions=suspensions, agreement=agreement)

    # a step never skips a rung, and stays on the ladder
    assert abs(proposal.to_rung - proposal.from_rung) <= 1
    assert ladder.has(proposal.to_rung)
    assert (proposal.kind is ProposalKind.STEP_UP) == (proposal.to_rung == proposal.from_rung + 1)
    assert (proposal.kind is ProposalKind.STEP_DOWN) == (proposal.to_rung == proposal.from_rung - 1)

    failures = independent_failures(plan, bounds, state, proposal, escalations, window, share=share, cal_age=cal_age,
                                    suspensions=suspensions, agreement=agreement)
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


def _cuff_pair(sbp: float, dbp: float, minutes_ago: int) -> tuple[CuffEvidence, ...]:
    """Two readings of one sitting, a minute apart, from a validated cuff."""
    return (CuffEvidence(NOW - dt.timedelta(minutes=minutes_ago), sbp, dbp, True),
            CuffEvidence(NOW - dt.timedelta(minutes=minutes_ago - 1), sbp, dbp, True))


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
    "wearable not trusted for this patient": lambda c, d: c | {"agreement": d.draw(
        agreements().filter(lambda a: not trusted(a, c["bounds"])))},
    "a crisis cuff reading": lambda c, d: c | {"cuff": (CuffEvidence(
        NOW - dt.timedelta(minutes=d.draw(st.integers(1, 6 * 24 * 60))), d.draw(st.floats(180, 230)), 95.0, True),)},
    "a confirmed low cuff reading": lambda c, d: c | {"cuff": _cuff_pair(d.draw(st.floats(70, 99.9)), 60.0,
                                                                          d.draw(st.integers(5, 3000)))},
}


@settings(max_examples=300, deadline=None)
@given(case=releasable(), hazard=st.sampled_from(sorted(HAZARDS)), data=st.data())
def test_any_single_hazard_stops_an_automatic_release(case, hazard, data):
    bounds, state, estimates, share, cal_age = case
    base = dict(bounds=bounds, state=state, estimates=estimates, share=share, cal_age=cal_age, suspensions=(),
                agreement=TRUSTED, cuff=())

    def decide(c):
        return run(PLAN, ACE_CCB_THIAZIDE, c["bounds"], c["state"], c["estimates"], share=c["share"], cal_age=c["cal_age"],
                   suspensions=c["suspensions"], agreement=c["agreement"], cuff=c["cuff"])

    proposal, _, _, decision = decide(base)
    assert proposal.kind is ProposalKind.STEP_UP and decision.auto_release, decision.reasons  # the case is releasable

    proposal, _, _, decision = decide(HAZARDS[hazard](base, data))
    assert not decision.auto_release, hazard
    assert decision.reasons, hazard
    assert abs(proposal.to_rung - proposal.from_rung) <= 1


# ------------------------------------------------------------------------------ 3. home cuff series

SERIES_DAY = dt.timedelta(days=1)


@st.composite
def cuff_readings_(draw) -> list[CuffEvidence]:
    validated = draw(st.sampled_from(["all", "some", "none"]))
    out = []
    for i in range(draw(st.integers(0, 30))):
        out.append(CuffEvidence(
            NOW - dt.timedelta(minutes=draw(st.integers(-4, 9 * 24 * 60))), draw(st.floats(95, 200)),
            draw(st.floats(55, 125)), validated == "all" or (validated == "some" and draw(st.booleans())),
            reading_id=i + 1,
        ))
    return out


def series_as_written(cuff: list[CuffEvidence], plan: PlanRules) -> tuple[bool, bool]:
    """(complete, every kept reading from a validated cuff): the protocol written out here."""
    kept = [r for r in cuff if NOW - dt.timedelta(days=plan.series_days) < r.measured_at <= NOW + dt.timedelta(minutes=5)]
    if kept and plan.series_discard_first_day:
        first = min(r.measured_at.date() for r in kept)
        kept = [r for r in kept if r.measured_at.date() != first]
    days = {r.measured_at.date() for r in kept}
    return (len(kept) >= plan.series_min_readings and len(days) >= plan.series_min_days,
            all(r.validated_cuff for r in kept))


@FAST
@given(estimates=estimates_(), cuff=cuff_readings_(), agreement=st.one_of(st.just(TRUSTED), agreements()),
       share=share_, cal_age=cal_age_, rung=st.integers(0, ACE_CCB_THIAZIDE.top))
def test_an_automatic_release_rests_on_a_complete_validated_series_or_a_trusted_wearable(
        estimates, cuff, agreement, share, cal_age, rung):
    bounds = AutonomyBounds(auto_directions=frozenset(Direction), max_auto_rung=ACE_CCB_THIAZIDE.top,
                            max_interval_halfwidth_mmhg=15.0, min_usable_window_share=0.0)
    state = PatientState(current_rung=rung, last_change_at=NOW - dt.timedelta(days=90), adherence_share=1.0)
    proposal, _, window, decision = run(PLAN, ACE_CCB_THIAZIDE, bounds, state, estimates, share=share, cal_age=cal_age,
                                        agreement=agreement, cuff=cuff)
    complete, validated = series_as_written(cuff, PLAN)
    event(f"series {'complete' if complete else 'incomplete'} -> {decision.route.value}")
    if not decision.auto_release:
        return
    if complete:
        assert validated, "a series with a reading from an unvalidated cuff released a change"
        assert proposal.evidence.source == "cuff series"
    else:
        assert trusted(agreement, bounds), "an incomplete series and an untrusted wearable released a change"
        assert proposal.evidence.source == "wearable estimates"
    look_back = [r for r in cuff if NOW - dt.timedelta(days=PLAN.look_back_days) < r.measured_at <= NOW]
    assert not any(r.sbp_mmhg >= 180 or r.dbp_mmhg >= 120 for r in [*look_back, *window]), "released across a crisis"


@st.composite
def releasable_series(draw):
    """An uncontrolled patient with a complete home series from a validated cuff (morning and evening,
    two readings a minute apart, days 1-6 before now; day 7 is the discarded first day) and no wearable."""
    mean_sbp, mean_dbp = draw(st.floats(142, 165)), draw(st.floats(80, 100))
    cuff = []
    for day in range(1, 7):
        for hour in (7, 20):
            at = NOW.replace(hour=hour, minute=0) - dt.timedelta(days=day)
            for k in range(2):
                cuff.append(CuffEvidence(at + dt.timedelta(minutes=k), mean_sbp + draw(st.floats(-4, 4)),
                                         mean_dbp + draw(st.floats(-3, 3)), True, "Omron M3 Comfort", len(cuff) + 1))
    first_day = NOW.replace(hour=20, minute=0) - dt.timedelta(days=7)  # discarded: a first day runs high
    cuff.append(CuffEvidence(first_day, 172.0, 104.0, True, "Omron M3 Comfort", len(cuff) + 1))
    rung = draw(st.integers(0, ACE_CCB_THIAZIDE.top - 1))
    bounds = AutonomyBounds(auto_directions=frozenset({Direction.UP}), max_auto_rung=ACE_CCB_THIAZIDE.top,
                            max_interval_halfwidth_mmhg=10.0)
    state = PatientState(current_rung=rung, last_change_at=NOW - dt.timedelta(days=60), adherence_share=0.95)
    return bounds, state, cuff


def _drop_to_incomplete(cuff, d):
    keep = d.draw(st.sampled_from(["few readings", "few days"]))
    kept = [r for r in cuff if (NOW - r.measured_at) < dt.timedelta(days=6, hours=12)]
    if keep == "few readings":
        return tuple(kept[: d.draw(st.integers(0, 11))])
    return tuple(r for r in kept if (NOW - r.measured_at) < dt.timedelta(days=3, hours=12))


def _unvalidate_one(cuff, index):
    """The series' reading `index` (0-23; 24 is the discarded first day) from an unvalidated cuff."""
    return tuple(dataclasses.replace(r, validated_cuff=False, cuff="Acme wrist cuff") if i == index else r
                 for i, r in enumerate(cuff))


SERIES_HAZARDS = {
    "incomplete series": _drop_to_incomplete,
    "a reading from an unvalidated cuff": lambda cuff, d: _unvalidate_one(cuff, d.draw(st.integers(0, 23))),
    "a crisis cuff reading": lambda cuff, d: (*cuff, CuffEvidence(
        NOW - dt.timedelta(minutes=d.draw(st.integers(1, 6 * 24 * 60))), 150.0, d.draw(st.floats(120, 140)), True)),
}


@settings(max_examples=150, deadline=None)
@given(case=releasable_series(), hazard=st.sampled_from(sorted(SERIES_HAZARDS)), data=st.data())
def test_a_complete_validated_series_releases_and_any_series_hazard_stops_it(case, hazard, data):
    bounds, state, cuff = case
    proposal, _, _, decision = run(PLAN, ACE_CCB_THIAZIDE, bounds, state, [], share=None, cal_age=None,
                                   agreement=WearableAgreement(0, 60, None, None, None, None, None, None), cuff=tuple(cuff))
    assert proposal.kind is ProposalKind.STEP_UP and decision.auto_release, decision.reasons
    assert proposal.evidence.source == "cuff series" and proposal.evidence.cuff_series.n_readings == 24

    proposal, _, _, decision = run(PLAN, ACE_CCB_THIAZIDE, bounds, state, [], share=None, cal_age=None,
                                   agreement=WearableAgreement(0, 60, None, None, None, None, None, None),
                                   cuff=SERIES_HAZARDS[hazard](tuple(cuff), data))
    assert not decision.auto_release, hazard
    assert decision.reasons, hazard
