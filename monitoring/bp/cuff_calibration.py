"""Cuff readings and what they do to the wearable's BP: record a reading, calibrate the patient's
windows against it, and pair it with the estimates of the minutes before it (the wearable's
prospective test).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import structlog
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from clinops.base.audit import SYSTEM, audit_record
from clinops.base.errors import ApplicationError
from clinops.base.tasks import enqueue_on_commit, task_named
from monitoring import selectors
from monitoring.bp import feature_deltas
from monitoring.handoff import new_evidence_handler
from monitoring.ingest.intake import in_batches
from monitoring.models import (
    CALIBRATION_PAIRING,
    AgreementPair,
    BPEstimate,
    Calibration,
    CuffReading,
    SignalWindow,
    WindowAnalysis,
    WindowStatus,
)
from monitoring.signals import pipeline
from patients.models import Device, DeviceKind, User

log = structlog.get_logger(__name__)


# --- Cuff readings and calibration -----------------------------------------------------------

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
            # Therapy evaluates the patient once this commits (therapy/receivers.py).
            new_evidence_handler.get().cuff_reading_stored(reading)
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
                pipeline_version=pipeline.PIPELINE_VERSION, usable=True,
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
                      "features": feature_deltas.mean_features([a.features for a in analyses]),
                      "pipeline_version": pipeline.PIPELINE_VERSION},
        )
        calibration.windows.set(window_ids)
        audit_record(
            actor=SYSTEM, action="calibration.create" if created else "calibration.update", target=calibration,
            patient=cuff_reading.patient, detail={"cuff_reading_id": cuff_reading.pk, "window_ids": window_ids},
        )
        # Windows processed while no calibration covered them (the cuff reading came later, or the
        # windows beside it were processed after later ones) were left without an estimate.
        for batch in in_batches(selectors.windows_waiting_for_estimate(
            patient_id=cuff_reading.patient_id, recorded_from=cuff_reading.measured_at - CALIBRATION_PAIRING
        )):
            enqueue_on_commit(task_named("monitoring.tasks.estimate_windows"), batch)
    return calibration


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


# Calibrations read per patient and batch, newest first; a window older than all of them (a
# patient with more cuff readings than this since the window) is looked up on its own.
_CALIBRATIONS_PER_PATIENT = 64


def calibrations_at(windows: list[SignalWindow]) -> dict[int, Calibration]:
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
