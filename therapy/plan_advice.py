"""Warnings for the plan editor: bounds that the active model or the evidence can never meet.

Pure: values in, sentences out. Units: mmHg. A clinician who sets a bound of ±10 mmHg while the
active model's estimates can never be that precise should learn it when saving the plan, not
from an empty list of automatic releases months later.
"""
from __future__ import annotations

from dataclasses import dataclass

from therapy.domain import AutonomyBounds, PlanRules
from therapy.evidence import MeanErrorModel, t_halfwidth

# A typical SD of home sitting means within one patient (mmHg): home SBP varies from sitting to
# sitting by about 6-9 mmHg. Used only to warn, never to decide.
TYPICAL_SITTING_SD_MMHG = 8.0
READINGS_PER_SITTING = 2


@dataclass(frozen=True)
class ActiveModel:
    """What the plan editor knows of the active BP model: its name, whether it is the carry-forward
    baseline, one window's 90 % half-widths (mmHg) and its mean-interval model (None: unknown)."""

    version: str
    is_baseline: bool
    window_halfwidth_mmhg: tuple[float, float]
    error_model: MeanErrorModel | None = None


def plan_warnings(rules: PlanRules, bounds: AutonomyBounds, model: ActiveModel | None) -> list[str]:
    """What these bounds mean in practice, in sentences (empty: nothing to warn about)."""
    warnings: list[str] = []
    if not bounds.auto_directions:
        warnings.append("no direction is allowed automatically: every step waits for you")
    limit = bounds.max_interval_halfwidth_mmhg
    warnings.extend(_wearable_warnings(rules, limit, model))
    sittings = max(2, rules.series_min_readings // READINGS_PER_SITTING)
    typical = t_halfwidth(TYPICAL_SITTING_SD_MMHG, sittings)
    if typical > limit:
        warnings.append(
            f"a home series of {rules.series_min_readings} readings ({sittings} sittings) with a typical spread "
            f"between sittings (SD {TYPICAL_SITTING_SD_MMHG:g} mmHg) has a 90 % interval of its mean of about "
            f"±{typical:.0f} mmHg: with a limit of ±{limit:g} most home series will wait for you"
        )
    return warnings


def _wearable_warnings(rules: PlanRules, limit: float, model: ActiveModel | None) -> list[str]:
    if model is None:
        return ["no BP model is active: only complete home cuff series can support an automatic change"]
    if model.is_baseline:
        return [f"the active model ({model.version}) is the carry-forward baseline: its estimates repeat a cuff "
                "reading and never support an automatic change; only complete home cuff series from a validated "
                "cuff can"]
    n = rules.min_usable_estimates
    if model.error_model is None:
        widest = max(model.window_halfwidth_mmhg)
        if widest > limit:
            return [f"the active model's intervals are ±{widest:.0f} mmHg: with this bound wearable estimates will "
                    "release nothing automatically (complete home cuff series still may)"]
        return []
    at_n = max(model.error_model.halfwidth_mmhg(t, n) for t in ("sbp", "dbp"))
    floor = max(model.error_model.halfwidth_mmhg(t, 10**9) for t in ("sbp", "dbp"))
    if floor > limit:
        return [f"the active model's interval of a mean never gets narrower than ±{floor:.0f} mmHg (the error it "
                f"shares across a calibration): with ±{limit:g} wearable estimates will release nothing "
                "automatically (complete home cuff series still may)"]
    if at_n > limit:
        return [f"the active model's interval of the mean of {n} estimates is ±{at_n:.0f} mmHg: with ±{limit:g} "
                "wearable estimates release only with many more estimates than the minimum"]
    return []
