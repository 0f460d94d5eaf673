"""BP estimates of usable windows (active and shadow models, each against the patient's calibration,
mmHg with an interval) and the per-patient day totals the therapy engine reads.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import structlog
from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from clinops.base import metrics
from monitoring.bp import feature_deltas, learning, registry
from monitoring.bp.cuff_calibration import (
    agreement_pairs_touching,
    calibrations_at,
    calibrations_touching,
)
from monitoring.models import (
    CALIBRATION_PAIRING,
    BPEstimate,
    BPModelVersion,
    Calibration,
    EstimateDayTotals,
    ModelStatus,
    SignalWindow,
    WindowAnalysis,
    WindowStatus,
)
from monitoring.signals import pipeline

log = structlog.get_logger(__name__)

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
    rows = _analyses_to_estimate(ids, analyses or {})
    out: dict[int, list[BPEstimate]] = {i: [] for i in ids}
    if not rows:
        return out
    windows = [a.window for a in rows.values()]
    calibrations_touching(windows=windows)
    calibrations = calibrations_at(windows)
    active, shadows = _models_in_use()
    versions = [v for v in (active, *shadows) if v is not None]
    made = _estimates_made(rows, versions)
    pending: list[tuple[int, BPEstimate]] = []  # (index in out[window], estimate to insert)
    # One predict call per model version for the whole batch (per-call overhead dominates a row).
    batches: dict[int, _ModelBatch] = {}  # by model version id
    for window_id, analysis in rows.items():
        calibration = calibrations.get(window_id)
        if calibration is None:
            log.info("window.no_estimate", window_id=window_id, reason="no calibration")
            continue
        out[window_id], new = _window_estimates(window_id=window_id, analysis=analysis, calibration=calibration,
                                                versions=versions, active=active, made=made.get(window_id, []),
                                                batches=batches)
        pending += new
    for batch in batches.values():
        _batch_predict(batch)
    _new_estimates_store(pending, out)
    _upload_to_estimate_observe([e for i, e in pending if out[e.window_id][i] is e])  # not a concurrent run's
    agreement_pairs_touching(estimates=[e for _, e in pending])
    for window_id in rows:
        if out[window_id]:
            log.info("window.estimated", window_id=window_id, models=[e.model_version_id for e in out[window_id]])
    return out


def _analyses_to_estimate(ids: list[int], given: dict[int, WindowAnalysis]) -> dict[int, WindowAnalysis]:
    """The usable analysis (current pipeline) of each window of `ids` that is processed, in that
    order, with its window: one given is taken as it is when its window is loaded; the others are
    read in one query."""
    rows = {i: given[i] for i in ids if i in given and given[i].usable
            and given[i].pipeline_version == pipeline.PIPELINE_VERSION and WindowAnalysis.window.is_cached(given[i])}
    missing = [i for i in ids if i not in rows]
    if missing:
        for analysis in (
            WindowAnalysis.objects.select_related("window")
            .only("id", "window_id", "pipeline_version", "usable", "features",
                  "window__id", "window__patient_id", "window__recorded_at", "window__status", "window__received_at")
            .filter(window_id__in=missing, window__status=WindowStatus.PROCESSED,
                    pipeline_version=pipeline.PIPELINE_VERSION, usable=True)
        ):
            rows[analysis.window_id] = analysis
    return {i: rows[i] for i in ids if i in rows and rows[i].window.status == WindowStatus.PROCESSED}


def _estimates_made(rows: dict[int, WindowAnalysis], versions: list[BPModelVersion]) -> dict[int, list[BPEstimate]]:
    """The estimates the windows have already (window id -> its estimates), in one query; none is
    looked for when there is no model, or for an analysis this worker has just made."""
    stale = [i for i, a in rows.items() if not a.created_now]
    made: dict[int, list[BPEstimate]] = {}
    if stale and versions:
        for estimate in BPEstimate.objects.filter(window_id__in=stale):
            made.setdefault(estimate.window_id, []).append(estimate)
    return made


@dataclass
class _ModelBatch:
    """The new estimates of one model version, predicted in one call: for each, the feature
    changes from its calibration (the model's input) and the calibration's cuff SBP and DBP (mmHg)."""

    version: BPModelVersion
    estimator: object
    estimates: list[BPEstimate] = field(default_factory=list)
    feature_changes: list[np.ndarray] = field(default_factory=list)
    calibration_bp: list[list[float]] = field(default_factory=list)


def _window_estimates(*, window_id: int, analysis: WindowAnalysis, calibration: Calibration,
                      versions: list[BPModelVersion], active: BPModelVersion | None, made: list[BPEstimate],
                      batches: dict[int, _ModelBatch]) -> tuple[list[BPEstimate], list[tuple[int, BPEstimate]]]:
    """One window's estimates, a model version at a time: the one it has (`made`), else a new one,
    unsaved, added to its version's batch to be predicted; a shadow model whose file fails its
    check is skipped. Returns the estimates and the new ones with their index among them."""
    window = analysis.window
    age_days = (window.recorded_at - calibration.calibrated_at).total_seconds() / 86400.0
    reference = feature_deltas.Calibration(sbp_mmhg=calibration.cuff_reading.sbp_mmhg,
                                           dbp_mmhg=calibration.cuff_reading.dbp_mmhg, features=calibration.features)
    # calibration_refresh pairs only windows within CALIBRATION_PAIRING of the reading: a window
    # farther away cannot be part of it, and needs no query to say so.
    in_own_calibration = (abs(window.recorded_at - calibration.calibrated_at) <= CALIBRATION_PAIRING
                          and calibration.windows.filter(pk=window_id).exists())
    estimates: list[BPEstimate] = []
    new: list[tuple[int, BPEstimate]] = []
    for version in versions:
        shadow = version != active
        existing = next((e for e in made if e.model_version_id == version.pk), None)
        if existing is None and not shadow:
            # A window keeps the one live estimate it got, even if another model is active now.
            existing = next((e for e in made if not e.shadow), None)
        if existing is not None:
            estimates.append(existing)
            continue
        try:
            estimator = _estimator(version)
        except registry.ModelFileTampered:
            if not shadow:
                raise
            log.error("shadow_model.unusable", model_version=version.version)
            continue
        flags = estimate_flags(version=version, analysis=analysis, calibration=calibration, age_days=age_days,
                               in_own_calibration=in_own_calibration)
        estimate = BPEstimate(
            window=window, analysis=analysis, patient_id=window.patient_id, model_version=version,
            calibration=calibration, recorded_at=window.recorded_at, interval_level=version.interval_level,
            shadow=shadow, calibration_age_days=age_days, flags=flags,
        )
        batch = batches.get(version.pk)
        if batch is None:
            batch = batches[version.pk] = _ModelBatch(version, estimator)
        batch.estimates.append(estimate)
        batch.feature_changes.append(feature_deltas.feature_vector(analysis.features, reference.features,
                                                                   version.features))
        batch.calibration_bp.append([reference.sbp_mmhg, reference.dbp_mmhg])
        estimates.append(estimate)
        new.append((len(estimates) - 1, estimate))
    return estimates, new


def _batch_predict(batch: _ModelBatch) -> None:
    """Set the batch's estimates and their intervals (mmHg): as learning.estimate_bp row by row,
    calibration BP + predicted change, +/- the version's conformal half-widths."""
    version = batch.version
    predicted = learning.predict_bp(batch.estimator, np.vstack(batch.feature_changes),
                                    np.array(batch.calibration_bp, dtype=np.float64)).tolist()
    for estimate, (sbp, dbp) in zip(batch.estimates, predicted, strict=True):
        estimate.sbp_mmhg, estimate.dbp_mmhg = sbp, dbp
        estimate.sbp_low_mmhg, estimate.sbp_high_mmhg = sbp - version.interval_sbp_mmhg, sbp + version.interval_sbp_mmhg
        estimate.dbp_low_mmhg, estimate.dbp_high_mmhg = dbp - version.interval_dbp_mmhg, dbp + version.interval_dbp_mmhg


def _new_estimates_store(pending: list[tuple[int, BPEstimate]], out: dict[int, list[BPEstimate]]) -> None:
    """Store the new estimates, with their day totals, in one INSERT; if a concurrent run stored
    some first, one at a time instead, the first standing (in `out`, at its index)."""
    if not pending:
        return
    try:
        with transaction.atomic():
            BPEstimate.objects.bulk_create([e for _, e in pending])
            estimate_day_totals_add([e for _, e in pending])
    except IntegrityError:  # a concurrent run made some of them first: one by one, the first stands
        for position, estimate in pending:
            out[estimate.window_id][position] = _estimate_store(estimate)


def _upload_to_estimate_observe(estimates: list[BPEstimate]) -> None:
    """Upload -> estimate latency (s) of each window among these estimates, just stored by this
    process, that got a live one. The windows' received_at is used when already loaded, else read in
    one query for them all."""
    windows = {e.window_id: e.window for e in estimates if not e.shadow}
    if not windows:
        return
    # A deferred field is absent from the instance's __dict__: reading it would cost a query per window.
    received = {pk: window.__dict__.get("received_at") for pk, window in windows.items()}
    unread = [pk for pk, at in received.items() if at is None]
    if unread:
        received.update(SignalWindow.objects.filter(pk__in=unread).values_list("pk", "received_at"))
    metrics.observe_upload_to_estimate(at for at in received.values() if at is not None)


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
