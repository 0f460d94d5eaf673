"""Reads for therapy: plans, the regimen in force, adherence, reports, alerts."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Exists, F, FloatField, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from patients.models import Device, Patient
from patients.selectors import patients_visible_to
from therapy import plans
from therapy.adherence import Adherence, DoseLogEntry, adherence_over_look_back
from therapy.domain import SideEffectReport, Symptom, SymptomReport
from therapy.triage import Triage, TriageInput, triage_of
from therapy.models import RELEASED_STATUSES, Alert, DoseLog, PlanVersion, ReportKind, Suggestion, SuggestionStatus
from therapy.models import SymptomReport as SymptomReportRow


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
    return Q(snoozed_until__gt=now)


def review_queue_for(user, *, now: dt.datetime | None = None) -> QuerySet[Suggestion]:
    """Pending suggestions of the user's patients: escalations first, then the oldest; each with
    its patient, plan version and open alerts (three queries whatever the length). An escalation
    whose alerts are all snoozed is left out until the snooze ends."""
    now = now or timezone.now()
    open_alerts = Prefetch("alerts", queryset=Alert.objects.filter(closed_at__isnull=True), to_attr="open_alerts")
    alerts = Alert.objects.filter(suggestion=OuterRef("pk"), closed_at__isnull=True)
    return (suggestions_visible_to(user).filter(status=SuggestionStatus.PENDING_REVIEW)
            .exclude(Exists(alerts.filter(_snoozed(now))) & ~Exists(alerts.exclude(_snoozed(now))))
            .order_by("-urgent", "created_at").prefetch_related(open_alerts))


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
        evaluated_at=F("latest_evaluation__evaluated_at"),
    ).values("id", "given_name", "family_name", "medical_record_number", "n_open_alerts", "last_upload_at",
             "target_sbp", "target_dbp", "mean_sbp", "mean_dbp", "sufficient", "evaluated_at")
    rows = []
    for v in values:
        triage = triage_of(TriageInput(
            open_alerts=v["n_open_alerts"], last_upload_at=v["last_upload_at"], mean_sbp_mmhg=v["mean_sbp"],
            mean_dbp_mmhg=v["mean_dbp"], sufficient=v["sufficient"] in (True, 1, "1", "true"),
            target_sbp_mmhg=v["target_sbp"] or 135.0, target_dbp_mmhg=v["target_dbp"] or 85.0), now=now)
        patient = Patient(id=v["id"], given_name=v["given_name"], family_name=v["family_name"],
                          medical_record_number=v["medical_record_number"])
        rows.append(PatientTriageRow(patient, triage, v["n_open_alerts"], v["last_upload_at"], v["mean_sbp"], v["mean_dbp"],
                                     v["target_sbp"], v["target_dbp"], v["evaluated_at"]))
    return sorted(rows, key=lambda r: (r.triage.rank, r.patient.family_name, r.patient.given_name))
