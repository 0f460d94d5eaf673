"""The calibration and the calibration-relative feature vector: a window enters the model as the
change of its features from the patient's calibration (docs/bp-model.md). No Django inside.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from monitoring.bp.arterial_reference import ReferenceBP

# Keys of WindowFeatures.as_dict(); PAT to foot first. Each enters the model as its change from
# the calibration (window - calibration, in the feature's units); the PPG amplitude, in device
# units that differ between devices and placements, enters as the natural log of its ratio.
FEATURES: tuple[str, ...] = (
    "pat_foot_ms_median",
    "pat_upslope_ms_median",
    "heart_rate_bpm_median",
    "ppg_amplitude_median",
    "rise_time_ms_median",
    "pulse_width_ms_median",
)
_LOG_RATIO_FEATURES = frozenset({"ppg_amplitude_median"})
TARGETS: tuple[str, str] = ("sbp", "dbp")


FeatureDict = Mapping[str, float | int | None]


@dataclass(frozen=True)
class Calibration:
    """A calibration point: cuff SBP/DBP (mmHg) and the mean features of its usable windows.

    features maps each WindowFeatures key to the mean over the calibration windows that had a
    value (None when none had). n_reference_windows / n_feature_windows: how many windows gave
    the cuff reading / the features.
    """

    sbp_mmhg: float
    dbp_mmhg: float
    features: dict[str, float | None]
    n_reference_windows: int = 1
    n_feature_windows: int = 1


def mean_features(feature_dicts: Sequence[FeatureDict]) -> dict[str, float | None]:
    """Per-key mean of window feature dicts, ignoring missing (None/NaN) values; None if all missing."""
    keys: list[str] = []
    for features in feature_dicts:
        keys.extend(key for key in features if key not in keys)
    out: dict[str, float | None] = {}
    for key in keys:
        values = [float(v) for f in feature_dicts if (v := f.get(key)) is not None and math.isfinite(float(v))]
        out[key] = float(np.mean(values)) if values else None
    return out


def calibration_from_windows(
    references: Sequence[ReferenceBP], usable_features: Sequence[FeatureDict],
) -> Calibration | None:
    """Calibration from its windows: cuff = mean of the windows' reference SBP/DBP (mmHg),
    features = mean of the usable windows' features. None when either list is empty."""
    if not references or not usable_features:
        return None
    return Calibration(
        sbp_mmhg=float(np.mean([r.sbp_mmhg for r in references])),
        dbp_mmhg=float(np.mean([r.dbp_mmhg for r in references])),
        features=mean_features(usable_features),
        n_reference_windows=len(references),
        n_feature_windows=len(usable_features),
    )


def _as_float(value: float | int | None) -> float:
    return math.nan if value is None else float(value)


def feature_vector(
    features: FeatureDict, calibration_features: FeatureDict, names: Sequence[str] = FEATURES,
) -> np.ndarray:
    """Model input for one window: the change of each feature in `names` from the calibration.

    window - calibration in the feature's units (ms, bpm), except the PPG amplitude: ln(window /
    calibration). NaN where either value is missing (the fitted pipelines read NaN as "no change").
    """
    out = np.empty(len(names))
    for i, name in enumerate(names):
        value, reference = _as_float(features.get(name)), _as_float(calibration_features.get(name))
        if name in _LOG_RATIO_FEATURES:
            out[i] = math.log(value / reference) if value > 0 and reference > 0 else math.nan
        else:
            out[i] = value - reference
    return out


def target_vector(reference: ReferenceBP, calibration: Calibration) -> np.ndarray:
    """Training target: (SBP - calibration SBP, DBP - calibration DBP) in mmHg."""
    return np.array([reference.sbp_mmhg - calibration.sbp_mmhg, reference.dbp_mmhg - calibration.dbp_mmhg])
