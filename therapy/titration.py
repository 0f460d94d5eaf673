"""Titration (docs/clinical-rules.md): from the recent estimates, propose one step on the ladder, or hold.

Pure: values in, a `Proposal` out; `now` is passed in. Units: mmHg, days, shares 0..1.

Evidence (therapy/evidence.py): a complete home cuff series decides first; otherwise the estimates
with `now - look_back_days < recorded_at <= now` (the caller passes the active model's estimates
only), when there are enough of them. That mean SBP/DBP is the basis of every decision. Flagged
estimates (stale calibration, baseline model) are INCLUDED in the mean: a flag says an estimate
may not support an automatic release, not that its number is wrong. Flags are carried in the
evidence and routing sends any proposal resting on a flagged estimate to a clinician.

Decision, in order (the first that applies):
1. Hypotension symptoms reported in the look-back -> step down one rung (even on little data:
   the patient should not wait for 12 readings; routing sends it to review). On the lowest rung:
   escalate to a clinician.
2. Not enough data (no complete cuff series, and < min estimates or < min distinct days) -> hold,
   naming what the series and the wearable still need.
3. Mean SBP < step-down threshold (110) -> step down one rung; on the lowest rung: hold, saying a
   clinician may consider stopping. Step downs are not held by the minimum interval.
4. Mean at or above target (SBP or DBP) -> wants a step up:
   a. a confirmed SBP < 100 in the look-back (estimates or cuff readings) -> hold;
   b. last change less than the minimum interval ago -> hold, saying when;
   c. already on the top rung -> escalate: the ladder is exhausted, a clinician decides;
   d. otherwise step up ONE rung.
   Low adherence does not stop the proposal; routing never releases it automatically.
5. Otherwise -> hold: at target.
Never more than one rung per proposal.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from math import fsum

from therapy.domain import (
    HYPOTENSION_SYMPTOMS,
    EstimateDay,
    EstimateEvidence,
    EvidenceSummary,
    Ladder,
    PatientState,
    PlanRules,
    Proposal,
    ProposalKind,
)
from therapy.escalation import CRISIS_DBP_MMHG, CRISIS_SBP_MMHG, LOW_SBP_MMHG, confirmed_pair, is_low_reading
from therapy.evidence import (
    CLOCK_TOLERANCE,
    INTERVAL_LEVEL,
    CuffEvidence,
    EvidenceSource,
    MeanErrorModel,
    WearableAgreement,
    cuff_series,
)


def evidence_window(
    estimates: Sequence[EstimateEvidence], *, now: dt.datetime, look_back_days: float
) -> list[EstimateEvidence]:
    """The estimates in the look-back (days) ending at `now`, oldest first."""
    start = now - dt.timedelta(days=look_back_days)
    return sorted((e for e in estimates if start < e.recorded_at <= now), key=lambda e: e.recorded_at)


def days_in_look_back(days: Sequence[EstimateDay], *, now: dt.datetime, look_back_days: float) -> list[EstimateDay]:
    """The summed days (EstimateDay) of the look-back (days) ending at `now`, oldest first. A day
    reaching past either end, or holding a crisis- or low-level estimate (which the escalation and
    low checks must see one by one), must be read estimate by estimate instead: ValueError."""
    start = now - dt.timedelta(days=look_back_days)
    outside = [d.day for d in days if not (start < d.first_at and d.last_at <= now)]
    if outside:
        raise ValueError(f"summed days reach outside the look-back: {', '.join(map(str, outside))}")
    alarming = [d.day for d in days if not (d.min_sbp_mmhg >= LOW_SBP_MMHG and d.max_sbp_mmhg < CRISIS_SBP_MMHG
                                             and d.max_dbp_mmhg < CRISIS_DBP_MMHG)]
    if alarming:
        raise ValueError(f"summed days hold crisis- or low-level estimates: {', '.join(map(str, alarming))}")
    return sorted(days, key=lambda d: d.first_at)


def summarise(
    estimates: Sequence[EstimateEvidence], *, rules: PlanRules, usable_window_share: float | None,
    cuff_readings: Sequence[CuffEvidence] = (), now: dt.datetime | None = None,
    agreement: WearableAgreement | None = None, error_model: MeanErrorModel | None = None,
    days: Sequence[EstimateDay] = (),
) -> EvidenceSummary:
    """Aggregate the look-back estimates (already windowed) and the home cuff series ending at
    `now` into the evidence of a proposal, choosing the source that decides: a complete cuff series
    first, else the wearable's estimates when there are enough of them (routing then asks whether
    the wearable is trusted for this patient).

    error_model: the active model's mean-interval model (None: unknown, the interval of the mean is
    taken as the mean of the windows' own half-widths, as if every error were shared).

    days: whole days of estimates taken as sums (EstimateDay, inside the look-back and not among
    `estimates`): they count exactly as their estimates would, one by one."""
    n = len(estimates) + sum(d.n for d in days)
    distinct_days = {e.recorded_at.astimezone(dt.timezone.utc).date() for e in estimates} | {d.day for d in days}
    flags: list[str] = []
    for f in (*(f for e in estimates for f in e.flags), *(f for d in days for f in d.flags)):
        if f not in flags:
            flags.append(f)
    times = [*(e.recorded_at for e in estimates[:1]), *(e.recorded_at for e in estimates[-1:]),
             *(t for d in days for t in (d.first_at, d.last_at))]
    first = min(times) if n else None
    last = max(times) if n else None
    wearable_sbp = fsum([*(e.sbp_mmhg for e in estimates), *(d.sum_sbp_mmhg for d in days)]) / n if n else None
    wearable_dbp = fsum([*(e.dbp_mmhg for e in estimates), *(d.sum_dbp_mmhg for d in days)]) / n if n else None
    wearable_enough = n >= rules.min_usable_estimates and len(distinct_days) >= rules.min_distinct_days
    series = None
    if now is not None:
        series = cuff_series(cuff_readings, rules.protocol, now=now)
    halfwidths: tuple[float | None, float | None] = (None, None)
    if n:
        if error_model is not None:
            halfwidths = (error_model.halfwidth_mmhg("sbp", n), error_model.halfwidth_mmhg("dbp", n))
        else:
            halfwidths = (fsum([*(e.sbp_halfwidth_mmhg for e in estimates), *(d.sum_sbp_halfwidth_mmhg for d in days)]) / n,
                          fsum([*(e.dbp_halfwidth_mmhg for e in estimates), *(d.sum_dbp_halfwidth_mmhg for d in days)]) / n)
    if series is not None and series.complete:
        source, means = EvidenceSource.CUFF_SERIES, (series.mean_sbp_mmhg, series.mean_dbp_mmhg)
        halfwidths = (series.sbp_halfwidth_mmhg, series.dbp_halfwidth_mmhg)
        level: float | None = INTERVAL_LEVEL
    elif n:
        source = EvidenceSource.WEARABLE if wearable_enough else EvidenceSource.NONE
        means = (wearable_sbp, wearable_dbp)
        level = min([*(e.interval_level for e in estimates), *(d.min_interval_level for d in days)])
    elif series is not None and series.n_readings:
        source, means = EvidenceSource.NONE, (series.mean_sbp_mmhg, series.mean_dbp_mmhg)
        halfwidths, level = (series.sbp_halfwidth_mmhg, series.dbp_halfwidth_mmhg), INTERVAL_LEVEL
    else:
        source, means, level = EvidenceSource.NONE, (None, None), None
    return EvidenceSummary(
        n_estimates=n,
        n_distinct_days=len(distinct_days),
        days_covered=((last - first).total_seconds() / 86400.0) if first and last else 0.0,
        mean_sbp_mmhg=means[0],
        mean_dbp_mmhg=means[1],
        mean_sbp_halfwidth_mmhg=halfwidths[0],
        mean_dbp_halfwidth_mmhg=halfwidths[1],
        interval_level=level,
        usable_window_share=usable_window_share,
        n_flagged=sum(1 for e in estimates if e.flags) + sum(d.n_flagged for d in days),
        flags=tuple(flags),
        first_at=first,
        last_at=last,
        estimate_ids=tuple(e.estimate_id for e in estimates if e.estimate_id is not None),
        sufficient=source is not EvidenceSource.NONE,
        source=source.value,
        summed_days=tuple(d.day for d in days),
        cuff_series=series,
        wearable_mean_sbp_mmhg=wearable_sbp,
        wearable_mean_dbp_mmhg=wearable_dbp,
        agreement=agreement,
    )


def describe_mean(evidence: EvidenceSummary, plan: PlanRules) -> str:
    """The deciding mean in words, naming its source and counts ("home cuff series mean 142/90 mmHg
    (14 readings on 6 days)"; "7-day mean of wearable estimates 138/86 mmHg (40 on 7 days)")."""
    series = evidence.cuff_series
    if evidence.source == EvidenceSource.CUFF_SERIES.value and series is not None:
        return (f"home cuff series mean {evidence.mean_sbp_mmhg:.0f}/{evidence.mean_dbp_mmhg:.0f} mmHg "
                f"({series.n_readings} readings on {series.n_days} days)")
    if evidence.n_estimates:
        return (f"{plan.look_back_days:g}-day mean of wearable estimates {evidence.wearable_mean_sbp_mmhg:.0f}/"
                f"{evidence.wearable_mean_dbp_mmhg:.0f} mmHg ({evidence.n_estimates} on {evidence.n_distinct_days} days)")
    if series is not None and series.n_readings:
        return (f"home cuff readings so far {evidence.mean_sbp_mmhg:.0f}/{evidence.mean_dbp_mmhg:.0f} mmHg "
                f"({series.n_readings} readings on {series.n_days} days, series incomplete)")
    return f"no estimates or home cuff readings in the last {plan.look_back_days:g} days"


def _insufficiency(evidence: EvidenceSummary, rules: PlanRules) -> list[str]:
    reasons = []
    if evidence.n_estimates < rules.min_usable_estimates:
        reasons.append(
            f"not enough data: {evidence.n_estimates} usable estimates in the last {rules.look_back_days:g} days, "
            f"the plan needs at least {rules.min_usable_estimates}"
        )
    if evidence.n_distinct_days < rules.min_distinct_days:
        reasons.append(
            f"not enough data: estimates on {evidence.n_distinct_days} distinct days in the last "
            f"{rules.look_back_days:g} days, the plan needs at least {rules.min_distinct_days}"
        )
    series = evidence.cuff_series
    if series is not None:
        reasons.extend(f"home cuff series incomplete: {missing}" for missing in series.missing)
    return reasons


def propose_step(
    plan: PlanRules,
    ladder: Ladder,
    state: PatientState,
    estimates: Sequence[EstimateEvidence],
    *,
    now: dt.datetime,
    usable_window_share: float | None,
    cuff_readings: Sequence[CuffEvidence] = (),
    agreement: WearableAgreement | None = None,
    error_model: MeanErrorModel | None = None,
    estimate_days: Sequence[EstimateDay] = (),
) -> Proposal:
    """Propose one step (or a hold, or an escalation) for a patient at `now`.

    usable_window_share: share (0..1) of the patient's recorded windows in the look-back that passed
    the quality gate; None if unknown. Carried as evidence for routing, not used to decide.
    cuff_readings: the patient's cuff readings (mmHg) of at least the series days; a complete home
    series decides before the wearable. agreement, error_model: carried for routing (see summarise).
    estimate_days: whole days of estimates inside the look-back taken as sums, not among `estimates`
    (see summarise); a caller passes as sums only days without a crisis- or low-level estimate,
    so the low check below sees every reading that could meet it."""
    if not ladder.has(state.current_rung):
        raise ValueError(f"current rung {state.current_rung} is not on ladder {ladder.name!r} (0..{ladder.top})")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    window = evidence_window(estimates, now=now, look_back_days=plan.look_back_days)
    days = days_in_look_back(estimate_days, now=now, look_back_days=plan.look_back_days)
    evidence = summarise(window, rules=plan, usable_window_share=usable_window_share, cuff_readings=cuff_readings,
                         now=now, agreement=agreement, error_model=error_model, days=days)
    # Low and crisis checks see every reading, cuff readings beside the wearable's estimates.
    readings = [*window, *(EstimateEvidence.from_cuff(r) for r in cuff_readings
                           if now - dt.timedelta(days=plan.look_back_days) < r.measured_at <= now + CLOCK_TOLERANCE)]
    make = _ProposalMaker(ladder=ladder, current=state.current_rung, evidence=evidence, now=now)
    mean = describe_mean(evidence, plan)

    # In this order: symptoms of low blood pressure, enough data, too low, above target.
    proposal = _step_for_low_symptoms(plan, state, now=now, mean=mean, make=make)
    if proposal is not None:
        return proposal
    missing = [] if evidence.sufficient else _insufficiency(evidence, plan)
    if missing:
        return make(ProposalKind.HOLD, state.current_rung, *missing)
    assert evidence.mean_sbp_mmhg is not None and evidence.mean_dbp_mmhg is not None
    proposal = _step_down_when_too_low(plan, state.current_rung, mean_sbp_mmhg=evidence.mean_sbp_mmhg, mean=mean,
                                       make=make)
    if proposal is not None:
        return proposal
    return _step_when_above_target(plan, ladder, state, readings, mean_sbp_mmhg=evidence.mean_sbp_mmhg,
                                   mean_dbp_mmhg=evidence.mean_dbp_mmhg, now=now, mean=mean, make=make)


@dataclass(frozen=True)
class _ProposalMaker:
    """A proposal from the current rung to `to` for the reasons given, carrying the evidence."""

    ladder: Ladder
    current: int
    evidence: EvidenceSummary
    now: dt.datetime

    def __call__(self, kind: ProposalKind, to: int, *reasons: str) -> Proposal:
        return Proposal(
            kind=kind, from_rung=self.current, to_rung=to,
            from_regimen=self.ladder.describe(self.current), to_regimen=self.ladder.describe(to),
            evidence=self.evidence, reasons=tuple(reasons), evaluated_at=self.now,
        )


def _step_for_low_symptoms(plan: PlanRules, state: PatientState, *, now: dt.datetime, mean: str,
                           make: _ProposalMaker) -> Proposal | None:
    """Symptoms of low blood pressure in the look-back: one rung down, or a clinician on the lowest."""
    current = state.current_rung
    start = now - dt.timedelta(days=plan.look_back_days)
    low_symptoms = [
        s for s in state.symptoms if s.symptom in HYPOTENSION_SYMPTOMS and start < s.reported_at <= now
    ]
    if not low_symptoms:
        return None
    said = ", ".join(s.describe() for s in low_symptoms)
    if current == 0:
        return make(
            ProposalKind.ESCALATE, current,
            f"symptoms of low blood pressure reported ({said}) on the lowest rung: a clinician decides ({mean})",
        )
    return make(
        ProposalKind.STEP_DOWN, current - 1,
        f"step down one rung: symptoms of low blood pressure reported ({said}); {mean}",
    )


def _step_down_when_too_low(plan: PlanRules, current: int, *, mean_sbp_mmhg: float, mean: str,
                            make: _ProposalMaker) -> Proposal | None:
    """Mean SBP (mmHg) below the plan's step-down level: one rung down, or a hold on the lowest."""
    if not mean_sbp_mmhg < plan.step_down_sbp_mmhg:  # as written, so that NaN is never "too low"
        return None
    if current == 0:
        return make(
            ProposalKind.HOLD, current,
            f"{mean}: SBP below {plan.step_down_sbp_mmhg:g} mmHg on the lowest rung; "
            "a clinician may consider stopping treatment",
        )
    return make(
        ProposalKind.STEP_DOWN, current - 1,
        f"step down one rung: {mean}, SBP below {plan.step_down_sbp_mmhg:g} mmHg",
    )


def _step_when_above_target(plan: PlanRules, ladder: Ladder, state: PatientState, readings: list[EstimateEvidence],
                            *, mean_sbp_mmhg: float, mean_dbp_mmhg: float, now: dt.datetime, mean: str,
                            make: _ProposalMaker) -> Proposal:
    """At target: hold. Above it (SBP or DBP, mmHg): hold for a confirmed low reading or a change made
    too recently, a clinician on the top rung, else one rung up."""
    current = state.current_rung
    target = f"target below {plan.target_sbp_mmhg:g}/{plan.target_dbp_mmhg:g} mmHg"
    if not (mean_sbp_mmhg >= plan.target_sbp_mmhg or mean_dbp_mmhg >= plan.target_dbp_mmhg):
        return make(ProposalKind.HOLD, current, f"at target: {mean}, {target}")
    low = confirmed_pair(readings, is_low_reading)
    if low is not None:
        return make(
            ProposalKind.HOLD, current,
            f"above target ({mean}, {target}) but SBP below 100 mmHg was confirmed on "
            f"{low[1].recorded_at:%Y-%m-%d %H:%M}: any increase is held for a clinician",
        )
    if state.last_change_at is not None:
        since_days = (now - state.last_change_at).total_seconds() / 86400.0
        if since_days < plan.min_days_between_changes:
            return make(
                ProposalKind.HOLD, current,
                f"above target ({mean}, {target}) but the last change was {since_days:.0f} days ago; "
                f"the minimum interval between changes is {plan.min_days_between_changes:g} days",
            )
    if current >= ladder.top:
        return make(
            ProposalKind.ESCALATE, current,
            f"above target ({mean}, {target}) on the top rung of the ladder "
            f"({ladder.label(current)}): a clinician decides the next step",
        )
    return make(
        ProposalKind.STEP_UP, current + 1,
        f"step up one rung: {mean} is above the {target}",
    )
