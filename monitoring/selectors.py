"""Reads of signal windows, scoped to who may see them."""
from __future__ import annotations

import datetime as dt
from typing import Any, Literal, TypedDict

from django.conf import settings
from django.db.models import Avg, Count, Exists, F, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncHour
from django.utils import timezone

from monitoring.bp import learning
from monitoring.models import (
    CALIBRATION_PAIRING,
    BPEstimate,
    BPModelVersion,
    Calibration,
    CuffReading,
    MonitoringReport,
    SignalWindow,
    WindowStatus,
)
from monitoring.signals.pipeline import PIPELINE_VERSION
from patients.models import CuffModel, Role
from patients.permissions import DevicePrincipal
from patients.selectors import patients_visible_to


def windows_visible_to(caller: Any) -> QuerySet[SignalWindow]:
    """A device sees its own windows; clinicians of the care team and admins see the patient's.

    Patients see their BP, not raw windows (README "Clinician app and patient portal"), so they get none here.
    """
    windows = SignalWindow.objects.select_related("device").prefetch_related("analyses").defer("raw")
    if isinstance(caller, DevicePrincipal):
        return windows.filter(device=caller.device)
    if getattr(caller, "role", None) == Role.PATIENT:
        return windows.none()
    return windows.filter(patient__in=patients_visible_to(caller))


def windows_waiting_for_processing(*, sent_before: dt.datetime, limit: int = 5000) -> list[int]:
    """Ids of windows still unprocessed that were last sent to the queue before `sent_before`; never
    a window whose raw bytes were purged (the purge takes only processed windows: this says so here too)."""
    return list(
        SignalWindow.objects.filter(status=WindowStatus.RECEIVED, enqueued_at__lt=sent_before,
                                    raw_purged_at__isnull=True)
        .order_by("enqueued_at").values_list("id", flat=True)[:limit]
    )


def windows_processed_without_estimate(*, processed_before: dt.datetime, processed_after: dt.datetime,
                                       limit: int = 5000) -> list[int]:
    """Ids of usable processed windows (current pipeline) processed between the two times that have
    no live estimate although the patient had a calibration by then: a worker died between the
    analysis and the estimate (the batch message waits for the visibility timeout). Windows no
    calibration covers are left alone: for them no estimate is the rule, not a loss. Never a window
    whose raw bytes were purged (the purge waits a day after processing: monitoring/ingest/retention.py)."""
    calibrated = Calibration.objects.filter(patient_id=OuterRef("patient_id"),
                                            calibrated_at__lte=OuterRef("recorded_at") + CALIBRATION_PAIRING)
    return list(
        SignalWindow.objects.filter(
            status=WindowStatus.PROCESSED, processed_at__lt=processed_before, processed_at__gte=processed_after,
            analyses__pipeline_version=PIPELINE_VERSION, analyses__usable=True, raw_purged_at__isnull=True,
        ).filter(~Exists(BPEstimate.objects.filter(window_id=OuterRef("pk"), shadow=False)), Exists(calibrated))
        .order_by("processed_at").values_list("id", flat=True)[:limit]
    )


def windows_waiting_for_estimate(*, patient_id: int, recorded_from: dt.datetime, limit: int = 5000) -> list[int]:
    """Ids of a patient's usable processed windows (current pipeline) recorded from `recorded_from`
    on that have no live estimate yet, oldest first: those that found no calibration when they
    were processed."""
    return list(
        SignalWindow.objects.filter(
            patient_id=patient_id, status=WindowStatus.PROCESSED, recorded_at__gte=recorded_from,
            analyses__pipeline_version=PIPELINE_VERSION, analyses__usable=True,
        ).filter(~Exists(BPEstimate.objects.filter(window_id=OuterRef("pk"), shadow=False)))
        .order_by("recorded_at").values_list("id", flat=True)[:limit]
    )


def shadow_comparison(model: BPModelVersion) -> dict[str, float | int | None]:
    """How a shadow model's estimates differ from the active model's on the same windows (mmHg)."""
    active = BPEstimate.objects.filter(window_id=OuterRef("window_id"), shadow=False)
    paired = BPEstimate.objects.filter(model_version=model, shadow=True).annotate(
        active_sbp=Subquery(active.values("sbp_mmhg")[:1]), active_dbp=Subquery(active.values("dbp_mmhg")[:1]),
    ).exclude(active_sbp=None)
    summary = paired.aggregate(sbp=Avg(F("sbp_mmhg") - F("active_sbp")), dbp=Avg(F("dbp_mmhg") - F("active_dbp")))
    return {"n": paired.count(), "sbp_mean_diff_mmhg": summary["sbp"], "dbp_mean_diff_mmhg": summary["dbp"]}


class BPTrend(TypedDict):
    """bp_trend's chart: `t` (epoch s) and the six pressure columns (mmHg) hold one entry per hour,
    `cuff` one [epoch s, SBP, DBP] per cuff reading; `since`/`until` in epoch s; `tz` the clinic's zone."""

    t: list[int]
    sbp: list[float]
    dbp: list[float]
    sbp_low: list[float]
    sbp_high: list[float]
    dbp_low: list[float]
    dbp_high: list[float]
    cuff: list[list[float]]
    since: int
    until: int
    tz: str


def bp_trend(patient: Any, *, since: dt.datetime) -> BPTrend:
    """Hourly means of the patient's live estimates (with their interval bounds) and every cuff
    reading since `since`, as columns for the chart: times in epoch seconds, pressures in mmHg;
    `since`/`until` (epoch s) the span the chart shows whatever the data; `tz` the clinic's zone.
    Hourly, so 30 days are at most 720 points however often the wearable records; two queries."""
    hours = list(
        BPEstimate.objects.filter(patient=patient, shadow=False, recorded_at__gte=since)
        .annotate(hour=TruncHour("recorded_at")).values("hour")
        .annotate(sbp=Avg("sbp_mmhg"), dbp=Avg("dbp_mmhg"), sbp_low=Avg("sbp_low_mmhg"), sbp_high=Avg("sbp_high_mmhg"),
                  dbp_low=Avg("dbp_low_mmhg"), dbp_high=Avg("dbp_high_mmhg"), last=Max("recorded_at"))
        .order_by("hour")
    )
    cuffs = CuffReading.objects.filter(patient=patient, measured_at__gte=since).order_by("measured_at")

    def hourly(name: Literal["sbp", "dbp", "sbp_low", "sbp_high", "dbp_low", "dbp_high"]) -> list[float]:
        return [round(h[name], 1) for h in hours]

    return {
        # Each hour's mean at its last estimate: never drawn before a reading it averages.
        "t": [round(h["last"].timestamp()) for h in hours],
        "sbp": hourly("sbp"), "dbp": hourly("dbp"), "sbp_low": hourly("sbp_low"), "sbp_high": hourly("sbp_high"),
        "dbp_low": hourly("dbp_low"), "dbp_high": hourly("dbp_high"),
        "cuff": [[round(t.timestamp()), s, d] for t, s, d in cuffs.values_list("measured_at", "sbp_mmhg", "dbp_mmhg")],
        "since": round(since.timestamp()),
        "until": round(timezone.now().timestamp()),
        "tz": settings.TIME_ZONE,
    }


def bp_mean_since(patient: Any, *, since: dt.datetime) -> dict[str, float | int | None]:
    """Mean SBP/DBP (mmHg) and count of the patient's live estimates since `since`, and how many of
    them the carry-forward baseline made (`n_repeating_cuff`: they repeat a cuff reading, they
    measure nothing); one query."""
    return BPEstimate.objects.filter(patient=patient, shadow=False, recorded_at__gte=since).aggregate(
        sbp=Avg("sbp_mmhg"), dbp=Avg("dbp_mmhg"), n=Count("id"),
        n_repeating_cuff=Count("id", filter=Q(model_version__hyperparameters__estimator=learning.CARRY_FORWARD)))


def latest_reports(kind: str) -> list:
    """The newest stored report of `kind` for each scope (one query; scopes in name order)."""
    newest = MonitoringReport.objects.filter(kind=kind, scope=OuterRef("scope")).order_by("-computed_at").values("pk")[:1]
    return list(MonitoringReport.objects.filter(kind=kind, pk=Subquery(newest)).order_by("scope"))


def cuff_is_validated(cuff: Any) -> bool:
    """The cuff (a registered cuff Device, or None) is of a model an administrator marked validated."""
    if cuff is None:
        return False
    return CuffModel.objects.filter(make=cuff.make, model=cuff.model, validated=True).exists()

