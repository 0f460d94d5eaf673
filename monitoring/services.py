"""Writes for signal windows: receive an upload, and process it into a verdict and features."""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import structlog
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from clinops import metrics
from clinops.audit import SYSTEM, audit_record
from clinops.errors import ApplicationError
from clinops.tasks import enqueue_on_commit
from monitoring import bp, registry, selectors, signals
from monitoring.encoding import Channel, pack_window, sha256_hex, unpack_window
from monitoring.models import (AgreementPair, BPEstimate, BPModelVersion, Calibration, CuffReading, EstimateDayTotals, ModelStatus,
                               SignalWindow, WindowAnalysis, WindowStatus)
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


def _require_consent(device: Device) -> None:
    if not device.patient.has_consented:
        raise ApplicationError(
            "The patient's consent is not on record (or was withdrawn): no data is accepted for them.",
            extra={"consent_status": device.patient.consent_status}, status_code=403,
        )


def _new_window(*, device: Device, upload: WindowUpload, now: dt.datetime) -> SignalWindow:
    blob = pack_window(upload.channels)
    return SignalWindow(
        device=device, patient_id=device.patient_id, sequence=upload.sequence,
        recorded_at=upload.recorded_at, duration_s=upload.duration_s,
        ecg_fs=upload.channels["ecg"].fs, ppg_fs=upload.channels["ppg"].fs,
        encoding=upload.encoding, raw=blob, raw_sha256=sha256_hex(blob), raw_bytes=len(blob),
        firmware=device.firmware, enqueued_at=now,
    )


def _device_seen(*, device: Device, now: dt.datetime) -> None:
    if device.last_seen_at is None or device.last_seen_at < now - LAST_SEEN_RESOLUTION:
        Device.objects.filter(pk=device.pk).update(last_seen_at=now)
        device.last_seen_at = now


def windows_receive(*, device: Device, uploads: Sequence[WindowUpload]) -> list[tuple[SignalWindow, bool]]:
    """A batch of one device's windows: the same answer, window by window, as window_receive on
    each in turn (a sequence or a start time already stored, or repeated within the batch, is a
    duplicate of that window; the rest are stored and queued), at a fraction of its cost: one query finds every
    duplicate, one transaction inserts every new window (one INSERT), the device's last-seen time
    is written at most once, and after the commit one process_windows task takes the new
    windows' ids (processed, judged and estimated each on its own, in one task). Returns
    (window, created) per upload, in order.

    If a concurrent upload stores one of the sequences first, the insert fails as a whole and the
    batch is taken window by window (window_receive handles that race)."""
    _require_consent(device)
    stored = _windows_of(device=device, sequences={u.sequence for u in uploads},
                         starts={u.recorded_at for u in uploads})
    known = {w.sequence: w for w in stored}
    known_start = {w.recorded_at: w for w in stored}
    now = timezone.now()
    fresh: dict[int, SignalWindow] = {}
    fresh_start: dict[dt.datetime, SignalWindow] = {}
    for upload in uploads:
        if upload.sequence in known or upload.sequence in fresh:
            continue
        same_start = known_start.get(upload.recorded_at) or fresh_start.get(upload.recorded_at)
        if same_start is not None:  # the same window under another sequence: a duplicate of it
            known[upload.sequence] = same_start
            continue
        fresh[upload.sequence] = fresh_start[upload.recorded_at] = _new_window(device=device, upload=upload, now=now)
    if fresh:
        seen = device.last_seen_at
        try:
            with transaction.atomic():
                SignalWindow.objects.bulk_create(list(fresh.values()))
                _device_seen(device=device, now=now)
                from monitoring.tasks import process_windows

                enqueue_on_commit(process_windows, [w.pk for w in fresh.values()])
        except IntegrityError:
            device.last_seen_at = seen  # rolled back with the rest
            return [window_receive(device=device, upload=upload) for upload in uploads]
        for window in fresh.values():
            log.info("window.received", window_id=window.pk, device_id=device.pk, bytes=window.raw_bytes)
    answers, answered = [], set()
    for upload in uploads:
        created = upload.sequence in fresh and upload.sequence not in answered
        answered.add(upload.sequence)
        answers.append((fresh[upload.sequence] if upload.sequence in fresh else known[upload.sequence], created))
    return answers


def window_receive(*, device: Device, upload: WindowUpload) -> tuple[SignalWindow, bool]:
    """Store a device's window and queue it for processing; the same (device, sequence) twice, or
    a second window of the device starting at the same instant (the same window re-sent under a new
    sequence, e.g. after a counter reset), returns the stored window and changes nothing: it is
    never counted twice. Returns (window, created).

    Windows of a patient who has not given consent (or withdrew it) are refused and not stored.
    """
    _require_consent(device)
    existing = _window_of(device=device, sequence=upload.sequence, start=upload.recorded_at)
    if existing is not None:
        return existing, False
    now = timezone.now()
    window = _new_window(device=device, upload=upload, now=now)
    try:
        with transaction.atomic():
            window.save(force_insert=True)
            _device_seen(device=device, now=now)
            from monitoring.tasks import process_window

            enqueue_on_commit(process_window, window.pk)
    except IntegrityError:
        # A concurrent retry of the same upload won the race: answer with its window.
        winner = _window_of(device=device, sequence=upload.sequence, start=upload.recorded_at)
        if winner is None:
            raise
        return winner, False
    log.info("window.received", window_id=window.pk, device_id=device.pk, bytes=window.raw_bytes)
    return window, True


def _window_of(*, device: Device, sequence: int, start: dt.datetime) -> SignalWindow | None:
    """The device's stored window with this sequence or, failing that, starting at `start` (the
    same window sent again under another sequence)."""
    found = _windows_of(device=device, sequences={sequence}, starts={start})
    return next((w for w in found if w.sequence == sequence), found[0] if found else None)


def _windows_of(*, device: Device, sequences: set[int], starts: set[dt.datetime]) -> list[SignalWindow]:
    # Only what the upload answer needs: never the raw bytes.
    return list(
        SignalWindow.objects.filter(Q(sequence__in=sorted(sequences)) | Q(recorded_at__in=sorted(starts)), device=device)
        .only("id", "sequence", "status", "device_id", "recorded_at").order_by()
    )


class WindowDataCorrupt(Exception):
    """The stored bytes cannot be decoded: permanent, retrying will not help."""


def window_process(*, window_id: int) -> WindowAnalysis | None:
    """Run the signal pipeline on a stored window, once per pipeline version.

    Idempotent: if this version's analysis exists, it is returned and nothing changes. Safe to run
    concurrently: the unique (window, version) constraint keeps a single result. The BP estimate
    of a usable window is the caller's next step (the tasks make it at once: see windows_estimate).
    """
    return windows_process(window_ids=[window_id]).get(window_id)


def windows_process(*, window_ids: Sequence[int]) -> dict[int, WindowAnalysis]:
    """window_process for many windows at once (a batch upload's): one query reads them, each is
    decoded and analysed on its own (a window that cannot be decoded is marked failed, alone), and
    one transaction writes every new analysis (one INSERT) and the windows' statuses. Returns
    {window id: its analysis of this pipeline version} for each window that has one; windows gone
    or failed are absent. An analysis made by this call carries `created_now = True` and its
    window (`analysis.window`, without the raw bytes' use beyond this call).

    If another worker stores an analysis of one of these windows first, the insert fails as a
    whole and the new analyses are written window by window, each keeping whichever came first."""
    analysed = WindowAnalysis.objects.filter(window_id=OuterRef("pk"), pipeline_version=signals.PIPELINE_VERSION)
    windows = {
        w.pk: w for w in SignalWindow.objects.filter(pk__in=sorted(set(window_ids)))
        # received_at: the upload-to-estimate latency metric reads it without another query.
        .only("id", "raw", "raw_sha256", "raw_purged_at", "status", "patient_id", "recorded_at", "received_at")
        .annotate(analysed=Exists(analysed))
    }
    found: dict[int, WindowAnalysis] = {}
    earlier = [pk for pk, w in windows.items() if w.analysed and w.status != WindowStatus.FAILED]
    if earlier:
        for analysis in WindowAnalysis.objects.filter(window_id__in=earlier, pipeline_version=signals.PIPELINE_VERSION):
            analysis.window = windows[analysis.window_id]
            found[analysis.window_id] = analysis
    new: list[WindowAnalysis] = []
    for window_id in dict.fromkeys(window_ids):
        window = windows.get(window_id)
        if window is None or window.status == WindowStatus.FAILED or window.analysed:
            continue
        if window.raw_purged_at is not None:
            _window_note_purged(window)
            continue
        analysis = _analyse(window)
        if analysis is not None:
            new.append(analysis)
    if new:
        try:
            with transaction.atomic():
                WindowAnalysis.objects.bulk_create(new)
                now = timezone.now()
                for usable, status in ((True, WindowStatus.PROCESSED), (False, WindowStatus.REJECTED)):
                    ids = [a.window_id for a in new if a.usable is usable]
                    if ids:
                        SignalWindow.objects.filter(pk__in=ids).update(status=status, processed_at=now)
        except IntegrityError:
            new = [_analysis_store(a) for a in new]
        for analysis in new:
            analysis.window.status = WindowStatus.PROCESSED if analysis.usable else WindowStatus.REJECTED
            found[analysis.window_id] = analysis
            log.info(
                "window.processed", window_id=analysis.window_id, usable=analysis.usable, reasons=analysis.reasons,
                processing_ms=round(analysis.processing_ms, 2), pipeline_version=signals.PIPELINE_VERSION,
            )
        metrics.count_window_verdicts(new)
    return found


def _analyse(window: SignalWindow) -> WindowAnalysis | None:
    """The pipeline's (unsaved) analysis of one window; None, with the window marked failed, when
    its stored bytes cannot be decoded or analysed."""
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
        _window_fail(window_id=window.pk, reason=f"{exc.__class__.__name__}: {exc}"[:255])
        return None
    processing_ms = (time.perf_counter() - started) * 1000
    features = result.features.as_dict() if result.features else {}
    analysis = WindowAnalysis(
        window_id=window.pk, pipeline_version=signals.PIPELINE_VERSION, usable=result.usable,
        reasons=list(result.reasons),
        issues=[{"reason": i.reason.value, "channel": i.channel, "detail": i.detail} for i in result.issues],
        features=features, beat_count=int(features.get("beat_count", 0)),
        heart_rate_bpm=features.get("heart_rate_bpm_median"), pat_foot_ms=features.get("pat_foot_ms_median"),
        processing_ms=processing_ms,
    )
    analysis.window = window
    analysis.created_now = True
    return analysis


def _analysis_store(analysis: WindowAnalysis) -> WindowAnalysis:
    """Store one analysis unless one of this version exists already (a concurrent run): the first
    one stands and is returned."""
    window = analysis.window
    try:
        with transaction.atomic():
            analysis.save(force_insert=True)
            SignalWindow.objects.filter(pk=window.pk).update(
                status=WindowStatus.PROCESSED if analysis.usable else WindowStatus.REJECTED, processed_at=timezone.now())
    except IntegrityError:
        analysis = WindowAnalysis.objects.get(window_id=window.pk, pipeline_version=signals.PIPELINE_VERSION)
        analysis.window = window
    return analysis


def _window_note_purged(window: SignalWindow) -> None:
    """A window whose raw bytes retention dropped cannot be analysed again (e.g. by a new pipeline
    version): the reason goes on the window, and its status, times and analyses stay as they were."""
    reason = (f"raw signal purged on {timezone.localtime(window.raw_purged_at):%Y-%m-%d}: "
              f"cannot be analysed by {signals.PIPELINE_VERSION}")
    SignalWindow.objects.filter(pk=window.pk, raw_purged_at__isnull=False).exclude(failure=reason).update(failure=reason)
    log.warning("window.raw_purged", window_id=window.pk, pipeline_version=signals.PIPELINE_VERSION)


def _window_fail(*, window_id: int, reason: str) -> None:
    SignalWindow.objects.filter(pk=window_id, status=WindowStatus.RECEIVED).update(
        status=WindowStatus.FAILED, failure=reason, processed_at=timezone.now()
    )
    log.error("window.failed", window_id=window_id, reason=reason)
    metrics.count_window_failed()


# A window still unprocessed this long after it was (last) sent to the queue is sent again.
RESEND_AFTER = dt.timedelta(minutes=10)


def windows_claim_for_resend(*, window_ids: Sequence[int], now: dt.datetime,
                             status: str = WindowStatus.RECEIVED) -> list[int]:
    """Claim waiting windows (unprocessed, or processed and waiting for their estimate) for
    re-sending: each at most once per RESEND_AFTER, whoever asks, so sweepers never flood the
    queue. Returns the ids claimed, in the order given.

    One UPDATE ... RETURNING (PostgreSQL, and SQLite since 3.35): the condition and the claim in a
    single statement, so two sweepers at once never both claim a window, on either database. The
    ORM's update() returns only a count, which would need a statement per window (2 ms each: a
    sweep of 5,000 held a worker process for 10 s)."""
    ids = list(dict.fromkeys(window_ids))
    if not ids:
        return []
    quote = connection.ops.quote_name
    placeholders = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(SignalWindow._meta.db_table)} SET {quote('enqueued_at')} = %s "
            f"WHERE {quote('id')} IN ({placeholders}) AND {quote('status')} = %s AND {quote('enqueued_at')} < %s "
            f"RETURNING {quote('id')}",
            # As the ORM writes them (SQLite keeps datetimes as text: the same text form compares).
            [connection.ops.adapt_datetimefield_value(now), *ids, status,
             connection.ops.adapt_datetimefield_value(now - RESEND_AFTER)])
        claimed = {row[0] for row in cursor.fetchall()}
    return [window_id for window_id in ids if window_id in claimed]


# --- Cuff readings and calibration -----------------------------------------------------------

# A calibration pairs a cuff reading with the usable windows recorded this close to it.
CALIBRATION_PAIRING = dt.timedelta(minutes=10)
# Older readings cannot calibrate anything the therapy engine may use.
CUFF_READING_MAX_AGE = dt.timedelta(days=365)


def cuff_reading_record(
    *, actor, patient, measured_at: dt.datetime, sbp_mmhg: float, dbp_mmhg: float, source: str,
    pulse_bpm: float | None = None, arm: str = "", position: str = "", cuff: Device | None = None,
) -> CuffReading:
    """Record an upper-arm cuff reading (mmHg; pulse in beats/min, arm and position when given;
    `cuff`: the patient's registered cuff that measured, none for a cuff not registered), calibrate
    against it if windows are at hand, test the wearable's estimates of the minutes before it, and
    evaluate the patient at once (a crisis reading must not wait; a complete series may decide).
    The same (patient, time, source) again returns the stored reading (a retried upload)."""
    from patients.models import DeviceKind, User
    from therapy.domain import EstimateEvidence
    from therapy.escalation import REPEAT_WAIT, is_crisis_reading, is_low_reading
    from therapy.evidence import CuffEvidence
    from therapy.tasks import REPORT_EVALUATION_QUEUE, evaluate_patient

    if not patient.has_consented:
        raise ApplicationError(
            "The patient's consent is not on record (or was withdrawn): no data is accepted for them.",
            extra={"consent_status": patient.consent_status}, status_code=403,
        )
    problems = cuff_reading_problems(sbp_mmhg=sbp_mmhg, dbp_mmhg=dbp_mmhg, measured_at=measured_at, now=timezone.now(),
                                     pulse_bpm=pulse_bpm)
    if cuff is not None and (cuff.patient_id != patient.pk or cuff.kind != DeviceKind.CUFF or cuff.is_revoked):
        problems["cuff"] = ["is not one of this patient's registered cuffs"]
    if problems:
        raise ApplicationError("The cuff reading is not plausible.", extra={"fields": problems})
    existing = CuffReading.objects.filter(patient=patient, measured_at=measured_at, source=source).first()
    if existing is not None:
        return existing
    reading_as = EstimateEvidence.from_cuff(CuffEvidence(measured_at=measured_at, sbp_mmhg=sbp_mmhg, dbp_mmhg=dbp_mmhg))
    try:
        with transaction.atomic():
            reading = CuffReading.objects.create(
                patient=patient, measured_at=measured_at, sbp_mmhg=sbp_mmhg, dbp_mmhg=dbp_mmhg, source=source,
                pulse_bpm=pulse_bpm, arm=arm, position=position, cuff=cuff,
                entered_by=actor if isinstance(actor, User) else None,
            )
            audit_record(
                actor=actor, action="cuff_reading.record", target=reading, patient=patient,
                detail={"sbp_mmhg": sbp_mmhg, "dbp_mmhg": dbp_mmhg, "source": source, "measured_at": measured_at.isoformat(),
                        "pulse_bpm": pulse_bpm, "arm": arm, "position": position, "cuff_id": cuff.pk if cuff else None},
            )
            enqueue_on_commit(evaluate_patient, patient.pk, queue=REPORT_EVALUATION_QUEUE)
            if is_crisis_reading(reading_as) or is_low_reading(reading_as):
                # Once the wait for a repeat is over, an unrepeated crisis or low reading escalates
                # on its own: evaluate again then (the rule is therapy.escalation's).
                enqueue_on_commit(evaluate_patient, patient.pk, queue=REPORT_EVALUATION_QUEUE,
                                  countdown=REPEAT_WAIT.total_seconds() + 30)
    except IntegrityError:  # the same reading, sent twice at once
        return CuffReading.objects.get(patient=patient, measured_at=measured_at, source=source)
    calibration_refresh(cuff_reading=reading)
    agreement_pair_refresh(cuff_reading=reading)
    return reading


# A cuff reading tests the wearable's estimates of windows that started this long before it.
AGREEMENT_PAIRING = dt.timedelta(minutes=10)
_OWN_CALIBRATION_FLAG = "part of its own calibration"


def agreement_pair_refresh(*, cuff_reading: CuffReading) -> AgreementPair | None:
    """(Re)build the prospective test of the wearable by this cuff reading: the live estimates of
    windows recorded in the AGREEMENT_PAIRING before it, leaving out any calibrated on this very
    reading (they would echo it). None, with no pair stored, while there are none."""
    estimates = [
        e for e in BPEstimate.objects.filter(
            patient_id=cuff_reading.patient_id, shadow=False,
            recorded_at__gte=cuff_reading.measured_at - AGREEMENT_PAIRING, recorded_at__lt=cuff_reading.measured_at,
        ).exclude(calibration__cuff_reading=cuff_reading).select_related("model_version").only(
            "pk", "sbp_mmhg", "dbp_mmhg", "flags", "model_version__version")
        if not any(_OWN_CALIBRATION_FLAG in flag for flag in e.flags)
    ]
    if not estimates:
        AgreementPair.objects.filter(cuff_reading=cuff_reading).delete()
        return None
    pair, _ = AgreementPair.objects.update_or_create(cuff_reading=cuff_reading, defaults={
        "patient_id": cuff_reading.patient_id, "measured_at": cuff_reading.measured_at,
        "estimate_ids": sorted(e.pk for e in estimates),
        "model_versions": sorted({e.model_version.version for e in estimates}),
        "n_estimates": len(estimates),
        "estimate_sbp_mmhg": float(np.mean([e.sbp_mmhg for e in estimates])),
        "estimate_dbp_mmhg": float(np.mean([e.dbp_mmhg for e in estimates])),
        "cuff_sbp_mmhg": cuff_reading.sbp_mmhg, "cuff_dbp_mmhg": cuff_reading.dbp_mmhg,
    })
    return pair


def agreement_pairs_touching(*, estimates: Sequence[BPEstimate]) -> None:
    """New live estimates may complete the test by a cuff reading taken just after their windows
    (a late upload): one query finds those readings, each pair is rebuilt."""
    by_patient: dict[int, list[dt.datetime]] = {}
    for estimate in estimates:
        if not estimate.shadow:
            by_patient.setdefault(estimate.patient_id, []).append(estimate.recorded_at)
    if not by_patient:
        return
    near = Q()
    for patient_id, times in by_patient.items():
        near |= Q(patient_id=patient_id, measured_at__gt=min(times), measured_at__lte=max(times) + AGREEMENT_PAIRING)
    for reading in CuffReading.objects.filter(near):
        if any(t < reading.measured_at <= t + AGREEMENT_PAIRING for t in by_patient[reading.patient_id]):
            agreement_pair_refresh(cuff_reading=reading)


def cuff_reading_problems(*, sbp_mmhg: float, dbp_mmhg: float, measured_at: dt.datetime, now: dt.datetime,
                          pulse_bpm: float | None = None) -> dict[str, list[str]]:
    """Field problems of a cuff reading in words (mmHg and beats/min ranges a cuff can report; no
    future times)."""
    problems: dict[str, list[str]] = {}
    if pulse_bpm is not None and not 25 <= pulse_bpm <= 250:
        problems["pulse_bpm"] = ["must be between 25 and 250 beats per minute"]
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
        from monitoring.tasks import estimate_windows, in_batches

        for batch in in_batches(selectors.windows_waiting_for_estimate(
            patient_id=cuff_reading.patient_id, recorded_from=cuff_reading.measured_at - CALIBRATION_PAIRING
        )):
            enqueue_on_commit(estimate_windows, batch)
    return calibration


# --- BP estimates ------------------------------------------------------------------------------

# Default limit on calibration age (days); the therapy plan sets its own per patient.
CALIBRATION_MAX_AGE_DAYS = 28.0


def window_estimate(*, window_id: int, now: dt.datetime | None = None) -> list[BPEstimate]:
    """Estimate BP for a usable window with the active model and every shadow model, relative to
    the patient's latest calibration at the window's time. One estimate per (window, model):
    a re-run changes nothing. No calibration, no estimate: an uncalibrated number is never made.

    Flags (any flag = may not support an automatic dosage release): calibration older than 28 days,
    and the carry-forward baseline being the model (its estimate repeats the cuff reading)."""
    return windows_estimate(window_ids=[window_id]).get(window_id, [])


# Calibrations read per patient and batch, newest first; a window older than all of them (a
# patient with more cuff readings than this since the window) is looked up on its own.
_CALIBRATIONS_PER_PATIENT = 64


def windows_estimate(*, window_ids: Sequence[int], analyses: dict[int, WindowAnalysis] | None = None
                     ) -> dict[int, list[BPEstimate]]:
    """window_estimate for many windows at once: returns {window id: its estimates ([] when it has
    none: not usable, not processed, no calibration)}. The queries are per batch, not per window:
    the windows with their analyses (none when `analyses` come from windows_process), the cuff
    readings to re-pair, each patient's calibrations, the models in use (their files are read
    and verified once per process: _estimator), the estimates made so far (none for analyses this
    worker has just made), and one INSERT of the new estimates. A concurrent run that stores an
    estimate first makes the insert fall back to one row at a time, keeping whichever came first."""
    ids = list(dict.fromkeys(window_ids))
    given = analyses or {}
    rows = {i: given[i] for i in ids if i in given and given[i].usable
            and given[i].pipeline_version == signals.PIPELINE_VERSION and "window" in given[i]._state.fields_cache}
    missing = [i for i in ids if i not in rows]
    if missing:
        for analysis in (
            WindowAnalysis.objects.select_related("window")
            .only("id", "window_id", "pipeline_version", "usable", "features",
                  "window__id", "window__patient_id", "window__recorded_at", "window__status", "window__received_at")
            .filter(window_id__in=missing, window__status=WindowStatus.PROCESSED,
                    pipeline_version=signals.PIPELINE_VERSION, usable=True)
        ):
            rows[analysis.window_id] = analysis
    rows = {i: rows[i] for i in ids if i in rows and rows[i].window.status == WindowStatus.PROCESSED}
    out: dict[int, list[BPEstimate]] = {i: [] for i in ids}
    if not rows:
        return out
    windows = [a.window for a in rows.values()]
    calibrations_touching(windows=windows)
    calibrations = _calibrations_at(windows)
    active, shadows = _models_in_use()
    versions = [v for v in (active, *shadows) if v is not None]
    stale = [i for i, a in rows.items() if not getattr(a, "created_now", False)]
    made: dict[int, list[BPEstimate]] = {}
    if stale and versions:
        for estimate in BPEstimate.objects.filter(window_id__in=stale):
            made.setdefault(estimate.window_id, []).append(estimate)
    pending: list[tuple[int, BPEstimate]] = []  # (index in out[window], estimate to insert)
    # One predict call per model version for the whole batch (per-call overhead dominates a row).
    to_predict: dict[int, tuple[BPModelVersion, object, list[BPEstimate], list[np.ndarray], list[list[float]]]] = {}
    for window_id, analysis in rows.items():
        window = analysis.window
        calibration = calibrations.get(window_id)
        if calibration is None:
            log.info("window.no_estimate", window_id=window_id, reason="no calibration")
            continue
        age_days = (window.recorded_at - calibration.calibrated_at).total_seconds() / 86400.0
        reference = bp.Calibration(sbp_mmhg=calibration.cuff_reading.sbp_mmhg, dbp_mmhg=calibration.cuff_reading.dbp_mmhg,
                                   features=calibration.features)
        # calibration_refresh pairs only windows within CALIBRATION_PAIRING of the reading: a window
        # farther away cannot be part of it, and needs no query to say so.
        in_own_calibration = (abs(window.recorded_at - calibration.calibrated_at) <= CALIBRATION_PAIRING
                              and calibration.windows.filter(pk=window_id).exists())
        existing_rows = made.get(window_id, [])
        for version in versions:
            shadow = version != active
            existing = next((e for e in existing_rows if e.model_version_id == version.pk), None)
            if existing is None and not shadow:
                # A window keeps the one live estimate it got, even if another model is active now.
                existing = next((e for e in existing_rows if not e.shadow), None)
            if existing is not None:
                out[window_id].append(existing)
                continue
            try:
                estimator = _estimator(version)
            except registry.ModelFileTampered:
                if not shadow:
                    raise
                log.error("shadow_model.unusable", model_version=version.version)
                continue
            flags = estimate_flags(
                version=version, analysis=analysis, calibration=calibration, age_days=age_days,
                in_own_calibration=in_own_calibration,
            )
            estimate = BPEstimate(
                window=window, analysis=analysis, patient_id=window.patient_id, model_version=version,
                calibration=calibration, recorded_at=window.recorded_at, interval_level=version.interval_level,
                shadow=shadow, calibration_age_days=age_days, flags=flags,
            )
            group = to_predict.setdefault(version.pk, (version, estimator, [], [], []))
            group[2].append(estimate)
            group[3].append(bp.feature_vector(analysis.features, reference.features, version.features))
            group[4].append([reference.sbp_mmhg, reference.dbp_mmhg])
            out[window_id].append(estimate)
            pending.append((len(out[window_id]) - 1, estimate))
    for version, estimator, estimates, xs, references in to_predict.values():
        # = bp.estimate_bp, row by row: calibration BP + predicted change, +/- the conformal half-widths.
        predicted = bp.predict_bp(estimator, np.vstack(xs), np.array(references, dtype=np.float64)).tolist()
        for estimate, (sbp, dbp) in zip(estimates, predicted, strict=True):
            estimate.sbp_mmhg, estimate.dbp_mmhg = sbp, dbp
            estimate.sbp_low_mmhg, estimate.sbp_high_mmhg = sbp - version.interval_sbp_mmhg, sbp + version.interval_sbp_mmhg
            estimate.dbp_low_mmhg, estimate.dbp_high_mmhg = dbp - version.interval_dbp_mmhg, dbp + version.interval_dbp_mmhg
    if pending:
        try:
            with transaction.atomic():
                BPEstimate.objects.bulk_create([e for _, e in pending])
                estimate_day_totals_add([e for _, e in pending])
        except IntegrityError:  # a concurrent run made some of them first: one by one, the first stands
            for position, estimate in pending:
                out[estimate.window_id][position] = _estimate_store(estimate)
    metrics.observe_upload_to_estimate(e for i, e in pending if out[e.window_id][i] is e)  # not a concurrent run's
    agreement_pairs_touching(estimates=[e for _, e in pending])
    for window_id in rows:
        if out[window_id]:
            log.info("window.estimated", window_id=window_id, models=[e.model_version_id for e in out[window_id]])
    return out


def _estimate_store(estimate: BPEstimate) -> BPEstimate:
    try:
        with transaction.atomic():
            _insert(estimate)
            estimate_day_totals_add([estimate])
        return estimate
    except IntegrityError:
        return BPEstimate.objects.filter(window_id=estimate.window_id, model_version_id=estimate.model_version_id).first() \
            or BPEstimate.objects.get(window_id=estimate.window_id, shadow=False)


def estimate_day_totals_add(estimates: Sequence[BPEstimate]) -> None:
    """Add newly stored live estimates to their patient's day totals (EstimateDayTotals), in the
    caller's transaction, so the totals hold exactly the estimates that were stored. Shadow-model
    estimates never feed therapy and are not counted. Each (patient, UTC day, model version) row is
    locked while it is added to, in one order, so that two workers adding to it do not lose a sum."""
    groups: dict[tuple[int, dt.date, int], list[BPEstimate]] = {}
    for estimate in estimates:
        if not estimate.shadow:
            day = estimate.recorded_at.astimezone(dt.timezone.utc).date()
            groups.setdefault((estimate.patient_id, day, estimate.model_version_id), []).append(estimate)
    with transaction.atomic(savepoint=False):  # the caller's transaction, or one of its own
        for (patient_id, day, version_id), rows in sorted(groups.items()):
            _day_totals_add(patient_id, day, version_id, rows)


def _day_totals_add(patient_id: int, day: dt.date, version_id: int, rows: list[BPEstimate]) -> None:
    key = {"patient_id": patient_id, "day": day, "model_version_id": version_id}
    totals = EstimateDayTotals.objects.select_for_update().filter(**key).first()
    if totals is None:
        try:
            with transaction.atomic():
                _day_totals_of(key, rows).save(force_insert=True)
            return
        except IntegrityError:  # another worker started the day first: add to its row
            totals = EstimateDayTotals.objects.select_for_update().get(**key)
    _day_totals_extend(totals, rows)
    totals.save()


def _day_totals_of(key: dict, rows: list[BPEstimate]) -> EstimateDayTotals:
    first = rows[0]
    totals = EstimateDayTotals(
        **key, n=0, sum_sbp_mmhg=0.0, sum_dbp_mmhg=0.0, sum_sq_sbp_mmhg2=0.0, sum_sq_dbp_mmhg2=0.0,
        min_sbp_mmhg=first.sbp_mmhg, max_sbp_mmhg=first.sbp_mmhg, min_dbp_mmhg=first.dbp_mmhg,
        max_dbp_mmhg=first.dbp_mmhg, sum_sbp_halfwidth_mmhg=0.0, sum_dbp_halfwidth_mmhg=0.0,
        min_interval_level=first.interval_level, n_flagged=0, flags=[], first_at=first.recorded_at,
        last_at=first.recorded_at)
    _day_totals_extend(totals, rows)
    return totals


def _day_totals_extend(totals: EstimateDayTotals, rows: list[BPEstimate]) -> None:
    for e in rows:
        totals.n += 1
        totals.sum_sbp_mmhg += e.sbp_mmhg
        totals.sum_dbp_mmhg += e.dbp_mmhg
        totals.sum_sq_sbp_mmhg2 += e.sbp_mmhg * e.sbp_mmhg
        totals.sum_sq_dbp_mmhg2 += e.dbp_mmhg * e.dbp_mmhg
        # Comparisons written so that a value that is not a number replaces the extreme (and the
        # sums carry it too): the day then fails its check when read, instead of hiding it.
        totals.min_sbp_mmhg = e.sbp_mmhg if not e.sbp_mmhg >= totals.min_sbp_mmhg else totals.min_sbp_mmhg
        totals.max_sbp_mmhg = e.sbp_mmhg if not e.sbp_mmhg <= totals.max_sbp_mmhg else totals.max_sbp_mmhg
        totals.min_dbp_mmhg = e.dbp_mmhg if not e.dbp_mmhg >= totals.min_dbp_mmhg else totals.min_dbp_mmhg
        totals.max_dbp_mmhg = e.dbp_mmhg if not e.dbp_mmhg <= totals.max_dbp_mmhg else totals.max_dbp_mmhg
        totals.sum_sbp_halfwidth_mmhg += (e.sbp_high_mmhg - e.sbp_low_mmhg) / 2
        totals.sum_dbp_halfwidth_mmhg += (e.dbp_high_mmhg - e.dbp_low_mmhg) / 2
        totals.min_interval_level = min(totals.min_interval_level, e.interval_level)
        if e.flags:
            totals.n_flagged += 1
            totals.flags = [*totals.flags, *(f for f in e.flags if f not in totals.flags)]
        totals.first_at = min(totals.first_at, e.recorded_at)
        totals.last_at = max(totals.last_at, e.recorded_at)


def calibrations_touching(*, windows: list[SignalWindow]) -> list[Calibration]:
    """Re-pair the cuff readings within +/- 10 min of any of these newly processed windows
    (readings can come first): one query finds them, each is refreshed once. Returns the
    calibrations they now have."""
    by_patient: dict[int, list[dt.datetime]] = {}
    for window in windows:
        by_patient.setdefault(window.patient_id, []).append(window.recorded_at)
    near = Q()
    for patient_id, times in by_patient.items():
        near |= Q(patient_id=patient_id, measured_at__gte=min(times) - CALIBRATION_PAIRING,
                  measured_at__lte=max(times) + CALIBRATION_PAIRING)
    refreshed = [
        calibration_refresh(cuff_reading=reading) for reading in CuffReading.objects.filter(near)
        if any(abs(t - reading.measured_at) <= CALIBRATION_PAIRING for t in by_patient[reading.patient_id])
    ]
    return [c for c in refreshed if c is not None]


def _calibrations_at(windows: list[SignalWindow]) -> dict[int, Calibration]:
    """Each window's calibration: the patient's latest one calibrated at most 10 min after the
    window's time (window id -> calibration; absent when there is none)."""
    by_patient: dict[int, list[SignalWindow]] = {}
    for window in windows:
        by_patient.setdefault(window.patient_id, []).append(window)
    found: dict[int, Calibration] = {}
    for patient_id, own in by_patient.items():
        latest = max(w.recorded_at for w in own) + CALIBRATION_PAIRING
        candidates = list(Calibration.objects.filter(patient_id=patient_id, calibrated_at__lte=latest)
                          .select_related("cuff_reading").order_by("-calibrated_at")[:_CALIBRATIONS_PER_PATIENT])
        for window in own:
            limit = window.recorded_at + CALIBRATION_PAIRING
            calibration = next((c for c in candidates if c.calibrated_at <= limit), None)
            if calibration is None and len(candidates) == _CALIBRATIONS_PER_PATIENT:
                calibration = (Calibration.objects.filter(patient_id=patient_id, calibrated_at__lte=limit)
                               .select_related("cuff_reading").order_by("-calibrated_at").first())
            if calibration is not None:
                found[window.pk] = calibration
    return found


def _insert(row) -> None:
    """INSERT one row; an IntegrityError leaves any enclosing transaction usable (a savepoint
    inside one; outside, autocommit needs no BEGIN/COMMIT round trips around a single statement)."""
    if connection.in_atomic_block:
        with transaction.atomic():
            row.save(force_insert=True)
    else:
        row.save(force_insert=True)


# The files of the model versions in use are large (skops) and do not change: each version is
# read and verified against its registered SHA-256 (registry.model_load) once per process, keyed
# by (version, SHA-256), instead of being fetched and hashed for every window.
_ESTIMATORS: dict[tuple[int, str], object] = {}


def _models_in_use() -> tuple[BPModelVersion | None, list[BPModelVersion]]:
    """The active model and the shadow models (as registry.model_active / model_shadows), in one
    query and without their files."""
    rows = list(BPModelVersion.objects.filter(Q(status=ModelStatus.ACTIVE) | Q(shadow=True))
                .defer("artifact", "metrics", "data_fingerprint"))
    active = next((v for v in rows if v.status == ModelStatus.ACTIVE), None)
    return active, [v for v in rows if v.shadow and v.status != ModelStatus.ACTIVE]


def _estimator(version: BPModelVersion):
    key = (version.pk, version.artifact_sha256)
    estimator = _ESTIMATORS.get(key)
    if estimator is None:
        stored = BPModelVersion.objects.get(pk=version.pk)
        estimator = registry.model_load(stored)  # raises ModelFileTampered if the file does not match
        if stored.artifact_sha256 == version.artifact_sha256:
            _ESTIMATORS[key] = estimator
    return estimator


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
