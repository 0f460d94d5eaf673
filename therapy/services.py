"""Writes for therapy plans: create from a template, change (a new version). Clinicians of the
patient's care team only; every version is audited with its reason."""
from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.db.models import Field
from django.forms.models import model_to_dict
from django.utils import timezone

from clinops.base.audit import SYSTEM, audit_record
from clinops.base.errors import ApplicationError, clean_text
from clinops.base.tasks import enqueue_on_commit, task_named
from patients.models import Patient, User
from patients.permissions import is_in_patients_care_team
from therapy import plans
from therapy.adherence import scheduled_doses
from therapy.domain import LADDER_TEMPLATES, EscalationKind, Symptom
from therapy.models import (
    RELEASED_STATUSES,
    Alert,
    DoseLog,
    EscalationAction,
    EscalationStep,
    PlanVersion,
    ReportKind,
    Suggestion,
    SuggestionKind,
    SuggestionStatus,
    SymptomReport,
)
from therapy.selectors import plan_current, regimen_started_at

# A clinician's reason or note for a plan version or a decision (characters).
MAX_REASON_LENGTH = 2000

# The settings a plan version carries (everything but identity and bookkeeping).
PLAN_FIELDS = (
    "target_sbp_mmhg", "target_dbp_mmhg", "ladder_name", "ladder", "current_rung", "look_back_days",
    "min_usable_estimates", "min_distinct_days", "min_days_between_changes", "step_down_sbp_mmhg",
    "auto_step_up", "auto_step_down", "max_auto_rung", "max_interval_halfwidth_mmhg",
    "min_usable_window_share", "calibration_max_age_days", "exclusions", "seek_care_instructions",
    "series_days", "series_discard_first_day", "series_min_readings", "series_min_days",
    "agreement_period_days", "agreement_min_pairs", "agreement_max_bias_mmhg", "agreement_max_sd_mmhg",
)

# A patient's symptom report asks for an evaluation now (a red flag raises an alert for the care
# team): it goes to the window workers' queue, at their CPU priority, not behind the therapy
# queue's bursts of debounced evaluations and the daily run.
REPORT_EVALUATION_QUEUE = django_settings.CELERY_TASK_DEFAULT_QUEUE
# therapy.tasks.evaluate_patient, sent by name: the tasks module imports this one.
EVALUATE_PATIENT = "therapy.tasks.evaluate_patient"


def _plan_field_default(name: str) -> object:
    field = PlanVersion._meta.get_field(name)
    # PLAN_FIELDS name the plan's own columns, never a reverse relation (which has no default).
    assert isinstance(field, Field)
    return field.get_default()


def _text_limit(max_length: int | None) -> int:
    # Only asked of the text columns that declare a max_length in therapy.models.
    assert max_length is not None
    return max_length


def _require_care_team_clinician(actor: Any, patient: Patient) -> None:
    if not (isinstance(actor, User) and is_in_patients_care_team(actor, patient)):
        raise ApplicationError("Only a clinician of the patient's care team may set or change the plan.", status_code=403)


def _check(settings: dict[str, Any]) -> None:
    """The settings must make a valid ladder, rules and bounds (the domain's own checks)."""
    draft = PlanVersion(**settings)
    try:
        ladder = plans.ladder_of(draft)
        plans.rules_of(draft)
        plans.bounds_of(draft)
        plans.exclusions_of(draft)
    except (ValueError, KeyError, TypeError) as exc:
        raise ApplicationError(f"The plan is not valid: {exc}", extra={"fields": {"plan": [str(exc)]}}) from exc
    if not ladder.has(draft.current_rung):
        raise ApplicationError("The current rung is not on the ladder.",
                               extra={"fields": {"current_rung": [f"must be 0..{ladder.top}"]}})
    if draft.max_auto_rung > ladder.top:
        raise ApplicationError("The highest automatic rung is not on the ladder.",
                               extra={"fields": {"max_auto_rung": [f"must be 0..{ladder.top}"]}})


def _next_version(*, actor: Any, patient: Patient, reason: str, settings: dict[str, Any], action: str,
                  changed: list[str]) -> PlanVersion:
    reason = clean_text("reason", reason, max_length=MAX_REASON_LENGTH, required=True,
                        what="Say why the plan is set or changed.")
    settings = {**settings, "seek_care_instructions": clean_text(
        "seek_care_instructions", settings.get("seek_care_instructions", ""), max_length=2000, required=True,
        what="Say what the patient is told in a crisis.")}
    _check(settings)
    # Versions of one patient are numbered in turn: hold the patient's row while numbering (no key
    # update: the patient's windows and estimates are inserted meanwhile; see patient_therapy_evaluate).
    Patient.objects.select_for_update(no_key=True).filter(pk=patient.pk).first()
    last = PlanVersion.objects.filter(patient=patient).order_by("-version").first()
    plan = PlanVersion.objects.create(patient=patient, version=(last.version + 1) if last else 1,
                                      created_by=actor if isinstance(actor, User) else None, reason=reason, **settings)
    audit_record(actor=actor, action=action, target=plan, patient=patient,
                 detail={"version": plan.version, "reason": reason, "changed": changed})
    if actor is not SYSTEM:
        # A plan set or changed by a clinician (a new target, a decision's rung) is evaluated now,
        # not at the daily run; an automatic release is itself the evaluation's outcome.

        enqueue_on_commit(task_named(EVALUATE_PATIENT), patient.pk)
    return plan


@transaction.atomic
def plan_create(*, actor: Any, patient: Patient, template: str, reason: str, **settings: Any) -> PlanVersion:
    """A patient's first plan (or a fresh start) from a ladder template, e.g. "ace-ccb-thiazide";
    other settings default to docs/clinical-rules.md (target 135/85, nothing automatic)."""
    _require_care_team_clinician(actor, patient)
    if template not in LADDER_TEMPLATES:
        raise ApplicationError("Unknown ladder template.", extra={"fields": {"template": [f"one of {sorted(LADDER_TEMPLATES)}"]}})
    ladder = LADDER_TEMPLATES[template]
    defaults = {name: _plan_field_default(name) for name in PLAN_FIELDS}
    values = {**defaults, "ladder_name": ladder.name, "ladder": plans.ladder_to_json(ladder), "current_rung": 0, **settings}
    unknown = set(values) - set(PLAN_FIELDS)
    if unknown:
        raise ApplicationError("Unknown plan settings.", extra={"fields": {name: ["unknown"] for name in sorted(unknown)}})
    return _next_version(actor=actor, patient=patient, reason=reason, settings=values, action="plan.create",
                         changed=sorted(settings) + ["ladder"])


@transaction.atomic
def plan_change(*, actor: Any, patient: Patient, reason: str, **changes: Any) -> PlanVersion:
    """A new version of the patient's plan with `changes` applied; the old version stays as it was."""
    _require_care_team_clinician(actor, patient)
    current = PlanVersion.objects.filter(patient=patient).order_by("-version").first()
    if current is None:
        raise ApplicationError("The patient has no plan yet: create one from a template first.")
    unknown = set(changes) - set(PLAN_FIELDS)
    if unknown:
        raise ApplicationError("Unknown plan settings.", extra={"fields": {name: ["unknown"] for name in sorted(unknown)}})
    settings = {**model_to_dict(current, fields=PLAN_FIELDS), **changes}
    changed = sorted(name for name, value in changes.items() if getattr(current, name) != value)
    return _next_version(actor=actor, patient=patient, reason=reason, settings=settings, action="plan.change",
                         changed=changed)


# --- Clinician decisions and patient acknowledgement --------------------------------------------

def _pending_for_decision(*, actor: Any, suggestion_id: int):
    suggestion = Suggestion.objects.select_for_update().select_related("patient", "plan_version").get(pk=suggestion_id)
    _require_care_team_clinician(actor, suggestion.patient)
    if suggestion.status != SuggestionStatus.PENDING_REVIEW:
        raise ApplicationError(f"This suggestion is {suggestion.get_status_display().lower()}; only a pending one can be decided.",
                               status_code=409)
    return suggestion


def plan_rung_move(*, actor: Any, patient: Patient, to_rung: int, reason: str) -> PlanVersion:
    """A released or approved change reaches the patient: the plan's rung moves, as a new version
    (by the approving clinician, or by the system for an automatic release). Callers check who may."""
    current = PlanVersion.objects.filter(patient=patient).order_by("-version").first()
    # Every caller acts on a suggestion made on one of the patient's plan versions (which PROTECT keeps).
    assert current is not None
    settings = {**model_to_dict(current, fields=PLAN_FIELDS), "current_rung": to_rung}
    return _next_version(actor=actor, patient=patient, reason=reason[:MAX_REASON_LENGTH], settings=settings,
                         action="plan.rung_move", changed=["current_rung"])


def _close_alerts(*, actor: User, suggestion) -> None:
    """A decided escalation closes the alerts that pointed at it."""
    for alert in Alert.objects.select_for_update().filter(suggestion=suggestion, closed_at__isnull=True):
        alert.closed_at, alert.closed_by = timezone.now(), actor
        alert.save(update_fields=["closed_at", "closed_by", "updated_at"])
        audit_record(actor=actor, action="alert.close", target=alert, patient=suggestion.patient,
                     detail={"cause": alert.cause, "suggestion": suggestion.pk, "decision": suggestion.status})


DECISION_FIELDS = ("decided_by", "decided_at", "decision_reason")


def _decided(suggestion, *, actor: User, reason: str) -> None:
    suggestion.decided_by, suggestion.decided_at, suggestion.decision_reason = actor, timezone.now(), reason


@transaction.atomic
def suggestion_approve(*, actor: Any, suggestion_id: int, note: str = ""):
    """Approve the proposed step as it stands: it is released to the patient and the rung moves."""
    note = clean_text("note", note, max_length=MAX_REASON_LENGTH)
    suggestion = _pending_for_decision(actor=actor, suggestion_id=suggestion_id)
    if suggestion.kind == SuggestionKind.ESCALATE and suggestion.to_rung == suggestion.from_rung:
        raise ApplicationError("An escalation proposes no change to approve: modify (choose a rung) or reject it.")
    suggestion.status = SuggestionStatus.APPROVED
    _decided(suggestion, actor=actor, reason=note)
    suggestion.save(update_fields=["status", *DECISION_FIELDS, "updated_at"])
    audit_record(actor=actor, action="suggestion.approve", target=suggestion, patient=suggestion.patient,
                 detail={"to_rung": suggestion.to_rung, "note": note})
    _close_alerts(actor=actor, suggestion=suggestion)
    if suggestion.to_rung != suggestion.from_rung:
        plan_rung_move(actor=actor, patient=suggestion.patient, to_rung=suggestion.to_rung,
                       reason=f"approved suggestion {suggestion.pk}" + (f": {note}" if note else ""))
    return suggestion


@transaction.atomic
def suggestion_modify(*, actor: Any, suggestion_id: int, to_rung: int, reason: str):
    """Release another rung than proposed (at most one rung from the current one), with a reason."""
    reason = clean_text("reason", reason, max_length=MAX_REASON_LENGTH, required=True, what="Say why the step is modified.")
    suggestion = _pending_for_decision(actor=actor, suggestion_id=suggestion_id)
    ladder = plans.ladder_of(suggestion.plan_version)
    if not ladder.has(to_rung) or abs(to_rung - suggestion.from_rung) > 1:
        raise ApplicationError("Choose a rung on the ladder at most one step from the current one.",
                               extra={"fields": {"to_rung": [f"must be within 1 of {suggestion.from_rung} (0..{ladder.top})"]}})
    proposed = suggestion.to_rung
    suggestion.proposed_rung, suggestion.proposed_regimen = suggestion.to_rung, suggestion.to_regimen
    suggestion.status, suggestion.to_rung = SuggestionStatus.MODIFIED, to_rung
    suggestion.to_regimen = ladder.describe(to_rung)
    _decided(suggestion, actor=actor, reason=reason)
    suggestion.save(update_fields=["status", "to_rung", "to_regimen", "proposed_rung", "proposed_regimen",
                                   *DECISION_FIELDS, "updated_at"])
    audit_record(actor=actor, action="suggestion.modify", target=suggestion, patient=suggestion.patient,
                 detail={"proposed_rung": proposed, "to_rung": to_rung, "reason": reason})
    _close_alerts(actor=actor, suggestion=suggestion)
    if to_rung != suggestion.from_rung:
        plan_rung_move(actor=actor, patient=suggestion.patient, to_rung=to_rung,
                       reason=f"modified suggestion {suggestion.pk}: {reason}")
    return suggestion


@transaction.atomic
def suggestion_reject(*, actor: Any, suggestion_id: int, reason: str):
    """Reject the suggestion with a reason; nothing reaches the patient."""
    reason = clean_text("reason", reason, max_length=MAX_REASON_LENGTH, required=True,
                        what="Say why the suggestion is rejected.")
    suggestion = _pending_for_decision(actor=actor, suggestion_id=suggestion_id)
    suggestion.status = SuggestionStatus.REJECTED
    _decided(suggestion, actor=actor, reason=reason)
    suggestion.save(update_fields=["status", *DECISION_FIELDS, "updated_at"])
    audit_record(actor=actor, action="suggestion.reject", target=suggestion, patient=suggestion.patient,
                 detail={"reason": reason})
    _close_alerts(actor=actor, suggestion=suggestion)
    return suggestion


@transaction.atomic
def escalation_act(*, actor: Any, suggestion_id: int, step: str, note: str, to_rung: int | None = None):
    """Record what a clinician did about a pending escalation, with a note: "contacted" and
    "advised" keep it in the queue (the patient may still need to be seen); "resolved" closes it
    and its alerts, keeping the current rung or moving one rung (`to_rung`) as a modified decision.
    Returns the escalation."""
    note = clean_text("note", note, max_length=MAX_REASON_LENGTH, required=True, what="Say what was said or done.")
    if step not in EscalationStep.values:
        raise ApplicationError("Choose what was done.",
                               extra={"fields": {"step": [f"one of: {', '.join(EscalationStep.values)}"]}})
    suggestion = _pending_for_decision(actor=actor, suggestion_id=suggestion_id)
    if suggestion.kind != SuggestionKind.ESCALATE:
        raise ApplicationError("Only an escalation is contacted, advised or resolved; decide a step instead.",
                               status_code=409)
    if step == EscalationStep.RESOLVED:
        suggestion = suggestion_modify(actor=actor, suggestion_id=suggestion_id,
                                       to_rung=suggestion.from_rung if to_rung is None else to_rung, reason=note)
    EscalationAction.objects.create(suggestion=suggestion, step=step, note=note, by=actor)
    audit_record(actor=actor, action=f"escalation.{step}", target=suggestion, patient=suggestion.patient,
                 detail={"note": note})
    return suggestion


@transaction.atomic
def suggestion_acknowledge(*, actor: Any, suggestion_id: int):
    """The patient confirms they have seen a released change (their own only)."""
    suggestion = Suggestion.objects.select_for_update().select_related("patient").get(pk=suggestion_id)
    if not (isinstance(actor, User) and suggestion.patient.user_id == actor.pk):
        raise ApplicationError("Only the patient acknowledges their own change.", status_code=403)
    if suggestion.status == SuggestionStatus.ACKNOWLEDGED:
        return suggestion
    if suggestion.status not in RELEASED_STATUSES or suggestion.to_rung == suggestion.from_rung:
        raise ApplicationError("Only a released change can be acknowledged.", status_code=409)
    previous = suggestion.status
    suggestion.status = SuggestionStatus.ACKNOWLEDGED
    suggestion.save(update_fields=["status", "updated_at"])
    audit_record(actor=actor, action="suggestion.acknowledge", target=suggestion, patient=suggestion.patient,
                 detail={"was": previous})
    return suggestion


# --- What the patient reports: doses taken, symptoms and side effects ---------------------------

# Doses can be logged late (a missed reminder), but not for weeks back: memory fades.
DOSE_LOG_MAX_AGE_DAYS = 14


def _require_patient_or_care_team(actor: Any, patient: Patient) -> None:
    if not (isinstance(actor, User) and (patient.user_id == actor.pk or is_in_patients_care_team(actor, patient))):
        raise ApplicationError("Only the patient or their care team may report for this patient.", status_code=403)


@transaction.atomic
def dose_log_record(*, actor: Any, patient: Patient, day: dt.date, drug: str, slot: int, taken: bool,
                    now: dt.datetime | None = None):
    """Log one scheduled dose of the current regimen (drug, day, intake slot 1..3) as taken or
    missed. Returns (log, created). The first answer stands: the same answer again is accepted and
    changes nothing, a contradicting one is refused (409)."""
    _require_patient_or_care_team(actor, patient)
    Patient.objects.select_for_update(no_key=True).filter(pk=patient.pk).first()
    plan = plan_current(patient)
    if plan is None:
        raise ApplicationError("There is no plan yet, so no scheduled dose to log.", status_code=409)
    today = timezone.localdate(now or timezone.now())
    since = timezone.localdate(regimen_started_at(patient))
    if day > today:
        raise ApplicationError("A dose cannot be logged for a future day.", extra={"fields": {"day": ["in the future"]}})
    if day < max(since, today - dt.timedelta(days=DOSE_LOG_MAX_AGE_DAYS)):
        raise ApplicationError("That day is before the current regimen or too long ago to log.",
                               extra={"fields": {"day": [f"must be from {max(since, today - dt.timedelta(days=DOSE_LOG_MAX_AGE_DAYS))} to {today}"]}})
    due = scheduled_doses(plans.ladder_of(plan).rungs[plan.current_rung], day)
    match = next((d for d in due if d.drug.lower() == drug.strip().lower() and d.slot == slot), None)
    if match is None:
        choices = "; ".join(f"{d.drug} slot {d.slot}" for d in due)
        raise ApplicationError("That is not a scheduled dose of the current regimen.",
                               extra={"fields": {"drug": [f"scheduled that day: {choices}"]}})
    existing = DoseLog.objects.filter(patient=patient, day=day, drug=match.drug, slot=slot).first()
    if existing is not None:
        if existing.taken != taken:
            raise ApplicationError(f"This dose is already logged as {'taken' if existing.taken else 'missed'}.",
                                   status_code=409)
        return existing, False
    entry = DoseLog.objects.create(patient=patient, day=day, drug=match.drug, dose_mg=match.dose_mg, slot=slot,
                                   taken=taken, logged_by=actor)
    audit_record(actor=actor, action="dose.log", target=entry, patient=patient,
                 detail={"day": day.isoformat(), "drug": match.drug, "slot": slot, "taken": taken})
    return entry, True


@transaction.atomic
def symptom_report_record(*, actor: Any, patient: Patient, kind: str, symptom: str = "", drug: str = "",
                          detail: str = ""):
    """Store a symptom (from the list; "other symptom" needs a description) or a side effect (a
    description, optionally the drug). The patient is evaluated at once after the commit: a red
    flag, a low-pressure symptom or a side effect becomes an urgent item for the care team."""
    _require_patient_or_care_team(actor, patient)
    detail = clean_text("detail", detail, max_length=_text_limit(SymptomReport._meta.get_field("detail").max_length))
    drug = clean_text("drug", drug, max_length=_text_limit(SymptomReport._meta.get_field("drug").max_length))
    if kind == ReportKind.SYMPTOM:
        if symptom not in {s.value for s in Symptom}:
            raise ApplicationError("Choose a symptom from the list.",
                                   extra={"fields": {"symptom": [f"one of: {', '.join(s.value for s in Symptom)}"]}})
        if symptom == Symptom.OTHER and not detail:
            raise ApplicationError("Describe the symptom.", extra={"fields": {"detail": ["required for 'other symptom'"]}})
        drug = ""
    elif kind == ReportKind.SIDE_EFFECT:
        if not detail:
            raise ApplicationError("Describe the side effect.", extra={"fields": {"detail": ["required"]}})
        symptom = ""
    else:
        raise ApplicationError("Say whether this is a symptom or a side effect.",
                               extra={"fields": {"kind": [f"one of: {', '.join(ReportKind.values)}"]}})
    report = SymptomReport.objects.create(patient=patient, kind=kind, symptom=symptom, drug=drug, detail=detail,
                                          reported_by=actor)
    audit_record(actor=actor, action="symptom.report", target=report, patient=patient,
                 detail={"kind": kind, "symptom": symptom})
    enqueue_on_commit(task_named(EVALUATE_PATIENT), patient.pk, queue=REPORT_EVALUATION_QUEUE)
    return report


# Snoozing an alert is for "known, handled, check again later" — never longer than a week.
MAX_SNOOZE_DAYS = 7


@transaction.atomic
def alert_snooze(*, actor: Any, alert_id: int, reason: str, days: float, now: dt.datetime | None = None):
    """Take an open alert out of the queue and the counter for `days` (0 < days <= 7), with a
    reason (care team only). It comes back when the time is up, or at once if the patient worsens."""
    alert = Alert.objects.select_for_update().select_related("patient").get(pk=alert_id)
    _require_care_team_clinician(actor, alert.patient)
    if alert.closed_at is not None:
        raise ApplicationError("This alert is closed already.", status_code=409)
    if alert.seek_care:
        # The patient is being told to seek care now: the care team must not lose sight of that.
        raise ApplicationError("The patient is told to seek care now, so this alert stays in the queue until the "
                               "escalation is resolved; record contact or advice meanwhile.", status_code=409)
    if alert.cause == EscalationKind.EVALUATION_FAILING.value:
        # No dose step can be proposed for this patient until it is fixed: that stays in sight.
        raise ApplicationError("A failing evaluation stays in the queue until it is fixed and the item resolved.",
                               status_code=409)
    reason = clean_text("reason", reason, max_length=_text_limit(Alert._meta.get_field("snooze_reason").max_length),
                        required=True, what="Say why the alert is snoozed.")
    if not 0 < days <= MAX_SNOOZE_DAYS:
        raise ApplicationError(f"An alert can be snoozed for at most {MAX_SNOOZE_DAYS} days.",
                               extra={"fields": {"days": [f"must be more than 0 and at most {MAX_SNOOZE_DAYS}"]}})
    alert.snoozed_until = (now or timezone.now()) + dt.timedelta(days=days)
    alert.snooze_reason, alert.snoozed_by = reason, actor
    alert.save(update_fields=["snoozed_until", "snooze_reason", "snoozed_by", "updated_at"])
    audit_record(actor=actor, action="alert.snooze", target=alert, patient=alert.patient,
                 detail={"until": alert.snoozed_until.isoformat(), "reason": alert.snooze_reason})
    return alert
