"""Writes for signal windows: receive an upload, and process it into a verdict and features."""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import structlog
from django.db import IntegrityError, transaction
from django.utils import timezone

from clinops.audit import SYSTEM, audit_record
from clinops.errors import ApplicationError
from clinops.tasks import enqueue_on_commit
from monitoring import bp, registry, selectors, signals
from monitoring.encoding import Channel, pack_window, sha256_hex, unpack_window
from monitoring.models import BPEstimate, Calibration, CuffReading, SignalWindow, WindowAnalysis, WindowStatus
from patients.models import Device

log = structlog.get_logger(__name__)

# Writing last_seen_at on every upload would add a row lock per request; once a minute is enough
# for "device silent > 48 h".
LAST_SEEN_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class WindowUpload:
    """A validated upload (see monitoring/serializers.py)."""

    sequence: int
    recorded_at: dt.datetime
    duration_s: float
    encoding: str
    channels: dict[str, Channel]


def window_receive(*, device: Device, upload: WindowUpload) -> tuple[SignalWindow, bool]:
    """Store a device's window and queue it for processing; the same (device, sequence) twice
    returns the stored window and changes nothing. Returns (window, created).

    Windows of a patient who has not given consent (or withdrew it) are refused and not stored.
    """
    if not device.patient.has_consented:
        raise ApplicationError(
            "The patient's consent is not on record (or was withdrawn): no data is accepted for them.",
            extra={"consent_status": device.patient.consent_status}, status_code=403,
        )
    existing = _window_of(device=device, sequence=upload.sequence)
    if existing is not None:
        return existing, False
    blob = pack_window(upload.channels)
    now = timezone.now()
    try:
        with transaction.atomic():
            window = SignalWindow.objects.create(
                device=device, patient_id=device.patient_id, sequence=upload.sequence,
                recorded_at=upload.recorded_at, duration_s=upload.duration_s,
                ecg_fs=upload.channels["ecg"].fs, ppg_fs=upload.channels["ppg"].fs,
                encoding=upload.encoding, raw=blob, raw_sha256=sha256_hex(blob), raw_bytes=len(blob),
                firmware=device.firmware, enqueued_at=now,
            )
            if device.last_seen_at is None or device.last_seen_at < now - LAST_SEEN_RESOLUTION:
                Device.objects.filter(pk=device.pk).update(last_seen_at=now)
            from monitoring.tasks import process_window

            enqueue_on_commit(process_window, window.pk)
    except IntegrityError:
        # A concurrent retry of the same upload won the race: answer with its window.
        winner = _window_of(device=device, sequence=upload.sequence)
        if winner is None:
            raise
        return winner, False
    log.info("window.received", window_id=window.pk, device_id=device.pk, bytes=len(blob))
    return window, True


def _window_of(*, device: Device, sequence: int) -> SignalWindow | None:
    # Only what the upload answer needs: never the raw bytes.
    return (
        SignalWindow.objects.filter(device=device, sequence=sequence)
        .only("id", "sequence", "status", "device_id").order_by().first()
    )


class WindowDataCorrupt(Exception):
    """The stored bytes cannot be decoded: permanent, retrying will not help."""


def window_process(*, window_id: int) -> WindowAnalysis | None:
    """Run the signal pipeline on a stored window, once per pipeline version.

    Idempotent: if this version's analysis exists, it is returned and nothing changes. Safe to run
    concurrently: the row lock and the unique (window, version) constraint keep a single result.
    """
    window = SignalWindow.objects.filter(pk=window_id).only("id", "raw", "raw_sha256", "status").first()
    if window is None or window.status == WindowStatus.FAILED:
        return None
    done = WindowAnalysis.objects.filter(window_id=window_id, pipeline_version=signals.PIPELINE_VERSION).first()
    if done is not None:
        return done
    started = time.perf_counter()
    blob = bytes(window.raw)
    try:
        if sha256_hex(blob) != window.raw_sha256:
            raise WindowDataCorrupt("stored signal does not match its SHA-256")
        channels = unpack_window(blob)
        result = signals.analyse_window(
            channels["ecg"].physical(), channels["ecg"].fs, channels["ppg"].physical(), channels["ppg"].fs
        )
    except Exception as exc:  # noqa: BLE001
        # Decoding and analysis are pure functions of the stored bytes: whatever fails here (bad
        # data, a pipeline bug, the soft time limit) fails again on a retry. Mark it failed, with
        # the reason, so it is visible and never re-sent; database errors below stay retryable.
        _window_fail(window_id=window_id, reason=f"{exc.__class__.__name__}: {exc}"[:255])
        return None
    processing_ms = (time.perf_counter() - started) * 1000
    features = result.features.as_dict() if result.features else {}
    with transaction.atomic():
        locked = SignalWindow.objects.select_for_update().only("id", "status").get(pk=window_id)
        done = WindowAnalysis.objects.filter(window_id=window_id, pipeline_version=signals.PIPELINE_VERSION).first()
        if done is not None:
            return done
        analysis = WindowAnalysis.objects.create(
            window_id=window_id, pipeline_version=signals.PIPELINE_VERSION, usable=result.usable,
            reasons=list(result.reasons),
            issues=[{"reason": i.reason.value, "channel": i.channel, "detail": i.detail} for i in result.issues],
            features=features, beat_count=int(features.get("beat_count", 0)),
            heart_rate_bpm=features.get("heart_rate_bpm_median"), pat_foot_ms=features.get("pat_foot_ms_median"),
            processing_ms=processing_ms,
        )
        locked.status = WindowStatus.PROCESSED if result.usable else WindowStatus.REJECTED
        locked.processed_at = timezone.now()
        locked.save(update_fields=["status", "processed_at"])
        if result.usable:
            from monitoring.tasks import estimate_window

            enqueue_on_commit(estimate_window, window_id)
    log.info(
        "window.processed", window_id=window_id, usable=result.usable, reasons=list(result.reasons),
        processing_ms=round(processing_ms, 2), pipeline_version=signals.PIPELINE_VERSION,
    )
    return analysis


def _window_fail(*, window_id: int, reason: str) -> None:
    SignalWindow.objects.filter(pk=window_id, status=WindowStatus.RECEIVED).update(
        status=WindowStatus.FAILED, failure=reason, processed_at=timezone.now()
    )
    log.error("window.failed", window_id=window_id, reason=reason)


# A window still unprocessed this long after it was (last) sent to the queue is sent again.
RESEND_AFTER = dt.timedelta(minutes=10)


def window_claim_for_resend(*, window_id: int, now: dt.datetime) -> bool:
    """Claim a waiting window for re-sending: at most once per RESEND_AFTER, whoever asks (a
    conditional update that changes exactly one row), so sweepers never flood the queue."""
    return bool(
        SignalWindow.objects.filter(pk=window_id, status=WindowStatus.RECEIVED, enqueued_at__lt=now - RESEND_AFTER)
        .update(enqueued_at=now)
    )


# --- Cuff readings and calibration -----------------------------------------------------------

# A calibration pairs a cuff reading with the usable windows recorded this close to it.
CALIBRATION_PAIRING = dt.timedelta(minutes=10)
# Older readings cannot calibrate anything the therapy engine may use.
CUFF_READING_MAX_AGE = dt.timedelta(days=365)


def cuff_reading_record(
    *, actor, patient, measured_at: dt.datetime, sbp_mmhg: float, dbp_mmhg: float, source: str
) -> CuffReading:
    """Record an upper-arm cuff reading (mmHg) and calibrate against it if windows are at hand.
    The same (patient, time, source) again returns the stored reading (a retried upload)."""
    from patients.models import User

    if not patient.has_consented:
        raise ApplicationError(
            "The patient's consent is not on record (or was withdrawn): no data is accepted for them.",
            extra={"consent_status": patient.consent_status}, status_code=403,
        )
    problems = cuff_reading_problems(sbp_mmhg=sbp_mmhg, dbp_mmhg=dbp_mmhg, measured_at=measured_at, now=timezone.now())
    if problems:
        raise ApplicationError("The cuff reading is not plausible.", extra={"fields": problems})
    existing = CuffReading.objects.filter(patient=patient, measured_at=measured_at, source=source).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            reading = CuffReading.objects.create(
                patient=patient, measured_at=measured_at, sbp_mmhg=sbp_mmhg, dbp_mmhg=dbp_mmhg, source=source,
                entered_by=actor if isinstance(actor, User) else None,
            )
            audit_record(
                actor=actor, action="cuff_reading.record", target=reading, patient=patient,
                detail={"sbp_mmhg": sbp_mmhg, "dbp_mmhg": dbp_mmhg, "source": source, "measured_at": measured_at.isoformat()},
            )
    except IntegrityError:  # the same reading, sent twice at once
        return CuffReading.objects.get(patient=patient, measured_at=measured_at, source=source)
    calibration_refresh(cuff_reading=reading)
    return reading


def cuff_reading_problems(*, sbp_mmhg: float, dbp_mmhg: float, measured_at: dt.datetime, now: dt.datetime) -> dict[str, list[str]]:
    """Field problems of a cuff reading in words (mmHg ranges a cuff can report; no future times)."""
    problems: dict[str, list[str]] = {}
    if not 50 <= sbp_mmhg <= 300:
        problems["sbp_mmhg"] = ["must be between 50 and 300 mmHg"]
    if not 20 <= dbp_mmhg <= 200:
        problems["dbp_mmhg"] = ["must be between 20 and 200 mmHg"]
    if not problems and dbp_mmhg >= sbp_mmhg:
        problems["dbp_mmhg"] = ["must be lower than the systolic value"]
    if measured_at > now + dt.timedelta(minutes=5):
        problems["measured_at"] = ["is in the future"]
    elif measured_at < now - CUFF_READING_MAX_AGE:
        problems["measured_at"] = ["is older than a year"]
    return problems


def calibration_refresh(*, cuff_reading: CuffReading) -> Calibration | None:
    """(Re)build the calibration of a cuff reading from the patient's usable windows within
    +/- 10 min of it (current pipeline version). Returns None while there is none to pair with.

    Once an estimate has used a calibration it is frozen: estimates must keep pointing at exactly
    the reference they were computed against."""
    with transaction.atomic():
        # Two workers may pair windows with the same reading at once: they take turns on its row,
        # and each reads the windows only once it holds it.
        CuffReading.objects.select_for_update().filter(pk=cuff_reading.pk).first()
        calibration = Calibration.objects.filter(cuff_reading=cuff_reading).first()
        if calibration is not None and calibration.estimates.exists():
            return calibration
        analyses = list(
            WindowAnalysis.objects.filter(
                window__patient_id=cuff_reading.patient_id, window__status=WindowStatus.PROCESSED,
                window__recorded_at__gte=cuff_reading.measured_at - CALIBRATION_PAIRING,
                window__recorded_at__lte=cuff_reading.measured_at + CALIBRATION_PAIRING,
                pipeline_version=signals.PIPELINE_VERSION, usable=True,
            ).only("window_id", "features")
        )
        if not analyses:
            return calibration
        window_ids = sorted(a.window_id for a in analyses)
        if calibration is not None and sorted(calibration.windows.values_list("id", flat=True)) == window_ids:
            return calibration
        calibration, created = Calibration.objects.update_or_create(
            cuff_reading=cuff_reading,
            defaults={"patient_id": cuff_reading.patient_id, "calibrated_at": cuff_reading.measured_at,
                      "features": bp.mean_features([a.features for a in analyses]),
                      "pipeline_version": signals.PIPELINE_VERSION},
        )
        calibration.windows.set(window_ids)
        audit_record(
            actor=SYSTEM, action="calibration.create" if created else "calibration.update", target=calibration,
            patient=cuff_reading.patient, detail={"cuff_reading_id": cuff_reading.pk, "window_ids": window_ids},
        )
        # Windows processed while no calibration covered them (the cuff reading came later, or the
        # windows beside it were processed after later ones) were left without an estimate.
        from monitoring.tasks import estimate_window

        for window_id in selectors.windows_waiting_for_estimate(
            patient_id=cuff_reading.patient_id, recorded_from=cuff_reading.measured_at - CALIBRATION_PAIRING
        ):
            enqueue_on_commit(estimate_window, window_id)
    return calibration


def calibrations_touching_window(*, window: SignalWindow) -> list[Calibration]:
    """Re-pair cuff readings within +/- 10 min of a newly processed window (readings can come first)."""
    readings = CuffReading.objects.filter(
        patient_id=window.patient_id,
        measured_at__gte=window.recorded_at - CALIBRATION_PAIRING,
        measured_at__lte=window.recorded_at + CALIBRATION_PAIRING,
    )
    return [c for c in (calibration_refresh(cuff_reading=r) for r in readings) if c is not None]


# --- BP estimates ------------------------------------------------------------------------------

# Default limit on calibration age (days); the therapy plan sets its own per patient.
CALIBRATION_MAX_AGE_DAYS = 28.0


def window_estimate(*, window_id: int, now: dt.datetime | None = None) -> list[BPEstimate]:
    """Estimate BP for a usable window with the active model and every shadow model, relative to
    the patient's latest calibration at the window's time. One estimate per (window, model):
    a re-run changes nothing. No calibration, no estimate: an uncalibrated number is never made.

    Flags (any flag = may not support an automatic dosage release): calibration older than 28 days,
    and the carry-forward baseline being the model (its estimate repeats the cuff reading)."""
    window = SignalWindow.objects.filter(pk=window_id, status=WindowStatus.PROCESSED).first()
    analysis = WindowAnalysis.objects.filter(
        window_id=window_id, pipeline_version=signals.PIPELINE_VERSION, usable=True
    ).first()
    if window is None or analysis is None:
        return []
    calibrations_touching_window(window=window)
    calibration = (
        Calibration.objects.filter(patient_id=window.patient_id, calibrated_at__lte=window.recorded_at + CALIBRATION_PAIRING)
        .select_related("cuff_reading").order_by("-calibrated_at").first()
    )
    if calibration is None:
        log.info("window.no_estimate", window_id=window_id, reason="no calibration")
        return []
    active, shadows = registry.model_active(), registry.model_shadows()
    age_days = (window.recorded_at - calibration.calibrated_at).total_seconds() / 86400.0
    reference = bp.Calibration(sbp_mmhg=calibration.cuff_reading.sbp_mmhg, dbp_mmhg=calibration.cuff_reading.dbp_mmhg,
                               features=calibration.features)
    in_own_calibration = calibration.windows.filter(pk=window_id).exists()
    estimates = []
    for version in [v for v in (active, *shadows) if v is not None]:
        shadow = version != active
        existing = BPEstimate.objects.filter(window_id=window_id, model_version=version).first()
        if existing is None and not shadow:
            # A window keeps the one live estimate it got, even if another model is active now.
            existing = BPEstimate.objects.filter(window_id=window_id, shadow=False).first()
        if existing is not None:
            estimates.append(existing)
            continue
        try:
            estimator = registry.model_load(version)
        except registry.ModelFileTampered:
            if not shadow:
                raise
            log.error("shadow_model.unusable", model_version=version.version)
            continue
        value = bp.estimate_bp(
            estimator, analysis.features, reference,
            halfwidth_mmhg=(version.interval_sbp_mmhg, version.interval_dbp_mmhg),
            coverage=version.interval_level, names=version.features,
        )
        flags = estimate_flags(
            version=version, analysis=analysis, calibration=calibration, age_days=age_days,
            in_own_calibration=in_own_calibration,
        )
        try:
            with transaction.atomic():
                estimate = BPEstimate.objects.create(
                    window=window, analysis=analysis, patient_id=window.patient_id, model_version=version,
                    calibration=calibration, recorded_at=window.recorded_at,
                    sbp_mmhg=value.sbp_mmhg, dbp_mmhg=value.dbp_mmhg,
                    sbp_low_mmhg=value.sbp_low_mmhg, sbp_high_mmhg=value.sbp_high_mmhg,
                    dbp_low_mmhg=value.dbp_low_mmhg, dbp_high_mmhg=value.dbp_high_mmhg,
                    interval_level=value.coverage, shadow=shadow, calibration_age_days=age_days, flags=flags,
                )
        except IntegrityError:  # a concurrent run made it first
            estimate = BPEstimate.objects.filter(window_id=window_id, model_version=version).first() or \
                BPEstimate.objects.get(window_id=window_id, shadow=False)
        estimates.append(estimate)
    log.info("window.estimated", window_id=window_id, models=[e.model_version_id for e in estimates])
    return estimates


def estimate_flags(*, version, analysis: WindowAnalysis, calibration: Calibration, age_days: float,
                   in_own_calibration: bool) -> list[str]:
    """Why an estimate may not support an automatic dosage release, in words (empty: it may)."""
    flags = []
    if age_days > CALIBRATION_MAX_AGE_DAYS:
        flags.append(f"calibration is {age_days:.0f} days old (limit {CALIBRATION_MAX_AGE_DAYS:.0f})")
    if in_own_calibration or age_days < 0:
        flags.append("the window is part of its own calibration: the estimate echoes the cuff reading")
    if registry.is_baseline(version):
        flags.append("the active model is the carry-forward baseline: the estimate repeats the calibration cuff reading")
    versions = {analysis.pipeline_version, calibration.pipeline_version, version.pipeline_version}
    if len(versions) > 1:
        flags.append(f"features come from different signal pipelines ({', '.join(sorted(versions))})")
    missing = [name for name in version.features
               if analysis.features.get(name) is None or calibration.features.get(name) is None]
    if missing and not registry.is_baseline(version):
        flags.append(f"features missing from the window or its calibration: {', '.join(missing)}")
    return flags
