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

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clinops.audit import audit_record
from clinops.models import AuditEvent
from monitoring import bp, signals
from monitoring.model_health import PAIRING
from monitoring.models import Calibration, CuffReading, TrainingSet, WindowAnalysis

DECISIONS = ("suggestion.approve", "suggestion.modify", "suggestion.reject")


def _pseudonym(patient_id: int) -> str:
    """A stable pseudonym: the same patient maps to the same record name (keeps the by-record
    split honest) without the id leaving the database."""
    return "prod-" + hmac.new(settings.SECRET_KEY.encode(), str(patient_id).encode(), hashlib.sha256).hexdigest()[:12]


def _samples(since: dt.datetime, until: dt.datetime) -> list[dict]:
    samples = []
    for reading in CuffReading.objects.filter(measured_at__gte=since, measured_at__lt=until).order_by("measured_at"):
        previous = (Calibration.objects.filter(patient_id=reading.patient_id, calibrated_at__lt=reading.measured_at - PAIRING)
                    .select_related("cuff_reading").order_by("-calibrated_at").first())
        if previous is None:
            continue
        analyses = WindowAnalysis.objects.filter(
            window__patient_id=reading.patient_id, usable=True, pipeline_version=signals.PIPELINE_VERSION,
            window__recorded_at__gte=reading.measured_at - PAIRING, window__recorded_at__lte=reading.measured_at + PAIRING,
        ).order_by("window__recorded_at")
        for analysis in analyses:
            samples.append({
                "record": _pseudonym(reading.patient_id),
                "offset_s": round((analysis.window.recorded_at - reading.measured_at).total_seconds(), 1),
                "features": {name: analysis.features.get(name) for name in bp.FEATURES},
                "calibration": {"sbp_mmhg": previous.cuff_reading.sbp_mmhg, "dbp_mmhg": previous.cuff_reading.dbp_mmhg,
                                "features": previous.features},
                "reference": {"sbp_mmhg": reading.sbp_mmhg, "dbp_mmhg": reading.dbp_mmhg},
                "week": reading.measured_at.strftime("%G-W%V"),
            })
    return samples


def _decisions(since: dt.datetime, until: dt.datetime) -> list[dict]:
    from therapy.models import Suggestion

    events = AuditEvent.objects.filter(action__in=DECISIONS, at__gte=since, at__lt=until).order_by("at")
    suggestions = Suggestion.objects.in_bulk([int(e.object_id) for e in events])
    rows = []
    for event in events:
        suggestion = suggestions.get(int(event.object_id))
        if suggestion is None:
            continue
        rows.append({"decision": event.action.removeprefix("suggestion."), "reason": event.detail.get("reason", ""),
                     "kind": suggestion.kind, "from_rung": suggestion.from_rung, "proposed_to_rung": event.detail.get("proposed_rung", suggestion.to_rung),
                     "to_rung": suggestion.to_rung, "routing_reasons": suggestion.routing_reasons,
                     "model_versions": suggestion.model_versions, "policy_version": suggestion.policy_version,
                     "record": _pseudonym(suggestion.patient_id), "evidence": {k: suggestion.evidence.get(k) for k in (
                         "mean_sbp_mmhg", "mean_dbp_mmhg", "n_estimates", "usable_window_share", "calibration_age_days")}})
    return rows


@transaction.atomic
def training_set_build(*, actor, created_by: str, since: dt.datetime, until: dt.datetime | None = None) -> TrainingSet:
    """Build and store a new training-set version from production data in [since, until)."""
    until = until or timezone.now()
    content = {"samples": _samples(since, until), "decisions": _decisions(since, until),
               "pipeline_version": signals.PIPELINE_VERSION, "features": list(bp.FEATURES)}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    training_set = TrainingSet.objects.create(
        version=f"prod-{until:%Y%m%d-%H%M%S}", created_by=created_by, period_start=since, period_end=until,
        n_samples=len(content["samples"]), n_patients=len({s["record"] for s in content["samples"]}),
        n_decisions=len(content["decisions"]), sha256=hashlib.sha256(canonical).hexdigest(), content=content)
    audit_record(actor=actor, action="training_set.build", target=training_set,
                 detail={"version": training_set.version, "n_samples": training_set.n_samples,
                         "n_decisions": training_set.n_decisions, "sha256": training_set.sha256})
    return training_set


def training_samples_of(training_set: TrainingSet) -> list[bp.WindowSample]:
    """The set's windows as training samples for `monitoring.bp` (refuses a set whose content no
    longer matches its hash, or that was built by another signal pipeline)."""
    canonical = json.dumps(training_set.content, sort_keys=True, separators=(",", ":")).encode()
    if hashlib.sha256(canonical).hexdigest() != training_set.sha256:
        raise ValueError(f"training set {training_set.version} does not match its SHA-256")
    if training_set.content.get("pipeline_version") != signals.PIPELINE_VERSION:
        raise ValueError(f"training set {training_set.version} was built by pipeline "
                         f"{training_set.content.get('pipeline_version')}, not {signals.PIPELINE_VERSION}")
    return [
        bp.WindowSample(
            record=s["record"], start_s=s["offset_s"],
            reference=bp.ReferenceBP(s["reference"]["sbp_mmhg"], s["reference"]["dbp_mmhg"], beat_count=0),
            calibration=bp.Calibration(s["calibration"]["sbp_mmhg"], s["calibration"]["dbp_mmhg"], s["calibration"]["features"]),
            features=s["features"],
        )
        for s in training_set.content["samples"]
    ]
