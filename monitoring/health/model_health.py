"""Model health from the database: production accuracy against cuff readings, data drift against
the training distribution, accuracy by subgroup; their stored reports, operator alerts, and the
automatic narrowing of autonomy. The rules themselves are in `monitoring.health.quality` (pure).

Accuracy in production: a cuff reading with usable windows within +/- 10 min is ground truth for
those windows' estimates made WITHOUT it: each is recomputed against the patient's previous
calibration (leave-one-out: the reading never judges an estimate it calibrated), with the model
version that made the window's live estimate (the active model when there is none).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Mapping

import structlog
from django.db import transaction
from django.utils import timezone

from clinops.base.audit import SYSTEM, audit_record
from clinops.base.errors import ApplicationError, clean_text
from monitoring.bp import feature_deltas, learning, registry
from monitoring.health import quality
from monitoring.models import (
    AlertSeverity,
    AutonomySuspension,
    BPEstimate,
    BPModelVersion,
    Calibration,
    CuffReading,
    MonitoringReport,
    MonitoringReportKind,
    OperatorAlert,
    WindowAnalysis,
)
from monitoring.signals import pipeline
from patients.models import User
from patients.services import is_clinical_lead

log = structlog.get_logger(__name__)

PAIRING = dt.timedelta(minutes=10)
ACCURACY_PERIOD = dt.timedelta(weeks=8)
DRIFT_PERIOD = dt.timedelta(days=7)


def _week(at: dt.datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def _age(date_of_birth: dt.date, on: dt.date) -> int:
    return on.year - date_of_birth.year - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))


def cuff_paired_estimates(*, since: dt.datetime, until: dt.datetime) -> dict[str, list[tuple[str, quality.PairedEstimate]]]:
    """Leave-one-out cuff-paired estimates of readings taken in [since, until), by model version:
    {version: [(ISO week, pair), ...]}."""
    loaded: dict[int, object] = {}
    versions: dict[int, BPModelVersion] = {}
    active = registry.model_active()
    paired: dict[str, list[tuple[str, quality.PairedEstimate]]] = defaultdict(list)
    readings = CuffReading.objects.filter(measured_at__gte=since, measured_at__lt=until).select_related("patient")
    for reading in readings.order_by("measured_at"):
        previous = (Calibration.objects.filter(patient=reading.patient, calibrated_at__lt=reading.measured_at - PAIRING)
                    .select_related("cuff_reading").order_by("-calibrated_at").first())
        if previous is None:
            continue  # the patient's first reading: nothing to judge it against
        reference = feature_deltas.Calibration(sbp_mmhg=previous.cuff_reading.sbp_mmhg, dbp_mmhg=previous.cuff_reading.dbp_mmhg,
                                   features=previous.features)
        analyses = (WindowAnalysis.objects.filter(
            window__patient=reading.patient, usable=True, pipeline_version=pipeline.PIPELINE_VERSION,
            window__recorded_at__gte=reading.measured_at - PAIRING, window__recorded_at__lte=reading.measured_at + PAIRING,
        ).select_related("window__device"))
        for analysis in analyses:
            # The version's id only: its row holds the model file, fetched once per version below.
            live_id = (BPEstimate.objects.filter(window_id=analysis.window_id, shadow=False)
                       .values_list("model_version_id", flat=True).first())
            if live_id is not None and live_id not in versions:
                versions[live_id] = BPModelVersion.objects.get(pk=live_id)
            version = versions[live_id] if live_id is not None else active
            if version is None:
                continue
            if version.pk not in loaded:
                loaded[version.pk] = registry.model_load(version)
            value = learning.estimate_bp(loaded[version.pk], analysis.features, reference,
                                   halfwidth_mmhg=(version.interval_sbp_mmhg, version.interval_dbp_mmhg),
                                   coverage=version.interval_level, names=version.features)
            paired[version.version].append((_week(reading.measured_at), quality.PairedEstimate(
                sbp_mmhg=value.sbp_mmhg, dbp_mmhg=value.dbp_mmhg,
                cuff_sbp_mmhg=reading.sbp_mmhg, cuff_dbp_mmhg=reading.dbp_mmhg,
                sbp_halfwidth_mmhg=version.interval_sbp_mmhg, dbp_halfwidth_mmhg=version.interval_dbp_mmhg,
                patient=str(reading.patient_id), sex=reading.patient.sex,
                age_years=_age(reading.patient.date_of_birth, reading.measured_at.date()),
                device_model=f"{analysis.window.device.make} {analysis.window.device.model}",
            )))
    return dict(paired)


def _sync_alerts(prefix: str, scope: str, findings: list[quality.Finding], report: MonitoringReport,
                 now: dt.datetime) -> list[OperatorAlert]:
    """Raise or refresh an alert per finding; resolve this scope's open alerts of `prefix` whose
    signal is back within its threshold. Returns the alerts raised or still open."""
    alerts = []
    seen = set()
    for finding in findings:
        seen.add(finding.signal)
        alert, created = OperatorAlert.objects.get_or_create(
            signal=finding.signal, scope=scope, resolved_at=None,
            defaults={"severity": finding.severity, "message": finding.message, "value": finding.value,
                      "threshold": finding.threshold, "report": report, "last_seen_at": now})
        if not created:
            alert.severity, alert.message, alert.value = finding.severity, finding.message, finding.value
            alert.threshold, alert.report, alert.last_seen_at = finding.threshold, report, now
            alert.save()
        (log.error if finding.severity == AlertSeverity.CRITICAL else log.warning)(
            "monitoring.alert", signal=finding.signal, scope=scope, severity=finding.severity, value=finding.value,
            threshold=finding.threshold, alert_id=alert.pk, new=created)
        alerts.append(alert)
    stale = OperatorAlert.objects.filter(signal__startswith=prefix, scope=scope, resolved_at__isnull=True).exclude(signal__in=seen)
    for alert in stale:
        alert.resolved_at = now
        alert.save(update_fields=["resolved_at"])
        log.info("monitoring.alert_resolved", signal=alert.signal, scope=scope, alert_id=alert.pk)
    return alerts


def _narrow_autonomy(version: BPModelVersion, alerts: list[OperatorAlert]) -> AutonomySuspension | None:
    """A critical accuracy or drift alert suspends automatic releases for the version's patients
    until a clinician lifts it (evaluation then routes every step to review, saying why)."""
    critical = [a for a in alerts if a.severity == AlertSeverity.CRITICAL]
    if not critical:
        return None
    existing = AutonomySuspension.objects.filter(model_version=version, lifted_at__isnull=True).first()
    if existing is not None:
        return existing
    reason = "; ".join(a.message for a in critical)
    suspension = AutonomySuspension.objects.create(model_version=version, reason=reason, alert=critical[0])
    audit_record(actor=SYSTEM, action="autonomy.suspend", target=suspension,
                 detail={"model_version": version.version, "alerts": [a.pk for a in critical], "reason": reason})
    log.error("monitoring.autonomy_suspended", model_version=version.version, suspension_id=suspension.pk, reason=reason)
    return suspension


@transaction.atomic
def accuracy_reports_compute(*, now: dt.datetime | None = None) -> list[MonitoringReport]:
    """Production accuracy per model version (overall and per week) and by subgroup over the last
    8 weeks; alerts and autonomy narrowing from them."""
    now = now or timezone.now()
    since = now - ACCURACY_PERIOD
    reports = []
    for version_name, rows in cuff_paired_estimates(since=since, until=now).items():
        version = BPModelVersion.objects.get(version=version_name)
        pairs = [p for _, p in rows]
        weeks: dict[str, list[quality.PairedEstimate]] = defaultdict(list)
        for week, pair in rows:
            weeks[week].append(pair)
        result = quality.accuracy(pairs)
        scope = f"model:{version_name}"
        report = MonitoringReport.objects.create(kind=MonitoringReportKind.ACCURACY, scope=scope, period_start=since, period_end=now,
                                                 payload={"overall": result, "n_pairs": len(pairs),
                                                          "weeks": {w: quality.accuracy(p) for w, p in sorted(weeks.items())}})
        subgroups = quality.subgroup_report(pairs)
        subgroup_report = MonitoringReport.objects.create(kind=MonitoringReportKind.SUBGROUPS, scope=scope, period_start=since,
                                                          period_end=now, payload=subgroups)
        alerts = _sync_alerts("accuracy.", scope, quality.accuracy_findings(result, interval_level=version.interval_level),
                              report, now)
        _sync_alerts("subgroup.", scope, quality.subgroup_findings(subgroups), subgroup_report, now)
        _narrow_autonomy(version, alerts)
        reports.append(report)
    return reports


@transaction.atomic
def drift_reports_compute(*, now: dt.datetime | None = None) -> list[MonitoringReport]:
    """Drift of the last 7 days' usable windows against the active (and shadow) models' training
    distributions: overall and per device model + firmware; alerts and autonomy narrowing."""
    now = now or timezone.now()
    since = now - DRIFT_PERIOD
    windows = list(WindowAnalysis.objects.filter(usable=True, pipeline_version=pipeline.PIPELINE_VERSION,
                                                 window__recorded_at__gte=since, window__recorded_at__lt=now)
                   .values_list("features", "window__device__make", "window__device__model", "window__firmware"))
    reports = []
    for version in [v for v in (registry.model_active(), *registry.model_shadows()) if v is not None]:
        reference = version.metrics.get("training", {}).get("feature_reference")
        scope = f"model:{version.version}"
        if not reference:
            reports.append(MonitoringReport.objects.create(
                kind=MonitoringReportKind.DRIFT, scope=scope, period_start=since, period_end=now,
                payload={"n_windows": len(windows), "note": "no training distribution on record for this model version"}))
            continue
        overall = quality.drift_report(reference, [w[0] for w in windows])
        by_device: dict[str, list[dict]] = defaultdict(list)
        for features, make, model, firmware in windows:
            by_device[f"{make} {model} / firmware {firmware}"].append(features)
        devices = {key: [dataclasses.asdict(d) for d in quality.drift_report(reference, rows)]
                   for key, rows in sorted(by_device.items())}
        report = MonitoringReport.objects.create(
            kind=MonitoringReportKind.DRIFT, scope=scope, period_start=since, period_end=now,
            payload={"n_windows": len(windows), "features": [dataclasses.asdict(d) for d in overall], "by_device": devices})
        findings = quality.drift_findings(overall)
        for key, rows in devices.items():
            findings += quality.drift_findings([quality.FeatureDrift(**d) for d in rows], group=key)
        alerts = _sync_alerts("drift.", scope, findings, report, now)
        # Autonomy narrows on the population's drift; one device group's drift is for the operator.
        _narrow_autonomy(version, [a for a in alerts if "@" not in a.signal])
        reports.append(report)
    return reports


def autonomy_suspensions_in_force(version_names: list[str]) -> list[AutonomySuspension]:
    """Suspensions in force for any of these model versions (names)."""
    return list(AutonomySuspension.objects.filter(model_version__version__in=version_names, lifted_at__isnull=True)
                .select_related("model_version"))


@transaction.atomic
def autonomy_suspension_lift(*, actor, suspension_id: int, reason: str) -> AutonomySuspension:
    """A clinical lead of a care team (or an administrator) re-enables automatic releases for the
    model version, with a reason (audited): monitoring suspended them for every patient of the
    model, so it is a decision for someone who answers for a team's autonomy, not any clinician."""
    if not (isinstance(actor, User) and (actor.is_clinops_admin or is_clinical_lead(actor))):
        raise ApplicationError("Only a clinical lead of a care team or an administrator may re-enable automatic "
                               "releases.", status_code=403)
    reason = clean_text("reason", reason, max_length=2000, required=True, what="Say why automatic releases may resume.")
    suspension = AutonomySuspension.objects.select_for_update().get(pk=suspension_id)
    if suspension.lifted_at is not None:
        raise ApplicationError("This suspension is lifted already.", status_code=409)
    suspension.lifted_at, suspension.lifted_by, suspension.lift_reason = timezone.now(), actor, reason
    suspension.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])
    audit_record(actor=actor, action="autonomy.resume", target=suspension,
                 detail={"model_version": suspension.model_version.version, "reason": suspension.lift_reason})
    return suspension


@transaction.atomic
def operational_alerts_sync(report: MonitoringReport) -> list[OperatorAlert]:
    """Operator alerts from a stored pipeline-health or agreement report (no autonomy narrowing:
    those are about operations and people, not about whether the model's numbers hold)."""
    # Keyed by str: report.kind is the stored text, which a MonitoringReportKind member equals.
    rules: dict[str, tuple[str, Callable[[Mapping], list[quality.Finding]]]] = {
        MonitoringReportKind.PIPELINE: ("pipeline.", quality.pipeline_findings),
        MonitoringReportKind.AGREEMENT: ("agreement.", quality.agreement_findings)}
    prefix, findings_of = rules[report.kind]
    return _sync_alerts(prefix, report.scope, findings_of(report.payload), report, report.period_end)
