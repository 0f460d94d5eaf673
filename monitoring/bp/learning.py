"""Training calibration-relative BP models, saving and loading them (skops), and estimating with one.

The model is calibration-relative (docs/bp-model.md): it predicts the change of SBP and DBP
from the patient's calibration (a cuff reading and the windows recorded around it) from the
change of the window features (PAT falls as BP rises), so an estimate is
calibration BP + predicted change, with a split-conformal interval (prediction +/- q mmHg).
No Django, no clock, no I/O.

Units: blood pressure mmHg; times s (window starts) or ms (PAT, rise time, pulse width); heart
rate bpm; sample rates Hz. Errors are prediction minus reference (mmHg).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import HuberRegressor, QuantileRegressor, Ridge
from sklearn.multioutput import MultiOutputRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from monitoring.bp.conformal import NOMINAL_COVERAGE, conformal_halfwidth
from monitoring.bp.feature_deltas import FEATURES, TARGETS, Calibration, FeatureDict, feature_vector
from monitoring.bp.protocol import BPDataset

MODEL_FAMILY = "bp-calibrated-delta-1"
RANDOM_STATE = 0

# skops: types outside skops' default trust that a saved estimator of this module holds.
# numpy.dtype appears in every fitted pipeline; TreePredictor only in the gradient-boosting one.
SKOPS_TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


def candidate_estimators(random_state: int = RANDOM_STATE) -> dict[str, MultiOutputRegressor]:
    """The candidates compared on validation, each a plain-sklearn MultiOutputRegressor (one
    regressor per target, SBP then DBP, fitted independently). Every pipeline imputes a missing
    feature change as 0 (no change); the linear ones standardise. The arterial-line references
    hold artefacts (damping, flushes), so robust losses (Huber, median, absolute error) sit beside
    least squares."""

    def linear(regressor: Any) -> MultiOutputRegressor:
        return MultiOutputRegressor(Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=0.0)),
            ("scale", StandardScaler()),
            ("regress", regressor),
        ]))

    def boosting(max_depth: int) -> MultiOutputRegressor:
        return MultiOutputRegressor(Pipeline([
            ("impute", SimpleImputer(strategy="constant", fill_value=0.0)),
            ("regress", HistGradientBoostingRegressor(
                loss="absolute_error", learning_rate=0.05, max_iter=150, max_depth=max_depth,
                min_samples_leaf=20, l2_regularization=1.0, random_state=random_state,
            )),
        ]))

    return {
        "ridge_alpha_1": linear(Ridge(alpha=1.0)),
        "ridge_alpha_10": linear(Ridge(alpha=10.0)),
        "ridge_alpha_100": linear(Ridge(alpha=100.0)),
        "huber_alpha_1": linear(HuberRegressor(alpha=1.0, epsilon=1.35, max_iter=1000)),
        "median_linear_alpha_0.01": linear(QuantileRegressor(quantile=0.5, alpha=0.01)),
        "hist_gradient_boosting_depth_2": boosting(2),
        "hist_gradient_boosting_depth_3": boosting(3),
    }


CARRY_FORWARD = "carry_forward_baseline"


def carry_forward_estimator() -> dict[str, MultiOutputRegressor]:
    """The "carry the calibration value forward" baseline as a registrable model: it predicts no
    change from the calibration (0 mmHg), so its estimate is the calibration cuff reading, with a
    split-conformal interval like any candidate. ClinOps uses it while no learned model beats it."""
    return {CARRY_FORWARD: MultiOutputRegressor(Pipeline([
        ("carry_forward", DummyRegressor(strategy="constant", constant=0.0)),
    ]))}


@dataclass(frozen=True)
class TrainedBPModel:
    """A fitted model and what the registry needs to record about it.

    estimator: MultiOutputRegressor predicting the (SBP, DBP) change from the calibration (mmHg);
    save it with `estimator_to_bytes`. halfwidth_mmhg: conformal interval half-widths (SBP, DBP)
    at `coverage`. population_mean_mmhg: training windows' mean reference (SBP, DBP), the
    population-mean baseline. validation_mae_mmhg: candidate name -> [SBP, DBP] validation MAE.
    """

    estimator: MultiOutputRegressor
    name: str
    features: tuple[str, ...]
    hyperparameters: dict[str, Any]
    halfwidth_mmhg: tuple[float, float]
    coverage: float
    population_mean_mmhg: tuple[float, float]
    validation_mae_mmhg: dict[str, list[float]]
    n_train_windows: int
    n_validation_windows: int
    family: str = MODEL_FAMILY

    def metadata(self) -> dict[str, Any]:
        """JSON-ready description for the registry (everything except the estimator)."""
        return {
            "family": self.family, "estimator": self.name, "features": list(self.features),
            "hyperparameters": self.hyperparameters, "interval_halfwidth_mmhg": dict(zip(TARGETS, self.halfwidth_mmhg)),
            "coverage": self.coverage, "population_mean_mmhg": dict(zip(TARGETS, self.population_mean_mmhg)),
            "validation_mae_mmhg": self.validation_mae_mmhg, "n_train_windows": self.n_train_windows,
            "n_validation_windows": self.n_validation_windows, "skops_trusted_types": list(SKOPS_TRUSTED_TYPES),
        }


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return repr(value)


def _mae(predicted: np.ndarray, reference: np.ndarray) -> list[float]:
    return np.mean(np.abs(predicted - reference), axis=0).tolist()


def train_bp_model(
    train: BPDataset, validation: BPDataset, *, coverage: float = NOMINAL_COVERAGE,
    random_state: int = RANDOM_STATE, candidates: Mapping[str, MultiOutputRegressor] | None = None,
    features: Sequence[str] = FEATURES,
) -> TrainedBPModel:
    """Fit every candidate on `train`, keep the one with the lowest validation MAE (mean of SBP
    and DBP, mmHg; ties go to the first listed), and set its interval half-widths by split
    conformal on the validation residuals. The chosen estimator is not refitted on validation,
    which the conformal step needs held out."""
    if not train.samples or not validation.samples:
        raise ValueError("training needs windows in both the train and the validation split")
    candidates = dict(candidate_estimators(random_state) if candidates is None else candidates)
    X_train, y_train = train.X(features), train.y()
    X_val, y_val = validation.X(features), validation.y()
    scores: dict[str, list[float]] = {}
    fitted: dict[str, MultiOutputRegressor] = {}
    for name, estimator in candidates.items():
        fitted[name] = estimator.fit(X_train, y_train)
        scores[name] = _mae(fitted[name].predict(X_val), y_val)
    best = min(scores, key=lambda name: float(np.mean(scores[name])))
    residuals = np.abs(fitted[best].predict(X_val) - y_val)
    halfwidth = (conformal_halfwidth(residuals[:, 0], coverage), conformal_halfwidth(residuals[:, 1], coverage))
    population = train.reference_bp().mean(axis=0)
    return TrainedBPModel(
        estimator=fitted[best], name=best, features=tuple(features),
        hyperparameters=jsonable({step: params.get_params(deep=False)
                                   for step, params in fitted[best].estimator.steps}),
        halfwidth_mmhg=halfwidth, coverage=coverage,
        population_mean_mmhg=(float(population[0]), float(population[1])),
        validation_mae_mmhg=scores, n_train_windows=len(train.samples), n_validation_windows=len(validation.samples),
    )


def estimator_to_bytes(estimator: MultiOutputRegressor) -> bytes:
    """The fitted estimator as a skops file (bytes); hash and store it, never pickle it."""
    import skops.io as sio

    return sio.dumps(estimator)


def estimator_from_bytes(data: bytes) -> MultiOutputRegressor:
    """Load a skops file written by `estimator_to_bytes`, trusting only SKOPS_TRUSTED_TYPES beyond
    skops' defaults (skops raises UntrustedTypesFoundException for anything else)."""
    import skops.io as sio

    estimator = sio.loads(data, trusted=list(SKOPS_TRUSTED_TYPES))
    if not isinstance(estimator, MultiOutputRegressor):
        raise TypeError(f"expected a MultiOutputRegressor, the file holds {type(estimator).__name__}")
    return estimator


@dataclass(frozen=True)
class BPEstimate:
    """One window's estimate (mmHg) with its prediction interval [low, high] (mmHg)."""

    sbp_mmhg: float
    dbp_mmhg: float
    sbp_low_mmhg: float
    sbp_high_mmhg: float
    dbp_low_mmhg: float
    dbp_high_mmhg: float
    coverage: float


def predict_bp(estimator: MultiOutputRegressor, X: np.ndarray, calibration_bp: np.ndarray) -> np.ndarray:
    """Absolute predictions (n x 2, SBP and DBP, mmHg) = calibration BP (n x 2) + predicted change."""
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    return np.atleast_2d(calibration_bp) + estimator.predict(X).reshape(-1, 2)


def estimate_bp(
    estimator: MultiOutputRegressor, features: FeatureDict, calibration: Calibration, *,
    halfwidth_mmhg: tuple[float, float], coverage: float = NOMINAL_COVERAGE, names: Sequence[str] = FEATURES,
) -> BPEstimate:
    """Estimate one usable window against a calibration; halfwidth_mmhg from the model's registry entry."""
    x = feature_vector(features, calibration.features, names)
    sbp, dbp = predict_bp(estimator, x, np.array([calibration.sbp_mmhg, calibration.dbp_mmhg]))[0].tolist()
    return BPEstimate(
        sbp_mmhg=sbp, dbp_mmhg=dbp,
        sbp_low_mmhg=sbp - halfwidth_mmhg[0], sbp_high_mmhg=sbp + halfwidth_mmhg[0],
        dbp_low_mmhg=dbp - halfwidth_mmhg[1], dbp_high_mmhg=dbp + halfwidth_mmhg[1],
        coverage=coverage,
    )
