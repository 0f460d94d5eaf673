"""Titration (DESIGN 4): from the recent estimates, propose one step on the ladder, or hold.

Pure: values in, a `Proposal` out; `now` is passed in. Units: mmHg, days, shares 0..1.

Evidence: the estimates with `now - look_back_days < recorded_at <= now` (the caller passes the
active model's estimates only). Their mean SBP/DBP is the basis of every decision. Flagged
estimates (stale calibration, baseline model) are INCLUDED in the mean: a flag says an estimate
may not support an automatic release, not that its number is wrong. Flags are carried in the
evidence and routing sends any proposal resting on a flagged estimate to a clinician.

Decision, in order (the first that applies):
1. Hypotension symptoms reported in the look-back -> step down one rung (even on little data:
   the patient should not wait for 12 readings; routing sends it to review). On the lowest rung:
   escalate to a clinician.
2. Not enough data (< min estimates or < min distinct days) -> hold, naming the rule.
3. Mean SBP < step-down threshold (110) -> step down one rung; on the lowest rung: hold, saying a
   clinician may consider stopping. Step downs are not held by the minimum interval.
4. Mean at or above target (SBP or DBP) -> wants a step up:
   a. a confirmed SBP < 100 in the look-back -> hold (any increase is held);
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
from statistics import fmean

from therapy.domain import (
    HYPOTENSION_SYMPTOMS,
    EstimateEvidence,
    EvidenceSummary,
    Ladder,
    PatientState,
    PlanRules,
    Proposal,
    ProposalKind,
)
from therapy.escalation import confirmed_pair, is_low_reading


def evidence_window(
    estimates: Sequence[EstimateEvidence], *, now: dt.datetime, look_back_days: float
) -> list[EstimateEvidence]:
    """The estimates in the look-back (days) ending at `now`, oldest first."""
    start = now - dt.timedelta(days=look_back_days)
    return sorted((e for e in estimates if start < e.recorded_at <= now), key=lambda e: e.recorded_at)


def summarise(
    estimates: Sequence[EstimateEvidence], *, rules: PlanRules, usable_window_share: float | None
) -> EvidenceSummary:
    """Aggregate the look-back estimates (already windowed) into the evidence of a proposal."""
    n = len(estimates)
    days = {e.recorded_at.astimezone(dt.timezone.utc).date() for e in estimates}
    flags: list[str] = []
    for e in estimates:
        for f in e.flags:
            if f not in flags:
                flags.append(f)
    first = estimates[0].recorded_at if n else None
    last = estimates[-1].recorded_at if n else None
    return EvidenceSummary(
        n_estimates=n,
        n_distinct_days=len(days),
        days_covered=((last - first).total_seconds() / 86400.0) if first and last else 0.0,
        mean_sbp_mmhg=fmean(e.sbp_mmhg for e in estimates) if n else None,
        mean_dbp_mmhg=fmean(e.dbp_mmhg for e in estimates) if n else None,
        mean_sbp_halfwidth_mmhg=fmean(e.sbp_halfwidth_mmhg for e in estimates) if n else None,
        mean_dbp_halfwidth_mmhg=fmean(e.dbp_halfwidth_mmhg for e in estimates) if n else None,
        interval_level=min(e.interval_level for e in estimates) if n else None,
        usable_window_share=usable_window_share,
        n_flagged=sum(1 for e in estimates if e.flags),
        flags=tuple(flags),
        first_at=first,
        last_at=last,
        estimate_ids=tuple(e.estimate_id for e in estimates if e.estimate_id is not None),
        sufficient=n >= rules.min_usable_estimates and len(days) >= rules.min_distinct_days,
    )


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
    return reasons


def propose_step(
    plan: PlanRules,
    ladder: Ladder,
    state: PatientState,
    estimates: Sequence[EstimateEvidence],
    *,
    now: dt.datetime,
    usable_window_share: float | None,
) -> Proposal:
    """Propose one step (or a hold, or an escalation) for a patient at `now`.

    usable_window_share: share (0..1) of the patient's recorded windows in the look-back that passed
    the quality gate; None if unknown. Carried as evidence for routing, not used to decide."""
    if not ladder.has(state.current_rung):
        raise ValueError(f"current rung {state.current_rung} is not on ladder {ladder.name!r} (0..{ladder.top})")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    current = state.current_rung
    window = evidence_window(estimates, now=now, look_back_days=plan.look_back_days)
    evidence = summarise(window, rules=plan, usable_window_share=usable_window_share)

    def make(kind: ProposalKind, to: int, *reasons: str) -> Proposal:
        return Proposal(
            kind=kind, from_rung=current, to_rung=to,
            from_regimen=ladder.describe(current), to_regimen=ladder.describe(to),
            evidence=evidence, reasons=tuple(reasons), evaluated_at=now,
        )

    mean = (
        f"{plan.look_back_days:g}-day mean {evidence.mean_sbp_mmhg:.0f}/{evidence.mean_dbp_mmhg:.0f} mmHg"
        if evidence.n_estimates else f"no estimates in the last {plan.look_back_days:g} days"
    )
    target = f"target below {plan.target_sbp_mmhg:g}/{plan.target_dbp_mmhg:g} mmHg"

    # 1. Symptoms of low blood pressure.
    start = now - dt.timedelta(days=plan.look_back_days)
    low_symptoms = [
        s for s in state.symptoms if s.symptom in HYPOTENSION_SYMPTOMS and start < s.reported_at <= now
    ]
    if low_symptoms:
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

    # 2. Data sufficiency.
    missing = _insufficiency(evidence, plan)
    if missing:
        return make(ProposalKind.HOLD, current, *missing)
    assert evidence.mean_sbp_mmhg is not None and evidence.mean_dbp_mmhg is not None

    # 3. Too low.
    if evidence.mean_sbp_mmhg < plan.step_down_sbp_mmhg:
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

    # 4. Above target.
    above = evidence.mean_sbp_mmhg >= plan.target_sbp_mmhg or evidence.mean_dbp_mmhg >= plan.target_dbp_mmhg
    if not above:
        return make(ProposalKind.HOLD, current, f"at target: {mean}, {target}")

    low = confirmed_pair(window, is_low_reading)
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
