"""Stored monitoring reports: pipeline health, clinician-AI agreement, population per care team.

Each report is computed by beat and stored as a MonitoringReport row, so pages read one row
instead of scanning windows, audit events or patients. Computing again stores a newer row and
changes nothing else (pages read the newest per kind and scope).

The top of this module is pure math (values in, numbers out, no ORM); the queries that feed
it are below, and the Celery tasks at the end are thin. Units: shares are percentages (0..100,
rounded to 0.01), latency in ms, time to decision in hours, silences in hours, inertia in days.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet
from django.utils import timezone

from clinops.base.models import AuditEvent
from monitoring.health.model_health import operational_alerts_sync
from monitoring.models import MonitoringReport, MonitoringReportKind, SignalWindow, WindowAnalysis, WindowStatus
from patients.models import CareTeam, Device, Patient
from therapy.models import LatestEvaluation, PlanVersion, Suggestion, SuggestionKind, SuggestionStatus
from therapy.selectors import autonomy_counts, patients_with_triage
from therapy.triage import DEVICE_SILENT_AFTER, Triage

# --- Pure math ------------------------------------------------------------------------------------

def pct(part: int | float, whole: int | float) -> float | None:
    """100 * part / whole in %, rounded to 0.01 (None when whole is 0: no share of nothing)."""
    if not whole:
        return None
    return round(100.0 * part / whole, 2)


def percentile_position(n: int, p: float) -> tuple[int, int, float]:
    """For n sorted values, the 0-based ranks (lo, hi) around percentile p (0..100) and the
    weight of hi. Shared by `percentile` and the database version (which fetches only lo..hi)."""
    if n <= 0:
        raise ValueError("no values")
    position = (n - 1) * min(max(p, 0.0), 100.0) / 100.0
    lo = math.floor(position)
    hi = min(lo + 1, n - 1)
    return lo, hi, position - lo


def interpolate(lo_value: Any, hi_value: Any, weight: float) -> Any:
    """lo + (hi - lo) * weight, for numbers or durations."""
    return lo_value + (hi_value - lo_value) * weight


def percentile(values: Iterable[float], p: float) -> float | None:
    """Percentile p (0..100) of the values, linear between the two nearest ranks (numpy's default):
    p50 of an even count is the mean of the middle two, as a reader expects of a median. None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    lo, hi, weight = percentile_position(len(ordered), p)
    return interpolate(ordered[lo], ordered[hi], weight)


def summary_of(values: Sequence[float], *, digits: int = 1) -> dict[str, float | int | None]:
    """n, p50 and p95 of the values (in their own unit), rounded to `digits`."""
    def rounded(x: float | None) -> float | None:
        return None if x is None else round(x, digits)
    return {"n": len(values), "p50": rounded(percentile(values, 50)), "p95": rounded(percentile(values, 95))}


def reason_shares(counts: Mapping[str, int], whole: int) -> dict[str, dict[str, float | int | None]]:
    """{reason: {"count", "pct"}} with pct of `whole`, most frequent first. A window rejected for
    two reasons counts under both, so the reasons' shares may add up to more than the rejected share."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return {reason: {"count": n, "pct": pct(n, whole)} for reason, n in ordered}


def rejection_figures(judged: int, rejected: int, reasons: Mapping[str, int]) -> dict[str, Any]:
    """Windows judged, usable, rejected (count and %) and the rejections by reason (% of judged)."""
    return {"judged": judged, "usable": judged - rejected, "rejected": rejected, "rejected_pct": pct(rejected, judged),
            "rejected_by_reason": reason_shares(reasons, judged)}


def tally_rejections(judged: Iterable[tuple[Hashable, int, int]],
                     reasons: Iterable[tuple[Hashable, Sequence[str], int]]) -> dict[Any, dict[str, Any]]:
    """{key: rejection_figures} from counts per key [(key, judged, rejected)] and rejected windows
    per key and reason list [(key, reasons, n windows)]; a reason repeated in one list counts once,
    a rejected window without a reason counts as "unspecified"."""
    counts: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for key, n, rejected in judged:
        counts[key][0] += n
        counts[key][1] += rejected
    by_reason: dict[Any, Counter] = defaultdict(Counter)
    for key, why, n in reasons:
        for reason in dict.fromkeys(why or ["unspecified"]):
            by_reason[key][reason] += n
    return {key: rejection_figures(n, rejected, by_reason[key]) for key, (n, rejected) in counts.items()}


def failure_category(failure: str) -> str:
    """A failed window's reason without its particulars: the exception class ("WindowDataCorrupt"
    of "WindowDataCorrupt: stored signal does not match its SHA-256"), so failures group."""
    head = failure.split(":", 1)[0].strip()
    return head or "unknown"


# Clinician decisions as the audit trail names them, and what each means for agreement.
DECISION_ACTIONS = {"suggestion.approve": "approved", "suggestion.modify": "modified", "suggestion.reject": "rejected"}


def override_summary(decisions: Iterable[str]) -> dict[str, float | int | None]:
    """Counts of "approved"/"modified"/"rejected" decisions and the override rate
    (modified + rejected) / reviewed, in %."""
    counts = Counter(decisions)
    reviewed = counts["approved"] + counts["modified"] + counts["rejected"]
    overridden = counts["modified"] + counts["rejected"]
    return {"reviewed": reviewed, "approved": counts["approved"], "modified": counts["modified"],
            "rejected": counts["rejected"], "overridden": overridden, "override_pct": pct(overridden, reviewed)}


# Why a suggestion went to a clinician, by the start of its first routing reason (the texts of
# therapy/routing.py and therapy/titration.py), in words a governance review reads. First match wins.
ROUTING_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("urgent:", "urgent escalation"),
    ("automatic steps", "autonomy not granted by the plan"),
    ("at most one rung", "more than one rung"),
    ("highest rung allowed automatically", "above the highest automatic rung"),
    ("not enough data", "insufficient data"),
    ("no estimates in the look-back", "insufficient data"),
    ("data are stale", "stale data"),
    ("the proposal was computed", "stale proposal"),
    ("estimate uncertainty", "estimate uncertainty"),
    ("usable recordings", "signal quality"),
    ("calibration", "calibration"),
    ("flagged as unfit", "flagged estimates"),
    ("crisis level", "crisis reading"),
    ("below 100 mmhg", "low readings"),
    ("adherence", "adherence"),
    ("excluded from automatic", "patient exclusion"),
    ("top rung", "top of the ladder"),
    ("symptoms of low blood pressure", "low-pressure symptoms"),
    ("clinician decides", "clinician decision required"),
    ("clinician must decide", "clinician decision required"),
)


def routing_category(routing_reasons: Sequence[str]) -> str:
    """The category of a suggestion's first routing reason ("none" when it had none, "other"
    when the text is not one we know)."""
    if not routing_reasons:
        return "none"
    first = routing_reasons[0].lower()
    for needle, category in ROUTING_CATEGORIES:
        if needle in first:
            return category
    return "other"


@dataclass(frozen=True)
class Decision:
    """One clinician decision on one suggestion; hours_to_decision from creation to the audit row."""

    suggestion_id: int
    decision: str  # approved | modified | rejected
    kind: str
    category: str
    model_versions: tuple[str, ...]
    hours_to_decision: float
    decided_at: dt.datetime
    reason: str


@dataclass(frozen=True)
class CreatedSuggestion:
    suggestion_id: int
    auto_release: bool
    model_versions: tuple[str, ...]


@dataclass(frozen=True)
class PendingSuggestion:
    suggestion_id: int
    urgent: bool
    model_versions: tuple[str, ...]
    hours_waiting: float


class _ModelVersioned(Protocol):
    """Decision, CreatedSuggestion and PendingSuggestion alike: what the by-model reports split on."""

    @property
    def model_versions(self) -> tuple[str, ...]: ...


NO_MODEL = "(none)"  # suggestions resting on no estimate (e.g. a symptom report alone)
RECENT_OVERRIDES = 20


def _grouped(decisions: Sequence[Decision], key) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for d in decisions:
        for k in key(d):
            groups[k].append(d.decision)
    return {k: override_summary(v) for k, v in sorted(groups.items())}


def agreement_summary(decisions: Sequence[Decision], created: Sequence[CreatedSuggestion],
                      pending: Sequence[PendingSuggestion], *, by_model: bool) -> dict[str, Any]:
    """The agreement payload for one scope: override rate overall, by kind, by routing category
    (and by model version when `by_model`), time to decision (h), auto-release volume, queue."""
    steps = [d.decision for d in decisions if d.kind != "escalate"]
    auto = sum(1 for c in created if c.auto_release)
    payload: dict[str, Any] = {
        **override_summary(d.decision for d in decisions),
        # An escalation proposes no step of its own (a clinician must choose): its "modified" is
        # the expected answer, not a disagreement, so the rate on proposed steps is given apart.
        "override_pct_steps_only": override_summary(steps)["override_pct"],
        "by_kind": _grouped(decisions, lambda d: (d.kind,)),
        "by_routing_category": _grouped(decisions, lambda d: (d.category,)),
        "time_to_decision_hours": summary_of([d.hours_to_decision for d in decisions], digits=2),
        "suggestions_created": len(created),
        "auto_released": auto,
        "auto_released_pct": pct(auto, len(created)),
        "sent_to_review": len(created) - auto,
        "queue": {
            "pending": len(pending),
            "urgent": sum(1 for p in pending if p.urgent),
            "oldest_hours": round(max(p.hours_waiting for p in pending), 2) if pending else None,
        },
        # The clinicians' own words (from the audit trail), newest first, for the review to read.
        "recent_overrides": [
            {"suggestion_id": d.suggestion_id, "decision": d.decision, "kind": d.kind, "category": d.category,
             "reason": d.reason, "decided_at": d.decided_at.isoformat()}
            for d in sorted(decisions, key=lambda d: d.decided_at, reverse=True) if d.decision != "approved"
        ][:RECENT_OVERRIDES],
    }
    if by_model:
        payload["by_model_version"] = _grouped(decisions, lambda d: d.model_versions or (NO_MODEL,))
    return payload


def last_rung_change_at(history: Sequence[tuple[int, dt.datetime]]) -> dt.datetime | None:
    """When the rung last moved, from plan versions [(rung, created_at)] in version order (the
    same rule as therapy.selectors.last_rung_change, without the query)."""
    changes = [at for (before, _), (rung, at) in zip(history, history[1:]) if rung != before]
    return changes[-1] if changes else None


@dataclass(frozen=True)
class UncontrolledPatient:
    """last_proposal_at: newest step/escalation suggestion; last_rung_change_at: newest plan
    version that moved the rung; plan_set_at: the first plan version (None = no plan)."""

    patient_id: int
    last_proposal_at: dt.datetime | None
    last_rung_change_at: dt.datetime | None
    plan_set_at: dt.datetime | None


INERTIA_BASIS = (
    "Uncontrolled = the patient list's triage now. A change = a step-up, step-down or escalation "
    "suggestion created, or a plan version that moved the rung, within the window. How long a patient "
    "has been uncontrolled is not stored (the latest evaluation is overwritten), so days_without_change "
    "is the days since the last suggestion or rung change, or since the plan was set when there was none: "
    "an upper bound on the days uncontrolled without a change."
)


def inertia(patients: Sequence[UncontrolledPatient], *, now: dt.datetime, window_days: float) -> dict[str, Any]:
    """Therapeutic inertia among uncontrolled patients: how many had a change proposed or made in
    the last `window_days` days, and for the others the days since their last one (see INERTIA_BASIS)."""
    since = now - dt.timedelta(days=window_days)
    without: list[dict[str, Any]] = []
    for p in patients:
        last = max((at for at in (p.last_proposal_at, p.last_rung_change_at) if at is not None), default=None)
        if last is not None and last >= since:
            continue
        start = last or p.plan_set_at
        days = None if start is None else round((now - start).total_seconds() / 86400.0, 1)
        without.append({"patient_id": p.patient_id, "days_without_change": days,
                        "since": None if start is None else start.isoformat()})
    without.sort(key=lambda row: (-(row["days_without_change"] or 0.0), row["patient_id"]))
    known_days = [row["days_without_change"] for row in without if row["days_without_change"] is not None]
    n, n_without = len(patients), len(without)
    return {
        "window_days": window_days,
        "uncontrolled": n,
        "with_change": n - n_without,
        "with_change_pct": pct(n - n_without, n),
        "without_change": n_without,
        "inertia_pct": pct(n_without, n),
        "days_without_change": {"median": percentile(known_days, 50), "max": max(known_days) if known_days else None},
        "patients_without_change": without,
        "basis": INERTIA_BASIS,
    }


def triage_shares(categories: Iterable[str], names: Sequence[str]) -> dict[str, Any]:
    """Counts and % of each triage category (every name present, zero included)."""
    counts = Counter(categories)
    total = sum(counts.values())
    return {"patients": total, "counts": {name: counts[name] for name in names},
            "pct": {name: pct(counts[name], total) for name in names}}


# --- Database glue ----------------------------------------------------------------------------------

PIPELINE_PERIOD = dt.timedelta(hours=24)
AGREEMENT_PERIOD = dt.timedelta(days=30)
INERTIA_WINDOW_DAYS = 30.0
# Windows processed in the period are looked up through the indexed received_at: one processed
# more than this long after it arrived is missed by the latency and rejection figures (it would
# have shown as queue depth while it waited).
PIPELINE_MAX_LAG = dt.timedelta(days=7)


def _store(kind: str, scope: str, start: dt.datetime, end: dt.datetime, payload: dict[str, Any]) -> MonitoringReport:
    return MonitoringReport.objects.create(kind=kind, scope=scope, period_start=start, period_end=end, payload=payload)


def _db_percentiles(values: QuerySet, field: str, ps: Sequence[float]) -> tuple[int, list[Any]]:
    """The count and percentiles (same rule as `percentile`) of one annotated field (a number or a
    duration), computed by the database's ORDER BY: only the two ranks around each percentile
    leave the database, however many rows there are."""
    n = values.count()
    out: list[Any] = []
    for p in ps:
        if n == 0:
            out.append(None)
            continue
        lo, hi, weight = percentile_position(n, p)
        pair = list(values.order_by(field).values_list(field, flat=True)[lo:hi + 1])
        lo_value, hi_value = pair[0], pair[-1]
        out.append(interpolate(lo_value, hi_value, weight))
    return n, out


def broker_queue_lengths() -> dict[str, int] | None:
    """Tasks waiting in each of the broker's queues ("celery": windows and monitoring, "therapy":
    evaluations due); None when Redis cannot be asked. Debounced evaluations not yet due are held
    by the workers, not counted here."""
    try:
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2)
        return {queue.name: int(client.llen(queue.name)) for queue in settings.CELERY_TASK_QUEUES}
    except Exception:  # noqa: BLE001 - a report must not fail because the broker is away; None says so
        return None


def _minutes_waited(oldest: dt.datetime | None, now: dt.datetime) -> float | None:
    """How long the oldest waiting item has waited (min, one decimal); None when nothing waits."""
    return None if oldest is None else round((now - oldest).total_seconds() / 60, 1)


def _evaluations_overdue(*, now: dt.datetime) -> dict[str, Any]:
    """Patients under a plan whose daily evaluation is overdue, and by how long the oldest is (min).
    Due: THERAPY_EVALUATION_INTERVAL_S after the latest evaluation, or, never evaluated, when the
    first plan was set (setting it asks for one at once). The due sweep sends twice each minute's
    share, so normal is none; the broker queues cannot show this (a lost or refused send leaves no
    task). Two indexed reads, whatever the number of patients."""
    interval = dt.timedelta(seconds=settings.THERAPY_EVALUATION_INTERVAL_S)
    stale = LatestEvaluation.objects.filter(evaluated_at__lt=now - interval).aggregate(n=Count("pk"),
                                                                                       oldest=Min("evaluated_at"))
    never = (Patient.objects.filter(latest_evaluation__isnull=True)
             .annotate(planned_at=Min("plan_versions__created_at")).filter(planned_at__lt=now)
             .aggregate(n=Count("pk"), oldest=Min("planned_at")))
    due = [at for at in (stale["oldest"] and stale["oldest"] + interval, never["oldest"]) if at is not None]
    return {"patients_overdue": stale["n"] + never["n"], "oldest_overdue_minutes": _minutes_waited(min(due, default=None), now)}


# The device columns a pipeline report names a device by.
_DeviceIdentity = Literal["serial", "model", "firmware", "patient_id"]


def pipeline_report(*, now: dt.datetime) -> dict[str, Any]:
    """Pipeline health over the last 24 h (windows processed in it): rejected share overall, per
    device and per device model + firmware, by reason; silent devices; latency received ->
    processed (ms); queue depth; daily therapy evaluations overdue; failed windows by reason."""
    start = now - PIPELINE_PERIOD
    processed = SignalWindow.objects.filter(received_at__gte=start - PIPELINE_MAX_LAG,
                                            processed_at__gt=start, processed_at__lte=now)
    judged = processed.filter(status__in=[WindowStatus.PROCESSED, WindowStatus.REJECTED])
    per_source = list(judged.values("device_id", "firmware").annotate(
        n=Count("id"), rejected=Count("id", filter=Q(status=WindowStatus.REJECTED))).order_by())
    # The verdict in force is the window's newest analysis (a new pipeline version adds one).
    newest = ~Exists(WindowAnalysis.objects.filter(window_id=OuterRef("window_id"), id__gt=OuterRef("id")))
    rejected_rows = list(WindowAnalysis.objects.filter(
        newest, usable=False, window__in=judged.filter(status=WindowStatus.REJECTED))
        .values("window__device_id", "window__firmware", "reasons").annotate(n=Count("id")).order_by())
    devices = {d["id"]: d for d in Device.objects.filter(pk__in={row["device_id"] for row in per_source})
               .values("id", "serial", "model", "firmware", "patient_id")}
    model_of = {device_id: d["model"] for device_id, d in devices.items()}
    judged_rows = [(row["device_id"], row["firmware"], row["n"], row["rejected"]) for row in per_source]
    reason_rows = [(row["window__device_id"], row["window__firmware"], row["reasons"], row["n"])
                   for row in rejected_rows]

    def by(key) -> dict[Any, dict[str, Any]]:
        """Rejection figures grouped by key(device id, firmware at upload)."""
        return tally_rejections([(key(d, f), n, r) for d, f, n, r in judged_rows],
                                [(key(d, f), why, n) for d, f, why, n in reason_rows])

    totals = by(lambda device, firmware: "all").get("all", rejection_figures(0, 0, {}))
    by_device = by(lambda device, firmware: device)
    by_firmware = by(lambda device, firmware: (model_of[device], firmware))

    # Ids and serials, never names.
    identity: tuple[_DeviceIdentity, ...] = ("serial", "model", "firmware", "patient_id")
    device_rows = [{"device_id": device_id, **{k: devices[device_id][k] for k in identity}, **figures}
                   for device_id, figures in by_device.items()]
    device_rows.sort(key=lambda row: (-(row["rejected_pct"] or 0.0), row["device_id"]))
    firmware_rows = [{"model": model, "firmware": firmware, **figures}
                     for (model, firmware), figures in sorted(by_firmware.items())]

    silent_since = now - DEVICE_SILENT_AFTER
    silent = (Device.objects.filter(revoked_at__isnull=True)
              .filter(Q(last_seen_at__lt=silent_since) | Q(last_seen_at__isnull=True, registered_at__lt=silent_since))
              .order_by(F("last_seen_at").asc(nulls_first=True), "id")
              .values("id", "serial", "patient_id", "last_seen_at"))
    silent_rows = [{"device_id": d["id"], "serial": d["serial"], "patient_id": d["patient_id"],
                    "last_seen_at": d["last_seen_at"] and d["last_seen_at"].isoformat(),
                    "hours_silent": d["last_seen_at"] and round((now - d["last_seen_at"]).total_seconds() / 3600, 1)}
                   for d in silent]

    latency = judged.annotate(latency=F("processed_at") - F("received_at"))
    n_latency, (p50, p95) = _db_percentiles(latency, "latency", (50, 95))

    def ms(value: dt.timedelta | None) -> float | None:
        return None if value is None else round(value.total_seconds() * 1000.0, 1)

    waiting = (SignalWindow.objects.filter(status=WindowStatus.RECEIVED)
               .aggregate(n=Count("id"), oldest=Min("received_at")))
    failures: dict[str, dict[str, Any]] = {}
    failed = processed.filter(status=WindowStatus.FAILED).values("failure").annotate(n=Count("id")).order_by("failure")
    for row in failed:
        entry = failures.setdefault(failure_category(row["failure"]), {"count": 0, "example": row["failure"]})
        entry["count"] += row["n"]
    return {
        "period_hours": PIPELINE_PERIOD.total_seconds() / 3600,
        **totals,
        "by_device": device_rows,
        "by_firmware": firmware_rows,
        "silent_after_hours": DEVICE_SILENT_AFTER.total_seconds() / 3600,
        "silent_devices": silent_rows,
        "latency_ms": {"n": n_latency, "p50": ms(p50), "p95": ms(p95)},
        "queue": {"received_waiting": waiting["n"],
                  "oldest_waiting_minutes": _minutes_waited(waiting["oldest"], now),
                  "broker_queue_lengths": broker_queue_lengths()},
        "evaluation": _evaluations_overdue(now=now),
        "failed": {"count": sum(f["count"] for f in failures.values()),
                   "by_reason": dict(sorted(failures.items(), key=lambda item: (-item[1]["count"], item[0])))},
    }


def pipeline_report_store(*, now: dt.datetime) -> MonitoringReport:
    return _store(MonitoringReportKind.PIPELINE, "all", now - PIPELINE_PERIOD, now, pipeline_report(now=now))


def _hours(delta: dt.timedelta) -> float:
    return delta.total_seconds() / 3600.0


def agreement_inputs(*, now: dt.datetime) -> tuple[list[Decision], list[CreatedSuggestion], list[PendingSuggestion]]:
    """Clinician decisions in the last 30 days (from the audit trail: a suggestion's status may
    since have become acknowledged, the audit row of the decision stays), suggestions created in
    them, and the review queue now."""
    start = now - AGREEMENT_PERIOD
    events = (AuditEvent.objects.filter(action__in=list(DECISION_ACTIONS), object_type=Suggestion._meta.label,
                                        at__gt=start, at__lte=now)
              .order_by("id").values_list("object_id", "action", "at", "detail"))
    first: dict[int, tuple[str, dt.datetime, dict]] = {}
    for object_id, action, at, detail in events:
        first.setdefault(int(object_id), (action, at, detail or {}))
    suggestions = {s["id"]: s for s in Suggestion.objects.filter(pk__in=list(first))
                   .values("id", "kind", "model_versions", "routing_reasons", "created_at")}
    decisions = [
        Decision(suggestion_id=sid, decision=DECISION_ACTIONS[action], kind=s["kind"],
                 category=routing_category(s["routing_reasons"] or []), model_versions=tuple(s["model_versions"] or ()),
                 hours_to_decision=_hours(at - s["created_at"]), decided_at=at, reason=str(detail.get("reason", "")))
        for sid, (action, at, detail) in first.items() if (s := suggestions.get(sid)) is not None
    ]
    created = [CreatedSuggestion(row["id"], row["auto_release"], tuple(row["model_versions"] or ()))
               for row in Suggestion.objects.filter(created_at__gt=start, created_at__lte=now)
               .values("id", "auto_release", "model_versions")]
    pending = [PendingSuggestion(row["id"], row["urgent"], tuple(row["model_versions"] or ()),
                                 _hours(now - row["created_at"]))
               for row in Suggestion.objects.filter(status=SuggestionStatus.PENDING_REVIEW)
               .values("id", "urgent", "model_versions", "created_at")]
    return decisions, created, pending


def agreement_reports(*, now: dt.datetime) -> dict[str, dict[str, Any]]:
    """{scope: payload}: "all" (with a by-model split) and "model:<version>" for every BP model
    version behind a decision, a suggestion or the queue in the period."""
    decisions, created, pending = agreement_inputs(now=now)
    reports = {"all": agreement_summary(decisions, created, pending, by_model=True)}
    items: tuple[_ModelVersioned, ...] = (*decisions, *created, *pending)
    versions = sorted({v for item in items for v in item.model_versions})
    for version in versions:
        reports[f"model:{version}"] = agreement_summary(
            [d for d in decisions if version in d.model_versions], [c for c in created if version in c.model_versions],
            [p for p in pending if version in p.model_versions], by_model=False)
    for payload in reports.values():
        payload["period_days"] = AGREEMENT_PERIOD.days
    return reports


@transaction.atomic
def agreement_reports_store(*, now: dt.datetime) -> list[MonitoringReport]:
    return [_store(MonitoringReportKind.AGREEMENT, scope, now - AGREEMENT_PERIOD, now, payload)
            for scope, payload in agreement_reports(now=now).items()]


TRIAGE_NAMES = [t.name.lower() for t in Triage]  # escalated, device_silent, insufficient_data, uncontrolled, controlled
CHANGE_KINDS = [SuggestionKind.STEP_UP, SuggestionKind.STEP_DOWN, SuggestionKind.ESCALATE]


def population_report(team: CareTeam, *, now: dt.datetime) -> dict[str, Any]:
    """The team's patients by triage category (the patient list's own rule and query, so the
    numbers match it), therapeutic inertia among the uncontrolled, and the dose steps of the
    period released automatically vs decided by a clinician (`autonomy`)."""
    rows = patients_with_triage(team.patients.all(), now=now)
    uncontrolled = [r.patient.pk for r in rows if r.triage is Triage.UNCONTROLLED]
    last_proposal = dict(Suggestion.objects.filter(patient_id__in=uncontrolled, kind__in=CHANGE_KINDS)
                         .values("patient_id").annotate(last=Max("created_at")).values_list("patient_id", "last"))
    history: dict[int, list[tuple[int, dt.datetime]]] = defaultdict(list)
    versions = (PlanVersion.objects.filter(patient_id__in=uncontrolled).order_by("patient_id", "version")
                .values_list("patient_id", "current_rung", "created_at"))
    for patient_id, rung, at in versions:
        history[patient_id].append((rung, at))
    patients = [UncontrolledPatient(pid, last_proposal.get(pid), last_rung_change_at(history[pid]),
                                    history[pid][0][1] if history[pid] else None) for pid in uncontrolled]
    return {"team_id": team.pk, **triage_shares((r.triage.name.lower() for r in rows), TRIAGE_NAMES),
            "inertia": inertia(patients, now=now, window_days=INERTIA_WINDOW_DAYS),
            "autonomy": autonomy_counts(team.patients.all(), since=now - dt.timedelta(days=INERTIA_WINDOW_DAYS))}


@transaction.atomic
def population_reports_store(*, now: dt.datetime) -> list[MonitoringReport]:
    """One report per care team, scope "team:<id>"."""
    return [_store(MonitoringReportKind.POPULATION, f"team:{team.pk}", now - dt.timedelta(days=INERTIA_WINDOW_DAYS), now,
                   population_report(team, now=now))
            for team in CareTeam.objects.order_by("id")]


# --- Tasks: no arguments; a re-run stores a newer report ---------------------------------------------

RETRY_TRANSIENT = {"autoretry_for": (OperationalError, InterfaceError), "retry_backoff": 2, "max_retries": 5,
                   "ignore_result": True}


# The reports' tasks keep the names they had in monitoring: queued messages and beat entries match.
@shared_task(name="monitoring.tasks.report_pipeline", **RETRY_TRANSIENT)
def report_pipeline() -> int:
    """Pipeline health of the last 24 h, with its operator alerts; returns the report's id."""
    report = pipeline_report_store(now=timezone.now())
    operational_alerts_sync(report)
    return report.pk


@shared_task(name="monitoring.tasks.report_agreement", **RETRY_TRANSIENT)
def report_agreement() -> int:
    """Clinician-AI agreement of the last 30 days, overall and per model version, with their
    operator alerts; returns the count."""
    reports = agreement_reports_store(now=timezone.now())
    for report in reports:
        operational_alerts_sync(report)
    return len(reports)


@shared_task(name="monitoring.tasks.report_population", **RETRY_TRANSIENT)
def report_population() -> int:
    """Population report of every care team; returns the count."""
    return len(population_reports_store(now=timezone.now()))
