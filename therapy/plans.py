"""Plan versions <-> the pure therapy domain (ladders, rules, bounds), no I/O beyond the row given."""
from __future__ import annotations

from therapy.domain import (
    AutonomyBounds,
    Direction,
    Dose,
    Exclusion,
    ExclusionKind,
    Frequency,
    Ladder,
    PlanRules,
    Rung,
)
from therapy.models import PlanVersion


def ladder_to_json(ladder: Ladder) -> list[list[dict]]:
    return [[{"drug": d.drug, "dose_mg": d.dose_mg, "frequency": d.frequency.value} for d in rung.doses]
            for rung in ladder.rungs]


def ladder_of(plan: PlanVersion) -> Ladder:
    return Ladder(name=plan.ladder_name, rungs=tuple(
        Rung(doses=tuple(Dose(drug=d["drug"], dose_mg=float(d["dose_mg"]), frequency=Frequency(d["frequency"]))
                         for d in rung))
        for rung in plan.ladder
    ))


def rules_of(plan: PlanVersion) -> PlanRules:
    return PlanRules(
        target_sbp_mmhg=plan.target_sbp_mmhg, target_dbp_mmhg=plan.target_dbp_mmhg,
        look_back_days=plan.look_back_days, min_usable_estimates=plan.min_usable_estimates,
        min_distinct_days=plan.min_distinct_days, min_days_between_changes=plan.min_days_between_changes,
        step_down_sbp_mmhg=plan.step_down_sbp_mmhg, series_days=plan.series_days,
        series_discard_first_day=plan.series_discard_first_day, series_min_readings=plan.series_min_readings,
        series_min_days=plan.series_min_days,
    )


def bounds_of(plan: PlanVersion) -> AutonomyBounds:
    directions = {d for d, allowed in ((Direction.UP, plan.auto_step_up), (Direction.DOWN, plan.auto_step_down)) if allowed}
    return AutonomyBounds(
        auto_directions=frozenset(directions), max_auto_rung=plan.max_auto_rung,
        max_interval_halfwidth_mmhg=plan.max_interval_halfwidth_mmhg,
        min_usable_window_share=plan.min_usable_window_share, calibration_max_age_days=plan.calibration_max_age_days,
        agreement_period_days=plan.agreement_period_days, agreement_min_pairs=plan.agreement_min_pairs,
        agreement_max_bias_mmhg=plan.agreement_max_bias_mmhg, agreement_max_sd_mmhg=plan.agreement_max_sd_mmhg,
    )


def exclusions_of(plan: PlanVersion) -> tuple[Exclusion, ...]:
    return tuple(Exclusion(kind=ExclusionKind(e["kind"]), detail=e.get("detail", "")) for e in plan.exclusions)
