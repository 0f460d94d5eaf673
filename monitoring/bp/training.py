"""Training and evaluating BP models on WFDB recordings, and registering them (the Django side of
monitoring/bp/ (pure), used by `train_bp_model`, `evaluate_bp` and the demo)."""
from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.utils import timezone

from clinops.base.audit import Actor
from monitoring.bp import accuracy, arterial_reference, feature_deltas, learning, promotion_gates, protocol, registry
from monitoring.bp.mean_interval import mean_interval_metrics, out_of_record_errors
from monitoring.health import quality
from monitoring.models import BPModelVersion, TrainingSet
from monitoring.signals import pipeline


@dataclass
class TrainingRun:
    learned: BPModelVersion
    baseline: BPModelVersion
    learned_gates: tuple[bool, list[str]]
    baseline_gates: tuple[bool, list[str]]
    test_report: dict[str, Any]


def code_version() -> str:
    """The git commit of the running code, when it runs from a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=settings.BASE_DIR, capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def bp_models_train(*, actor: Actor, data_dir: Path, trained_by: str,
                    progress: Callable[[str], None] = lambda _: None,
                    production_set: TrainingSet | None = None) -> TrainingRun:
    """Train on `data_dir` (split by record, fixed seed), evaluate on validation and test, and
    register two candidates: the best learned model and the carry-forward baseline. Neither is
    promoted here; promotion is its own audited step."""
    names = protocol.record_names(data_dir)
    split = protocol.split_records(names)
    progress(f"reading {len(names)} records and running the signal pipeline")
    dataset = protocol.load_dataset(data_dir, names)
    train, validation, test = (dataset.subset(split.train), dataset.subset(split.validation), dataset.subset(split.test))
    production = None
    extra: list[protocol.WindowSample] = []
    if production_set is not None:
        # Production windows join the training split only: validation, test and the gates stay
        # those of the shipped records, so a new model is judged exactly as the last one was.
        extra = training_samples_of(production_set)
        train = protocol.BPDataset(samples=train.samples + tuple(extra), outcomes=train.outcomes)
        production = {"version": production_set.version, "sha256": production_set.sha256, "n_samples": len(extra)}
        progress(f"added {len(extra)} production windows of training set {production_set.version}")
    progress(f"split by record (seed {split.seed}): {len(train.samples)} train, {len(validation.samples)} "
             f"validation, {len(test.samples)} test windows")
    fingerprint = protocol.fingerprint_records(data_dir, split)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    versions = []
    for label, candidates, gates in (("learned", None, promotion_gates.passes_promotion_gates),
                                     ("baseline", learning.carry_forward_estimator(), promotion_gates.passes_baseline_gates)):
        progress(f"training the {label} model and measuring its interval of the mean (leave-one-record-out)")
        model = learning.train_bp_model(train, validation, candidates=candidates)
        validation_report = accuracy.evaluate(model, validation, cross_conformal=True)
        test_report = accuracy.evaluate(model, test)
        # The training features' distribution, kept so production drift can be measured against it.
        training = {**model.metadata(), "production_set": production,
                    "feature_reference": quality.feature_reference([sample.features for sample in train.samples])}
        # Error components of the mean of n estimates (the therapy engine decides on a week's mean):
        # every shipped record's windows predicted by a model that never saw that record. The
        # learned configuration is refitted without each training-split record (the other records
        # are predicted by the registered model itself); the carry-forward baseline learns nothing.
        errors = out_of_record_errors(
            model.estimator, dataset, trained_on=split.train if label == "learned" else (),
            extra_training=extra if label == "learned" else (), features=model.features)
        mean_interval = mean_interval_metrics(errors, level=model.coverage)
        metrics = {"validation": validation_report, "test": test_report, "training": training, "kind": label,
                   "mean_interval": mean_interval}
        version = registry.model_version_register(
            actor=actor, version=f"bp-{stamp}-{model.name}", artifact=learning.estimator_to_bytes(model.estimator),
            trained_by=trained_by, code_version=code_version(), data_fingerprint=fingerprint.as_dict(),
            features=list(model.features), hyperparameters={"estimator": model.name, **model.hyperparameters},
            metrics=metrics, interval_level=model.coverage,
            interval_sbp_mmhg=model.halfwidth_mmhg[0], interval_dbp_mmhg=model.halfwidth_mmhg[1],
        )
        versions.append((version, gates(test_report, validation_report), test_report))
        progress(f"registered {version.version} as a candidate")
    (learned, learned_gates, test_report), (baseline, baseline_gates, _) = versions
    return TrainingRun(learned=learned, baseline=baseline, learned_gates=learned_gates,
                       baseline_gates=baseline_gates, test_report=test_report)



def trained_model_of(version: BPModelVersion) -> learning.TrainedBPModel:
    """A registered version as monitoring/bp/learning.py's model object (the file is verified on load)."""
    training = version.metrics.get("training", {})
    population = training.get("population_mean_mmhg", {})
    return learning.TrainedBPModel(
        estimator=registry.model_load(version), name=version.hyperparameters.get("estimator", version.version),
        features=tuple(version.features), hyperparameters=version.hyperparameters,
        halfwidth_mmhg=(version.interval_sbp_mmhg, version.interval_dbp_mmhg), coverage=version.interval_level,
        population_mean_mmhg=(float(population.get("sbp", float("nan"))), float(population.get("dbp", float("nan")))),
        validation_mae_mmhg=training.get("validation_mae_mmhg", {}),
        n_train_windows=training.get("n_train_windows", 0), n_validation_windows=training.get("n_validation_windows", 0),
    )


def bp_model_ensure_active(*, actor: Actor, data_dir: Path, progress: Callable[[str], None] = lambda _: None) -> tuple[BPModelVersion, str]:
    """The demo's first run: with no active model, train on the shipped recordings and promote the
    learned model if it passes its gates, else the carry-forward baseline. Returns (active, why)."""
    active = registry.model_active()
    if active is not None:
        return active, "already active"
    run = bp_models_train(actor=actor, data_dir=data_dir, trained_by="demo first run", progress=progress)
    passed, reasons = run.learned_gates
    if passed:
        return registry.model_version_promote(actor=actor, model=run.learned), "the learned model passed its gates"
    model = registry.model_version_promote(actor=actor, model=run.baseline)
    return model, "the learned model did not pass its gates (" + "; ".join(reasons) + "), so the carry-forward baseline is used"


def training_samples_of(training_set: TrainingSet) -> list[protocol.WindowSample]:
    """The set's windows as training samples for `monitoring.bp` (refuses a set whose content no
    longer matches its hash, or that was built by another signal pipeline)."""
    canonical = json.dumps(training_set.content, sort_keys=True, separators=(",", ":")).encode()
    if hashlib.sha256(canonical).hexdigest() != training_set.sha256:
        raise ValueError(f"training set {training_set.version} does not match its SHA-256")
    if training_set.content.get("pipeline_version") != pipeline.PIPELINE_VERSION:
        raise ValueError(f"training set {training_set.version} was built by pipeline "
                         f"{training_set.content.get('pipeline_version')}, not {pipeline.PIPELINE_VERSION}")
    return [
        protocol.WindowSample(
            record=s["record"], start_s=s["offset_s"],
            reference=arterial_reference.ReferenceBP(s["reference"]["sbp_mmhg"], s["reference"]["dbp_mmhg"], beat_count=0),
            calibration=feature_deltas.Calibration(s["calibration"]["sbp_mmhg"], s["calibration"]["dbp_mmhg"], s["calibration"]["features"]),
            features=s["features"],
        )
        for s in training_set.content["samples"]
    ]
