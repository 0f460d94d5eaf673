"""The feedback loop: production data back into training. Cuff-paired windows (a cuff reading with
usable windows within +/- 10 min) become training samples — features relative to the patient's
previous calibration, the cuff reading as the reference BP — and the clinicians' decisions of the
period travel with them (accepted, modified or rejected suggestions and why), versioned and
hashed. Patients appear only as a keyed pseudonym."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from typing import TypedDict

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clinops.base.audit import audit_record
from clinops.base.models import AuditEvent
from monitoring.bp import feature_deltas
from monitoring.bp.feature_deltas import FeatureDict
from monitoring.health.model_health import PAIRING
from monitoring.models import Calibration, CuffReading, TrainingSet, WindowAnalysis
from monitoring.signals import pipeline
from therapy.models import Suggestion

DECISIONS = ("suggestion.approve", "suggestion.modify", "suggestion.reject")


class _Pressure(TypedDict):
    sbp_mmhg: float
    dbp_mmhg: float


class _Calibration(_Pressure):
    features: FeatureDict


class _Sample(TypedDict):
    record: str
    offset_s: float
    features: dict[str, float | None]
    calibration: _Calibration
    reference: _Pressure
    week: str


class _Decision(TypedDict):
    decision: str
    reason: str
    kind: str
    from_rung: int
    proposed_to_rung: int
    to_rung: int
    routing_reasons: list[str]
    model_versions: list[str]
    policy_version: str
    record: str
    evidence: dict[str, float | None]


class _TrainingSetContent(TypedDict):
    """A training set's stored content, hashed as canonical JSON."""

    samples: list[_Sample]
    decisions: list[_Decision]
    pipeline_version: str
    features: list[str]


def _pseudonym(patient_id: int) -> str:
    """A stable pseudonym: the same patient maps to the same record name (keeps the by-record
    split honest) without the id leaving the database."""
    return "prod-" + hmac.new(settings.SECRET_KEY.encode(), str(patient_id).encode(), hashlib.sha256).hexdigest()[:12]


def _samples(since: dt.datetime, until: dt.datetime) -> list[_Sample]:
    samples: list[_Sample] = []
    for reading in CuffReading.objects.filter(measured_at__gte=since, measured_at__lt=until).order_by("measured_at"):
        previous = (Calibration.objects.filter(patient_id=reading.patient_id, calibrated_at__lt=reading.measured_at - PAIRING)
                    .select_related("cuff_reading").order_by("-calibrated_at").first())
        if previous is None:
            continue
        analyses = WindowAnalysis.objects.filter(
            window__patient_id=reading.patient_id, usable=True, pipeline_version=pipeline.PIPELINE_VERSION,
            window__recorded_at__gte=reading.measured_at - PAIRING, window__recorded_at__lte=reading.measured_at + PAIRING,
        ).order_by("window__recorded_at")
        for analysis in analyses:
            samples.append({
                "record": _pseudonym(reading.patient_id),
                "offset_s": round((analysis.window.recorded_at - reading.measured_at).total_seconds(), 1),
                "features": {name: analysis.features.get(name) for name in feature_deltas.FEATURES},
                "calibration": {"sbp_mmhg": previous.cuff_reading.sbp_mmhg, "dbp_mmhg": previous.cuff_reading.dbp_mmhg,
                                "features": previous.features},
                "reference": {"sbp_mmhg": reading.sbp_mmhg, "dbp_mmhg": reading.dbp_mmhg},
                "week": reading.measured_at.strftime("%G-W%V"),
            })
    return samples


def _decisions(since: dt.datetime, until: dt.datetime) -> list[_Decision]:
    events = AuditEvent.objects.filter(action__in=DECISIONS, at__gte=since, at__lt=until).order_by("at")
    suggestions = Suggestion.objects.in_bulk([int(e.object_id) for e in events])
    rows: list[_Decision] = []
    for event in events:
        suggestion = suggestions.get(int(event.object_id))
        if suggestion is None:
            continue
        rows.append({"decision": event.action.removeprefix("suggestion."), "reason": event.detail.get("reason", ""),
                     "kind": suggestion.kind, "from_rung": suggestion.from_rung,
                     "proposed_to_rung": event.detail.get("proposed_rung", suggestion.to_rung),
                     "to_rung": suggestion.to_rung, "routing_reasons": suggestion.routing_reasons,
                     "model_versions": suggestion.model_versions, "policy_version": suggestion.policy_version,
                     "record": _pseudonym(suggestion.patient_id), "evidence": {k: suggestion.evidence.get(k) for k in (
                         "mean_sbp_mmhg", "mean_dbp_mmhg", "n_estimates", "usable_window_share", "calibration_age_days")}})
    return rows


@transaction.atomic
def training_set_build(*, actor, created_by: str, since: dt.datetime, until: dt.datetime | None = None) -> TrainingSet:
    """Build and store a new training-set version from production data in [since, until)."""
    until = until or timezone.now()
    content: _TrainingSetContent = {
        "samples": _samples(since, until), "decisions": _decisions(since, until),
        "pipeline_version": pipeline.PIPELINE_VERSION, "features": list(feature_deltas.FEATURES)}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    training_set = TrainingSet.objects.create(
        version=f"prod-{until:%Y%m%d-%H%M%S}", created_by=created_by, period_start=since, period_end=until,
        n_samples=len(content["samples"]), n_patients=len({s["record"] for s in content["samples"]}),
        n_decisions=len(content["decisions"]), sha256=hashlib.sha256(canonical).hexdigest(), content=content)
    audit_record(actor=actor, action="training_set.build", target=training_set,
                 detail={"version": training_set.version, "n_samples": training_set.n_samples,
                         "n_decisions": training_set.n_decisions, "sha256": training_set.sha256})
    return training_set
