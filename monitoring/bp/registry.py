"""The BP model registry: register a trained candidate, promote it through its gates, roll back,
run it in shadow, and load a version's model safely (skops, verified by SHA-256)."""
from __future__ import annotations

import hashlib
import math
import threading
from typing import Any

from django.db import transaction
from django.utils import timezone

from clinops.base.audit import Actor, audit_record
from clinops.base.errors import ApplicationError
from monitoring.bp import learning, promotion_gates
from monitoring.models import BPModelVersion, ModelStatus
from monitoring.signals import pipeline
from patients.models import User


class ModelFileTampered(Exception):
    """The stored model file does not match the SHA-256 recorded when it was registered."""


_loaded: dict[str, Any] = {}
_loaded_lock = threading.Lock()


def model_load(version: BPModelVersion) -> Any:
    """The version's fitted model. The bytes are checked against their SHA-256 and opened with
    skops, trusting only the scikit-learn types the model is made of (never a pickle)."""
    blob = bytes(version.artifact)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != version.artifact_sha256:
        raise ModelFileTampered(f"model {version.version}: file SHA-256 {digest[:12]}... != registered {version.artifact_sha256[:12]}...")
    with _loaded_lock:
        model = _loaded.get(digest)
        if model is None:
            model = learning.estimator_from_bytes(blob)
            _loaded[digest] = model
    return model


def model_active() -> BPModelVersion | None:
    return BPModelVersion.objects.filter(status=ModelStatus.ACTIVE).first()


def model_shadows() -> list[BPModelVersion]:
    return list(BPModelVersion.objects.filter(shadow=True).exclude(status=ModelStatus.ACTIVE))


@transaction.atomic
def model_version_register(*, actor: Actor, version: str, artifact: bytes, trained_by: str, code_version: str,
                           data_fingerprint: dict, features: list[str], hyperparameters: dict, metrics: dict,
                           interval_level: float, interval_sbp_mmhg: float, interval_dbp_mmhg: float,
                           pipeline_version: str = pipeline.PIPELINE_VERSION) -> BPModelVersion:
    """Register a trained model as a candidate (never active by itself). `pipeline_version`: the
    signal pipeline whose features it learnt from (the current one, for a model trained now)."""
    if BPModelVersion.objects.filter(version=version).exists():
        raise ApplicationError(f"Model version {version} is already registered.")
    if not all(math.isfinite(w) and w > 0 for w in (interval_sbp_mmhg, interval_dbp_mmhg)):
        raise ApplicationError("The model's prediction interval is not a finite width: too few held-out windows.")
    model = BPModelVersion.objects.create(
        pipeline_version=pipeline_version,
        version=version, artifact=artifact, artifact_sha256=hashlib.sha256(artifact).hexdigest(),
        trained_by=trained_by, code_version=code_version, data_fingerprint=data_fingerprint, features=features,
        hyperparameters=hyperparameters, metrics=metrics, interval_level=interval_level,
        interval_sbp_mmhg=interval_sbp_mmhg, interval_dbp_mmhg=interval_dbp_mmhg,
    )
    audit_record(actor=actor, action="bp_model.register", target=model,
                 detail={"version": version, "sha256": model.artifact_sha256, "code_version": code_version})
    return model


def is_baseline(model: BPModelVersion) -> bool:
    return model.hyperparameters.get("estimator") == learning.CARRY_FORWARD


def model_version_gates(model: BPModelVersion) -> tuple[bool, list[str]]:
    """Whether the candidate passes its promotion gates, with every failing gate in words. A learned
    model must beat both baselines and meet the validation thresholds; the carry-forward baseline
    (the fallback while no learned model beats it) must beat the population mean and be calibrated."""
    gates = promotion_gates.passes_baseline_gates if is_baseline(model) else promotion_gates.passes_promotion_gates
    return gates(model.metrics.get("test", {}), model.metrics.get("validation", {}))


@transaction.atomic
def model_version_promote(*, actor: Actor, model: BPModelVersion) -> BPModelVersion:
    """Make a candidate the active model: refused unless it passes every gate. The file must load."""
    model = BPModelVersion.objects.select_for_update().get(pk=model.pk)
    if model.status == ModelStatus.ACTIVE:
        return model
    passed, reasons = model_version_gates(model)
    if not passed:
        raise ApplicationError(f"Model {model.version} may not be promoted: " + "; ".join(reasons), extra={"gates": reasons})
    _load_or_refuse(model)
    return _activate(actor=actor, model=model, action="bp_model.promote", detail={"gates": "passed"})


def _load_or_refuse(model: BPModelVersion) -> None:
    try:
        model_load(model)
    except ModelFileTampered as exc:
        raise ApplicationError(f"Model {model.version} is refused: {exc}") from exc


@transaction.atomic
def model_version_rollback(*, actor: Actor) -> BPModelVersion:
    """Put the previously active version back, in one step."""
    current = BPModelVersion.objects.select_for_update().filter(status=ModelStatus.ACTIVE).first()
    if current is None or current.previous_active_id is None:
        raise ApplicationError("There is no earlier active model to roll back to.")
    previous = BPModelVersion.objects.select_for_update().get(pk=current.previous_active_id)
    _load_or_refuse(previous)
    return _activate(actor=actor, model=previous, action="bp_model.rollback", detail={"from": current.version})


def _activate(*, actor: Actor, model: BPModelVersion, action: str, detail: dict) -> BPModelVersion:

    # Every activation locks every version row, so two promotions run one after the other.
    list(BPModelVersion.objects.select_for_update().only("id"))
    current = BPModelVersion.objects.filter(status=ModelStatus.ACTIVE).exclude(pk=model.pk).first()
    if current is not None:
        current.status = ModelStatus.RETIRED
        current.save(update_fields=["status"])
    model.status = ModelStatus.ACTIVE
    model.shadow = False
    if action == "bp_model.promote":
        # Who approved it stays the person who promoted it; a rollback is recorded in the audit trail.
        model.previous_active = current
        model.approved_by = actor if isinstance(actor, User) else None
        model.approved_at = timezone.now()
    model.save(update_fields=["status", "shadow", "previous_active", "approved_by", "approved_at"])
    audit_record(actor=actor, action=action, target=model,
                 detail={**detail, "version": model.version, "replaced": current.version if current else None})
    return model


@transaction.atomic
def model_version_set_shadow(*, actor: Actor, model: BPModelVersion, shadow: bool) -> BPModelVersion:
    """Run a candidate beside the active model on live windows (its estimates never feed therapy)."""
    model = BPModelVersion.objects.select_for_update().get(pk=model.pk)
    if model.status == ModelStatus.ACTIVE:
        raise ApplicationError("The active model cannot be a shadow.")
    if shadow:
        _load_or_refuse(model)
    model.shadow = shadow
    model.save(update_fields=["shadow"])
    audit_record(actor=actor, action="bp_model.shadow_on" if shadow else "bp_model.shadow_off", target=model,
                 detail={"version": model.version})
    return model
