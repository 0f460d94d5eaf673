"""Writes for signal windows: receive an upload, process it into a quality verdict and features, and
claim the windows a sweep sends again.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from clinops.base import metrics
from clinops.base.errors import ApplicationError
from clinops.base.tasks import enqueue_on_commit, task_named
from monitoring.ingest.encoding import Channel, pack_window, sha256_hex, unpack_window
from monitoring.models import SignalWindow, WindowAnalysis, WindowStatus
from monitoring.signals import pipeline
from patients.models import Device

log = structlog.get_logger(__name__)

# Writing last_seen_at on every upload would add a row lock per request; once a minute is enough
# for "device silent > 48 h".
LAST_SEEN_RESOLUTION = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class WindowUpload:
    """A validated upload (see monitoring/ingest/serializers.py)."""

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
                enqueue_on_commit(task_named("monitoring.tasks.process_windows"), [w.pk for w in fresh.values()])
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
            enqueue_on_commit(task_named("monitoring.tasks.process_window"), window.pk)
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
    analysed = WindowAnalysis.objects.filter(window_id=OuterRef("pk"), pipeline_version=pipeline.PIPELINE_VERSION)
    windows = {
        w.pk: w for w in SignalWindow.objects.filter(pk__in=sorted(set(window_ids)))
        # received_at: the upload-to-estimate latency metric reads it without another query.
        .only("id", "raw", "raw_sha256", "raw_purged_at", "status", "patient_id", "recorded_at", "received_at")
        .annotate(analysed=Exists(analysed))
    }
    found: dict[int, WindowAnalysis] = {}
    earlier = [pk for pk, w in windows.items() if w.analysed and w.status != WindowStatus.FAILED]
    if earlier:
        for analysis in WindowAnalysis.objects.filter(window_id__in=earlier, pipeline_version=pipeline.PIPELINE_VERSION):
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
        made = _analyse(window)
        if made is not None:
            new.append(made)
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
                processing_ms=round(analysis.processing_ms, 2), pipeline_version=pipeline.PIPELINE_VERSION,
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
        result = pipeline.analyse_window(
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
        window_id=window.pk, pipeline_version=pipeline.PIPELINE_VERSION, usable=result.usable,
        reasons=list(result.reasons),
        issues=[{"reason": i.reason.value, "channel": i.channel, "detail": i.detail} for i in result.issues],
        features=features, beat_count=int(result.features.beat_count) if result.features else 0,
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
        analysis = WindowAnalysis.objects.get(window_id=window.pk, pipeline_version=pipeline.PIPELINE_VERSION)
        analysis.window = window
    return analysis


def _window_note_purged(window: SignalWindow) -> None:
    """A window whose raw bytes retention dropped cannot be analysed again (e.g. by a new pipeline
    version): the reason goes on the window, and its status, times and analyses stay as they were."""
    reason = (f"raw signal purged on {timezone.localtime(window.raw_purged_at):%Y-%m-%d}: "
              f"cannot be analysed by {pipeline.PIPELINE_VERSION}")
    SignalWindow.objects.filter(pk=window.pk, raw_purged_at__isnull=False).exclude(failure=reason).update(failure=reason)
    log.warning("window.raw_purged", window_id=window.pk, pipeline_version=pipeline.PIPELINE_VERSION)


def _window_fail(*, window_id: int, reason: str) -> None:
    SignalWindow.objects.filter(pk=window_id, status=WindowStatus.RECEIVED).update(
        status=WindowStatus.FAILED, failure=reason, processed_at=timezone.now()
    )
    log.error("window.failed", window_id=window_id, reason=reason)
    metrics.count_window_failed()


# A window still unprocessed this long after it was (last) sent to the queue is sent again.
RESEND_AFTER = dt.timedelta(minutes=10)
# Windows per task when many are sent at once (a sweep's re-sends, the windows a new calibration
# lets be estimated): as many as one batch upload carries. One task per window put 5,000 messages a
# minute on the windows' queue in front of the live uploads (2026-12-05 soak: upload-to-estimate
# p95 63 s); in batches a sweep's re-sends are 50 tasks, worked off between the live ones.
WINDOWS_PER_TASK = 100


def in_batches(window_ids: list[int]) -> list[list[int]]:
    """The ids, WINDOWS_PER_TASK to a list, in order."""
    return [window_ids[k:k + WINDOWS_PER_TASK] for k in range(0, len(window_ids), WINDOWS_PER_TASK)]


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
