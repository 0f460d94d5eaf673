"""Routing (docs/clinical-rules.md): does a proposal go to the patient automatically, or to a clinician?

Pure: values in, a `RoutingDecision` out; `now` is passed in. Units: mmHg, days, shares 0..1.

- A hold changes nothing: it is never released, it is shown for information (Route.INFORMATION)
  with its reasons (plus any urgent escalation). Escalations are their own urgent review items.
- An escalate proposal always goes to review.
- A step up or down is auto-released only if EVERY bound holds; otherwise it goes to review with
  each failing bound named in words a clinician understands:
  direction allowed; exactly one rung; to-rung <= max automatic rung; data sufficient; newest
  reading fresh; the interval of the deciding MEAN (SBP and DBP) <= limit; when a home cuff series
  decides, every reading of it from a validated cuff; when the wearable decides, the patient's own
  agreement with their cuff within the trust bounds, usable-window share known and >= minimum,
  calibration age known and <= limit, and no flagged estimate (in the evidence or among the
  estimates passed); no crisis-level reading at all, estimate or cuff (even unconfirmed); for a step up no
  SBP < 100 reading and adherence known and >= 80 % (more drug is not the answer to missed
  doses); no exclusion; no monitoring suspension of the model; no escalation (those passed in, and those found again here from the
  estimates, as a second line of defence); the proposal not computed in the future nor more than
  a day before `now`.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from typing import TypeGuard

from therapy.domain import (
    AutonomyBounds,
    Direction,
    Escalation,
    EstimateEvidence,
    EvidenceSummary,
    Exclusion,
    Proposal,
    ProposalKind,
    Route,
    RoutingDecision,
)
from therapy.escalation import check_escalation, is_crisis_reading, is_low_reading
from therapy.evidence import EvidenceSource, trust_problems

# A proposal older than this is re-evaluated, not released (days).
MAX_PROPOSAL_AGE_DAYS = 1.0


def _pct(share: float) -> str:
    return f"{100.0 * share:.0f} %"


def _num(x: float | None) -> TypeGuard[float]:
    return x is not None and math.isfinite(x)


def _cuff_series_problems(ev: EvidenceSummary) -> list[str]:
    """A series decides only if every reading in it comes from a cuff marked validated."""
    series = ev.cuff_series
    if series is None:
        return ["home cuff series unknown"]
    if series.n_unvalidated:
        return [f"{series.n_unvalidated} of {series.n_readings} home readings from a cuff not marked validated "
                f"({', '.join(series.unvalidated_cuffs)}); an administrator marks a cuff model validated"]
    return []


def _wearable_problems(ev: EvidenceSummary, bounds: AutonomyBounds, estimates: Sequence[EstimateEvidence],
                       calibration_age_days: float | None) -> list[str]:
    """The wearable decides only for a patient whose own agreement with their cuff holds, on
    unflagged, calibrated estimates from windows of good quality."""
    failing: list[str] = []
    if ev.agreement is None:
        failing.append("wearable agreement with the patient's cuff unknown")
    else:
        failing.extend(trust_problems(ev.agreement, bounds.trust))
    share = ev.usable_window_share
    if share is None or not math.isfinite(share):
        failing.append("share of usable recordings unknown")
    elif not share >= bounds.min_usable_window_share:
        failing.append(
            f"too few usable recordings: {_pct(share)} of windows usable over the look-back, "
            f"minimum {_pct(bounds.min_usable_window_share)}"
        )
    if calibration_age_days is None or not math.isfinite(calibration_age_days):
        failing.append("no cuff calibration on record")
    elif not calibration_age_days <= bounds.calibration_max_age_days:
        failing.append(
            f"calibration is {calibration_age_days:.0f} days old, limit {bounds.calibration_max_age_days:g} days"
        )
    flags = list(ev.flags)
    flagged = [e for e in estimates if e.flags and not e.is_cuff]
    for e in flagged:
        for f in e.flags:
            if f not in flags:
                flags.append(f)
    if ev.n_flagged or flagged or flags:
        n = max(ev.n_flagged, len(flagged))
        failing.append(f"{n} estimate(s) flagged as unfit for an automatic change: {'; '.join(flags) or 'flagged'}")
    return failing


def _urgent_reasons(estimates: Sequence[EstimateEvidence], escalations: Sequence[Escalation],
                    now: dt.datetime) -> list[str]:
    """The escalations passed in, and those found again here from the estimates as a second line
    of defence, each named once."""
    found_again = check_escalation(estimates, (), (), now=now)
    urgent: list[str] = []
    for item in (*escalations, *found_again):
        text = f"urgent: {item.reason}"
        if text not in urgent:
            urgent.append(text)
    return urgent


def _step_problems(proposal: Proposal, direction: Direction, bounds: AutonomyBounds) -> list[str]:
    """The step itself: a direction the plan allows, one rung, no higher than the plan lets go."""
    failing: list[str] = []
    if direction not in bounds.auto_directions:
        allowed = ", ".join(sorted(d.value for d in bounds.auto_directions)) or "none"
        failing.append(f"automatic steps {direction.value} are not allowed by this plan (allowed automatically: {allowed})")
    if abs(proposal.to_rung - proposal.from_rung) != 1:
        failing.append(f"the proposal moves {abs(proposal.to_rung - proposal.from_rung)} rungs; at most one rung per change")
    if not proposal.to_rung <= bounds.max_auto_rung:
        failing.append(
            f"the proposed rung {proposal.to_rung + 1} ({proposal.to_regimen}) is above the highest rung "
            f"allowed automatically (rung {bounds.max_auto_rung + 1})"
        )
    return failing


def _stale_proposal_problems(proposal: Proposal, now: dt.datetime) -> list[str]:
    """A proposal from the future or from more than a day ago was made on other data."""
    age_days = (now - proposal.evaluated_at).total_seconds() / 86400.0
    if age_days < 0 or age_days > MAX_PROPOSAL_AGE_DAYS:
        return [
            (f"the proposal was computed at {proposal.evaluated_at:%Y-%m-%d %H:%M}, not within the last "
             f"{MAX_PROPOSAL_AGE_DAYS:g} day; it must be re-evaluated on current data")
        ]
    return []


def _stale_data_problems(ev: EvidenceSummary, bounds: AutonomyBounds, cuff_decides: bool,
                         now: dt.datetime) -> list[str]:
    """Freshness is judged on the newest reading of the source that decides."""
    newest = ev.cuff_series.last_at if cuff_decides and ev.cuff_series is not None else ev.last_at
    what = "home cuff reading" if cuff_decides else "estimate"
    if newest is None:
        return ["no readings or estimates in the look-back"]
    newest_days = (now - newest).total_seconds() / 86400.0
    if not newest_days <= bounds.max_latest_estimate_age_days:
        return [
            (f"data are stale: the newest {what} is {newest_days:.1f} days old, "
             f"limit {bounds.max_latest_estimate_age_days:g} days")
        ]
    return []


def _imprecise_mean_problems(ev: EvidenceSummary, bounds: AutonomyBounds) -> list[str]:
    """Both the SBP and the DBP mean need a known interval, the wider of the two within the limit."""
    widths = [w for w in (ev.mean_sbp_halfwidth_mmhg, ev.mean_dbp_halfwidth_mmhg) if _num(w)]
    if len(widths) < 2:
        return [f"uncertainty of the mean unknown: no interval for the {ev.source} mean"]
    widest = max(widths)
    if not widest <= bounds.max_interval_halfwidth_mmhg:
        level = f"{100.0 * ev.interval_level:.0f} % " if _num(ev.interval_level) else ""
        return [
            (f"uncertainty of the mean too high: {level}interval of the {ev.source} mean ±{widest:.0f} mmHg, "
             f"limit ±{bounds.max_interval_halfwidth_mmhg:g} mmHg")
        ]
    return []


def _data_problems(proposal: Proposal, bounds: AutonomyBounds, estimates: Sequence[EstimateEvidence],
                   calibration_age_days: float | None, now: dt.datetime) -> list[str]:
    """The data: the source that decides, enough of it, fresh, precise, and trustworthy."""
    ev = proposal.evidence
    cuff_decides = ev.source == EvidenceSource.CUFF_SERIES.value
    failing: list[str] = []
    if not ev.sufficient:
        failing.append(f"not enough data: no complete home cuff series, and {ev.n_estimates} wearable estimates "
                       f"on {ev.n_distinct_days} distinct days")
    failing.extend(_stale_proposal_problems(proposal, now))
    failing.extend(_stale_data_problems(ev, bounds, cuff_decides, now))
    failing.extend(_imprecise_mean_problems(ev, bounds))
    if cuff_decides:
        failing.extend(_cuff_series_problems(ev))
    else:
        failing.extend(_wearable_problems(ev, bounds, estimates, calibration_age_days))
    return failing


def _crisis_reading_problems(estimates: Sequence[EstimateEvidence]) -> list[str]:
    """Any crisis-level reading, estimate or cuff, confirmed or not, needs a clinician."""
    crisis = [e for e in estimates if is_crisis_reading(e)]
    if crisis:
        return [
            (f"{len(crisis)} reading(s) at crisis level (SBP >= 180 or DBP >= 120 mmHg), "
             f"highest {max(e.sbp_mmhg for e in crisis):.0f}/{max(e.dbp_mmhg for e in crisis):.0f} mmHg")
        ]
    return []


def _step_up_problems(estimates: Sequence[EstimateEvidence], adherence: float | None,
                      bounds: AutonomyBounds) -> list[str]:
    """More drug only when no reading is already low and the doses are being taken: more drug is
    not the answer to missed doses."""
    failing: list[str] = []
    low = [e for e in estimates if is_low_reading(e)]
    if low:
        failing.append(
            f"{len(low)} reading(s) with SBP below 100 mmHg (lowest {min(e.sbp_mmhg for e in low):.0f}); "
            "an increase is not automatic"
        )
    if adherence is None or not math.isfinite(adherence):
        failing.append("adherence unknown: no doses logged over the look-back; a step up is not automatic")
    elif not adherence >= bounds.min_adherence_share:
        failing.append(
            f"low adherence: {_pct(adherence)} of doses taken over the look-back, "
            f"below {_pct(bounds.min_adherence_share)}; more drug is not the answer to missed doses"
        )
    return failing


def _patient_problems(exclusions: Iterable[Exclusion], suspensions: Sequence[str], urgent: list[str]) -> list[str]:
    """The patient's exclusions, the model's monitoring suspensions and every urgent escalation."""
    failing = [f"patient excluded from automatic changes: {exclusion.describe()}" for exclusion in exclusions]
    failing += [f"automatic releases suspended by model monitoring: {why}" for why in suspensions]
    failing += urgent
    return failing


def route(
    proposal: Proposal,
    bounds: AutonomyBounds,
    *,
    estimates: Sequence[EstimateEvidence],
    calibration_age_days: float | None,
    adherence: float | None,
    exclusions: Iterable[Exclusion],
    escalations: Sequence[Escalation],
    now: dt.datetime,
    suspensions: Sequence[str] = (),
) -> RoutingDecision:
    """Route a proposal by the plan's autonomy bounds.

    suspensions: why monitoring has suspended automatic releases for the model behind these
    estimates (an accuracy or drift alert), one text each; any one sends the step to review.

    estimates: the readings of the look-back (the wearable's estimates and the cuff readings as
    `EstimateEvidence.from_cuff`), for the crisis and low checks; calibration_age_days: age of
    the patient's current cuff calibration, days (None = none on record); adherence: share (0..1)
    of logged doses taken over the look-back (None = nothing logged)."""
    exclusions = tuple(exclusions)
    urgent = _urgent_reasons(estimates, escalations, now)

    if proposal.kind is ProposalKind.HOLD:
        return RoutingDecision(Route.INFORMATION, (*proposal.reasons, *urgent) or ("hold: no change proposed",))
    if proposal.kind is ProposalKind.ESCALATE or proposal.direction is None:
        reasons = (*proposal.reasons, *urgent) or ("a clinician must decide: no automatic step is possible",)
        return RoutingDecision(Route.REVIEW, reasons)

    direction = proposal.direction
    failing = _step_problems(proposal, direction, bounds)
    failing += _data_problems(proposal, bounds, estimates, calibration_age_days, now)
    failing += _crisis_reading_problems(estimates)
    if direction is Direction.UP:
        failing += _step_up_problems(estimates, adherence, bounds)
    failing += _patient_problems(exclusions, suspensions, urgent)

    if failing:
        return RoutingDecision(Route.REVIEW, tuple(failing))
    return RoutingDecision(Route.AUTO_RELEASE, ())
