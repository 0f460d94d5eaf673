"""Reads for therapy: plans, the regimen in force, adherence, reports, alerts."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Exists, F, FloatField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from monitoring.bp import registry
from monitoring.bp.mean_interval import from_metrics
from monitoring.models import AgreementPair as AgreementPairRow
from monitoring.models import CuffReading
from patients.models import CuffModel, Device, Patient
from patients.selectors import patients_visible_to
from therapy import plans
from therapy.adherence import Adherence, DoseLogEntry, adherence_over_look_back
from therapy.domain import EscalationKind, SideEffectReport, Symptom, SymptomReport
from therapy.evidence import (
    AgreementPair,
    CuffEvidence,
    CuffSeries,
    WearableAgreement,
    cuff_series,
    trust_problems,
    wearable_agreement,
)
from therapy.models import (
    RELEASED_STATUSES,
    Alert,
    DoseLog,
    LatestEvaluation,
    PlanVersion,
    ReportKind,
    Suggestion,
    SuggestionStatus,
)
from therapy.models import SymptomReport as SymptomReportRow
from therapy.plan_advice import ActiveModel
from therapy.triage import Triage, TriageInput, triage_of


def plan_current(patient: Patient) -> PlanVersion | None:
    """The patient's latest plan version (None before a clinician has set one)."""
    return PlanVersion.objects.filter(patient=patient).order_by("-version").first()


def _rung_history(patient: Patient) -> list[tuple[int, dt.datetime]]:
    return list(PlanVersion.objects.filter(patient=patient).order_by("version").values_list("current_rung", "created_at"))


def last_rung_change(patient: Patient) -> dt.datetime | None:
    """When the patient's rung last moved (a plan version whose rung differs from the one before);
    None when it never has since the plan was set."""
    versions = _rung_history(patient)
    changes = [at for (before, _), (rung, at) in zip(versions, versions[1:]) if rung != before]
    return changes[-1] if changes else None


def regimen_started_at(patient: Patient) -> dt.datetime | None:
    """When the patient started the regimen they are on now: the last rung change, else the plan's start."""
    versions = _rung_history(patient)
    if not versions:
        return None
    return last_rung_change(patient) or versions[0][1]


def adherence_of(patient: Patient, plan: PlanVersion, *, now: dt.datetime) -> Adherence:
    """Adherence to the current regimen over the plan's look-back (complete days before today)."""
    today = timezone.localdate(now)
    since = timezone.localdate(regimen_started_at(patient) or now)
    first = today - dt.timedelta(days=int(plan.look_back_days) + 1)
    logs = DoseLog.objects.filter(patient=patient, day__gte=first, day__lt=today).values_list("day", "drug", "slot", "taken")
    regimen = plans.ladder_of(plan).rungs[plan.current_rung]
    return adherence_over_look_back(regimen, [DoseLogEntry(*row) for row in logs], today=today,
                                    look_back_days=plan.look_back_days, regimen_since=since)


def reports_since(patient: Patient, since: dt.datetime) -> tuple[list[SymptomReport], list[SideEffectReport]]:
    """Symptom and side-effect reports of the patient since `since`, as domain values."""
    symptoms: list[SymptomReport] = []
    side_effects: list[SideEffectReport] = []
    for row in SymptomReportRow.objects.filter(patient=patient, reported_at__gt=since).order_by("reported_at"):
        if row.kind == ReportKind.SYMPTOM:
            symptoms.append(SymptomReport(Symptom(row.symptom), row.reported_at, row.detail, report_id=row.pk))
        else:
            side_effects.append(SideEffectReport(row.detail, row.reported_at, row.drug or None, report_id=row.pk))
    return symptoms, side_effects


def suggestions_visible_to(user) -> QuerySet[Suggestion]:
    """Suggestions of the patients the user may see (care teams' for a clinician, their own for a patient)."""
    return Suggestion.objects.filter(patient__in=patients_visible_to(user)).select_related("patient", "plan_version")


def released_changes(suggestions: QuerySet[Suggestion]) -> QuerySet[Suggestion]:
    """Changes that reached the patient (released or approved, acknowledged or not) and moved the
    rung: what a patient is shown of their suggestions, newest first."""
    return (suggestions.filter(status__in=(*RELEASED_STATUSES, SuggestionStatus.ACKNOWLEDGED))
            .exclude(to_rung=F("from_rung")).order_by("-created_at"))


def alerts_open_for(user, *, include_snoozed: bool = True, now: dt.datetime | None = None) -> QuerySet[Alert]:
    """Open alerts of the patients the user may see, newest first (without the snoozed ones when
    include_snoozed is False: the counter)."""
    alerts = Alert.objects.filter(patient__in=patients_visible_to(user), closed_at__isnull=True).select_related("patient")
    return alerts if include_snoozed else alerts.exclude(_snoozed(now or timezone.now()))


def _snoozed(now: dt.datetime) -> Q:
    # An alert telling the patient to seek care is never out of sight (it cannot be snoozed now;
    # this also keeps one snoozed before that rule in the queue and the counter).
    return Q(snoozed_until__gt=now, seek_care=False) & ~Q(cause=EscalationKind.EVALUATION_FAILING.value)


def review_queue_for(user, *, now: dt.datetime | None = None) -> QuerySet[Suggestion]:
    """Pending suggestions of the user's patients: escalations first, then the oldest; each with
    its patient, plan version and open alerts (three queries whatever the length). An escalation
    whose alerts are all snoozed is left out until the snooze ends — never one whose patient is
    told to seek care."""
    now = now or timezone.now()
    open_alerts = Prefetch("alerts", queryset=Alert.objects.filter(closed_at__isnull=True), to_attr="open_alerts")
    alerts = Alert.objects.filter(suggestion=OuterRef("pk"), closed_at__isnull=True)
    return (suggestions_visible_to(user).filter(status=SuggestionStatus.PENDING_REVIEW)
            .exclude(Exists(alerts.filter(_snoozed(now))) & ~Exists(alerts.exclude(_snoozed(now))))
            .order_by("-urgent", "created_at").prefetch_related(open_alerts, "escalation_actions__by"))


@dataclass(frozen=True)
class PatientTriageRow:
    patient: Patient
    triage: Triage
    open_alerts: int
    last_upload_at: dt.datetime | None
    mean_sbp_mmhg: float | None
    mean_dbp_mmhg: float | None
    target_sbp_mmhg: float | None
    target_dbp_mmhg: float | None
    evaluated_at: dt.datetime | None
    source: str | None = None  # what the mean is: "cuff series", "wearable estimates" (or "none": too little data)


def _evidence_number(key: str) -> Cast:
    return Cast(KeyTextTransform(key, "latest_evaluation__evidence"), FloatField())


def patients_with_triage(patients: QuerySet[Patient], *, now: dt.datetime) -> list[PatientTriageRow]:
    """These patients (already scoped to the user and filtered) with their triage category, most
    urgent first, in one query. Reads plain values, not model graphs: a clinic of 2,000 patients
    triages in tens of ms (bench/web_pages.py)."""
    latest_plan = PlanVersion.objects.filter(patient=OuterRef("pk")).order_by("-version")
    values = Patient.objects.filter(pk__in=patients.values("pk")).annotate(
        n_open_alerts=Coalesce(Subquery(Alert.objects.filter(patient=OuterRef("pk"), closed_at__isnull=True)
                                        .values("patient").annotate(n=Count("id")).values("n")), 0),
        last_upload_at=Subquery(Device.objects.filter(patient=OuterRef("pk")).order_by(F("last_seen_at").desc(nulls_last=True))
                                .values("last_seen_at")[:1]),
        target_sbp=Subquery(latest_plan.values("target_sbp_mmhg")[:1]),
        target_dbp=Subquery(latest_plan.values("target_dbp_mmhg")[:1]),
        mean_sbp=_evidence_number("mean_sbp_mmhg"),
        mean_dbp=_evidence_number("mean_dbp_mmhg"),
        sufficient=KeyTextTransform("sufficient", "latest_evaluation__evidence"),
        source=KeyTextTransform("source", "latest_evaluation__evidence"),
        evaluated_at=F("latest_evaluation__evaluated_at"),
    ).values("id", "given_name", "family_name", "medical_record_number", "n_open_alerts", "last_upload_at",
             "target_sbp", "target_dbp", "mean_sbp", "mean_dbp", "sufficient", "evaluated_at", "source")
    rows = []
    for v in values:
        triage = triage_of(TriageInput(
            open_alerts=v["n_open_alerts"], last_upload_at=v["last_upload_at"], mean_sbp_mmhg=v["mean_sbp"],
            mean_dbp_mmhg=v["mean_dbp"], sufficient=v["sufficient"] in (True, 1, "1", "true"),
            target_sbp_mmhg=v["target_sbp"] or 135.0, target_dbp_mmhg=v["target_dbp"] or 85.0), now=now)
        patient = Patient(id=v["id"], given_name=v["given_name"], family_name=v["family_name"],
                          medical_record_number=v["medical_record_number"])
        rows.append(PatientTriageRow(patient, triage, v["n_open_alerts"], v["last_upload_at"], v["mean_sbp"], v["mean_dbp"],
                                     v["target_sbp"], v["target_dbp"], v["evaluated_at"], v["source"]))
    return sorted(rows, key=lambda r: (r.triage.rank, r.patient.family_name, r.patient.given_name))


def cuff_readings_between(patient: Patient, *, since: dt.datetime, until: dt.datetime) -> list[CuffEvidence]:
    """The patient's cuff readings with `since < measured_at <= until`, as evidence (mmHg), each
    marked with whether its cuff model is validated. Two queries whatever the number of readings."""
    validated = set(CuffModel.objects.filter(validated=True).values_list("make", "model"))
    rows = (CuffReading.objects.filter(patient=patient, measured_at__gt=since, measured_at__lte=until)
            .order_by("measured_at").values_list("pk", "measured_at", "sbp_mmhg", "dbp_mmhg", "cuff__make", "cuff__model"))
    return [
        CuffEvidence(measured_at=at, sbp_mmhg=sbp, dbp_mmhg=dbp, validated_cuff=(make, model) in validated,
                     cuff=f"{make} {model}" if make else "cuff not registered", reading_id=pk)
        for pk, at, sbp, dbp, make, model in rows
    ]


def agreement_pairs_between(patient: Patient, *, since: dt.datetime, until: dt.datetime) -> list[AgreementPair]:
    """The wearable's prospective cuff pairs with `since < measured_at <= until` (mmHg)."""
    rows = (AgreementPairRow.objects.filter(patient=patient, measured_at__gt=since, measured_at__lte=until)
            .values_list("measured_at", "cuff_sbp_mmhg", "cuff_dbp_mmhg", "estimate_sbp_mmhg", "estimate_dbp_mmhg",
                         "n_estimates"))
    return [AgreementPair(*row) for row in rows]


def wearable_agreement_of(patient: Patient, plan: PlanVersion, *, now: dt.datetime) -> WearableAgreement:
    """The patient's rolling agreement of wearable estimates with their cuff over the plan's period."""
    period = plan.agreement_period_days
    pairs = agreement_pairs_between(patient, since=now - dt.timedelta(days=period), until=now + dt.timedelta(minutes=5))
    return wearable_agreement(pairs, now=now, period_days=period)


@dataclass(frozen=True)
class HomeEvidence:
    """Where a patient's evidence stands now: the home cuff series, the wearable's agreement with
    the cuff and whether it is trusted (problems empty), for the patient page."""

    series: CuffSeries
    agreement: WearableAgreement
    trust_problems: list[str]
    protocol: str


def home_evidence_of(patient: Patient, plan: PlanVersion, *, now: dt.datetime) -> HomeEvidence:
    rules, bounds = plans.rules_of(plan), plans.bounds_of(plan)
    readings = cuff_readings_between(patient, since=now - dt.timedelta(days=plan.series_days), until=now)
    agreement = wearable_agreement_of(patient, plan, now=now)
    return HomeEvidence(series=cuff_series(readings, rules.protocol, now=now), agreement=agreement,
                        trust_problems=trust_problems(agreement, bounds.trust), protocol=rules.protocol.describe())


def active_model_for_advice() -> ActiveModel | None:
    """The active BP model as the plan editor's warnings need it (None: no model is active)."""
    model = registry.model_active()
    if model is None:
        return None
    return ActiveModel(version=model.version, is_baseline=registry.is_baseline(model),
                       window_halfwidth_mmhg=(model.interval_sbp_mmhg, model.interval_dbp_mmhg),
                       error_model=from_metrics(model.metrics))


# Steps are what autonomy may release; escalations never are, so they are not counted here.
AUTONOMY_KINDS = ("step_up", "step_down")
DECIDED_BY_A_CLINICIAN = (SuggestionStatus.APPROVED, SuggestionStatus.MODIFIED, SuggestionStatus.REJECTED)


def autonomy_counts(patients: QuerySet[Patient], *, since: dt.datetime) -> dict[str, int | float | None]:
    """Proposed dose steps since `since` for these patients: released automatically, decided by a
    clinician, waiting, and the automatic share of those released or decided (None without any)."""
    counts = {"automatic": 0, "reviewed": 0, "waiting": 0}
    rows = (Suggestion.objects.filter(patient__in=patients, kind__in=AUTONOMY_KINDS, created_at__gte=since)
            .values_list("auto_release", "status").annotate(n=Count("id")).order_by())
    acknowledged_after_review = 0
    for automatic, status, n in rows:
        if automatic:
            counts["automatic"] += n
        elif status in DECIDED_BY_A_CLINICIAN:
            counts["reviewed"] += n
        elif status == SuggestionStatus.ACKNOWLEDGED:
            acknowledged_after_review += n
        elif status == SuggestionStatus.PENDING_REVIEW:
            counts["waiting"] += n
    counts["reviewed"] += acknowledged_after_review
    decided = counts["automatic"] + counts["reviewed"]
    return {**counts, "automatic_share": counts["automatic"] / decided if decided else None}


def automatic_releases(patients: QuerySet[Patient], *, since: dt.datetime, limit: int = 50) -> QuerySet[Suggestion]:
    """Dose steps released automatically since `since`, newest first, with the plan version whose
    bounds allowed them."""
    return (Suggestion.objects.filter(patient__in=patients, auto_release=True, created_at__gte=since)
            .select_related("patient", "plan_version").order_by("-created_at")[:limit])


# Who is overdue for follow-up (the clinic's "Follow-up" lists).
OVERDUE_NO_READING_DAYS = 3  # nothing from the wearable nor a cuff for this long
OVERDUE_NO_CUFF_DAYS = 7  # no home cuff reading for this long (no series can be complete)
OVERDUE_UNACKNOWLEDGED_DAYS = 2  # a released change the patient has not confirmed reading


@dataclass(frozen=True)
class OverdueRow:
    patient: Patient
    since: dt.datetime | None  # the last reading, cuff reading or release; None: never
    detail: str = ""


def overdue_for(user, *, now: dt.datetime | None = None) -> dict[str, list[OverdueRow]]:
    """The user's patients under a plan who are overdue, oldest first, in three lists: no reading
    at all for OVERDUE_NO_READING_DAYS, no home cuff reading for OVERDUE_NO_CUFF_DAYS, and a
    released change not acknowledged for OVERDUE_UNACKNOWLEDGED_DAYS (a handful of queries)."""
    now = now or timezone.now()
    patients = (patients_visible_to(user).filter(Exists(PlanVersion.objects.filter(patient=OuterRef("pk"))))
                .annotate(last_upload=Subquery(Device.objects.filter(patient=OuterRef("pk")).order_by(
                    F("last_seen_at").desc(nulls_last=True)).values("last_seen_at")[:1]),
                          last_cuff=Subquery(CuffReading.objects.filter(patient=OuterRef("pk")).order_by(
                              "-measured_at").values("measured_at")[:1])))

    def oldest_first(rows: list[OverdueRow]) -> list[OverdueRow]:
        return sorted(rows, key=lambda r: (r.since is not None, r.since or now, r.patient.pk))

    no_reading, no_cuff = [], []
    for p in patients:
        last_any = max((t for t in (p.last_upload, p.last_cuff) if t is not None), default=None)
        if last_any is None or last_any < now - dt.timedelta(days=OVERDUE_NO_READING_DAYS):
            no_reading.append(OverdueRow(p, last_any))
        if p.last_cuff is None or p.last_cuff < now - dt.timedelta(days=OVERDUE_NO_CUFF_DAYS):
            no_cuff.append(OverdueRow(p, p.last_cuff))
    unread = (Suggestion.objects.filter(patient__in=patients_visible_to(user), status__in=RELEASED_STATUSES,
                                        updated_at__lt=now - dt.timedelta(days=OVERDUE_UNACKNOWLEDGED_DAYS))
              .exclude(to_rung=F("from_rung")).select_related("patient"))
    return {"no_reading": oldest_first(no_reading), "no_cuff": oldest_first(no_cuff),
            "unacknowledged": oldest_first([OverdueRow(s.patient, s.updated_at, s.to_regimen) for s in unread])}


def patients_due_for_evaluation(*, evaluated_before: dt.datetime, limit: int) -> list[int]:
    """Ids of up to `limit` patients with a plan who were never evaluated, then of those whose latest
    evaluation is older than `evaluated_before`, oldest first."""
    never = list(Patient.objects.filter(latest_evaluation__isnull=True)
                 .filter(Exists(PlanVersion.objects.filter(patient=OuterRef("pk"))))
                 .order_by("pk").values_list("pk", flat=True)[:limit])
    stale = (LatestEvaluation.objects.filter(evaluated_at__lt=evaluated_before)
             .order_by("evaluated_at").values_list("patient_id", flat=True)[:max(0, limit - len(never))])
    return [*never, *stale]


def evaluations_overdue(*, evaluated_before: dt.datetime) -> int:
    """How many patients with a plan were last evaluated before `evaluated_before` (or never)."""
    never = (Patient.objects.filter(latest_evaluation__isnull=True)
             .filter(Exists(PlanVersion.objects.filter(patient=OuterRef("pk")))).count())
    return never + LatestEvaluation.objects.filter(evaluated_at__lt=evaluated_before).count()
