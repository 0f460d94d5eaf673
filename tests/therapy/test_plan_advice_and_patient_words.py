"""The plan editor's warnings (bounds the active model or the evidence cannot meet) and the words a
patient reads about a change: pure functions, no database."""
from __future__ import annotations

from dataclasses import dataclass

from therapy.domain import AutonomyBounds, Direction, PlanRules
from therapy.explain import change_explained
from therapy.plan_advice import ActiveModel, plan_warnings

UP = AutonomyBounds(auto_directions=frozenset({Direction.UP}), max_auto_rung=3)


@dataclass(frozen=True)
class Errors:
    """A mean-interval model: shared and per-window SDs (mmHg), 90 %."""

    shared: float
    window: float

    def halfwidth_mmhg(self, target: str, n: int) -> float:
        return 1.6449 * (self.shared**2 + self.window**2 / n) ** 0.5


def test_the_carry_forward_baseline_is_named_as_never_releasing_from_the_wearable():
    model = ActiveModel("bp-1-carry_forward_baseline", True, (22.0, 16.0))
    warnings = plan_warnings(PlanRules(), UP, model)
    assert any("is the carry-forward baseline" in w and "only complete home cuff series" in w for w in warnings)


def test_a_bound_narrower_than_the_models_intervals_is_named_with_both_numbers():
    warnings = plan_warnings(PlanRules(), UP, ActiveModel("bp-2", False, (22.0, 16.0)))
    assert ("the active model's intervals are ±22 mmHg: with this bound wearable estimates will release nothing "
            "automatically (complete home cuff series still may)") in warnings


def test_a_shared_error_wider_than_the_bound_can_never_be_averaged_away():
    warnings = plan_warnings(PlanRules(), UP, ActiveModel("bp-3", False, (12.0, 9.0), Errors(shared=7.0, window=6.0)))
    assert any("never gets narrower than ±12 mmHg" in w for w in warnings)


def test_a_precise_model_and_a_wide_enough_bound_raise_no_model_warning():
    assert plan_warnings(PlanRules(), UP, ActiveModel("bp-4", False, (9.0, 7.0), Errors(shared=2.0, window=8.0))) == []


def test_a_very_tight_bound_warns_that_most_home_series_will_wait():
    tight = AutonomyBounds(auto_directions=frozenset({Direction.UP}), max_interval_halfwidth_mmhg=3.0)
    warnings = plan_warnings(PlanRules(), tight, ActiveModel("bp-4", False, (2.0, 2.0), Errors(0.5, 1.0)))
    assert any(w.startswith("a home series of 12 readings (6 sittings)") for w in warnings)


def test_nothing_automatic_is_said_plainly():
    assert "no direction is allowed automatically: every step waits for you" in plan_warnings(
        PlanRules(), AutonomyBounds(), None)


SERIES = {"source": "cuff series", "mean_sbp_mmhg": 147.6, "mean_dbp_mmhg": 91.2,
          "cuff_series": {"n_readings": 24, "n_days": 6}}


def test_an_automatic_step_up_is_explained_from_the_home_readings():
    words = change_explained(kind="step_up", status="auto_released", auto_release=True, evidence=SERIES,
                             target_sbp_mmhg=135, target_dbp_mmhg=85)
    assert words == ("Your home cuff readings averaged 148/91 (24 readings on 6 days), above your target of 135/85, "
                     "so your dose goes up one step. It was made automatically, within the limits your care team set "
                     "for you.")


def test_a_reviewed_step_down_for_dizziness_says_so():
    words = change_explained(kind="step_down", status="approved", auto_release=False, evidence={},
                             target_sbp_mmhg=135, target_dbp_mmhg=85, reported="dizziness")
    assert words.startswith("You reported dizziness, which can mean your blood pressure is too low")
    assert words.endswith("Your care team reviewed it and approved it.")
