"""What a patient is told, in plain words: why their medicine changed and what their numbers are.

Pure: values in, sentences out (mmHg). No routing reasons or model details: the words a patient at
home understands, and honest about what a number is (a cuff measurement or a wearable estimate).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_DECIDED = {
    "auto_released": "It was made automatically, within the limits your care team set for you.",
    "approved": "Your care team reviewed it and approved it.",
    "modified": "Your care team reviewed it and chose this change.",
}


def _mean(evidence: Mapping[str, Any]) -> str | None:
    sbp, dbp = evidence.get("mean_sbp_mmhg"), evidence.get("mean_dbp_mmhg")
    if sbp is None or dbp is None:
        return None
    if evidence.get("source") == "cuff series":
        series = evidence.get("cuff_series") or {}
        return (f"your home cuff readings averaged {sbp:.0f}/{dbp:.0f} "
                f"({series.get('n_readings', 0)} readings on {series.get('n_days', 0)} days)")
    return f"your wearable's estimates averaged {sbp:.0f}/{dbp:.0f} over the last week"


def change_explained(*, kind: str, status: str, auto_release: bool, evidence: Mapping[str, Any],
                     target_sbp_mmhg: float, target_dbp_mmhg: float, reported: str = "") -> str:
    """Why a released change was made, e.g. "Your home cuff readings averaged 148/92 (24 readings on
    6 days), above your target of 135/85, so your dose goes up one step. It was made automatically,
    within the limits your care team set for you." `reported`: a low-pressure symptom the patient
    reported, when it drove a step down."""
    target = f"{target_sbp_mmhg:g}/{target_dbp_mmhg:g}"
    mean = _mean(evidence)
    if kind == "step_up":
        why = f"{mean[0].upper()}{mean[1:]}, above your target of {target}" if mean else "Your blood pressure was above your target"
        text = f"{why}, so your dose goes up one step."
    elif kind == "step_down":
        if reported:
            text = f"You reported {reported}, which can mean your blood pressure is too low, so your dose goes down one step."
        elif mean:
            text = f"{mean[0].upper()}{mean[1:]}, lower than you need, so your dose goes down one step."
        else:
            text = "Your dose goes down one step."
    else:
        text = "Your care team changed your medicine."
    decided = _DECIDED.get("auto_released" if auto_release else status, "Your care team decided this change.")
    return f"{text} {decided}"
