"""Evaluating a patient's therapy: gather the evidence from the database, apply the pure rules
(titration, escalation, routing) and store the suggestion with its routing decision."""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

import structlog
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Count, Q

from clinops.base import metrics
from clinops.base.audit import SYSTEM, audit_record
from monitoring.bp.mean_interval import MeanErrorModel
from monitoring.bp.mean_interval import from_metrics as mean_error_model_of
from monitoring.health.model_health import autonomy_suspensions_in_force
from monitoring.models import (
    AlertSeverity,
    BPEstimate,
    BPModelVersion,
    Calibration,
    EstimateDayTotals,
    OperatorAlert,
    SignalWindow,
    WindowStatus,
)
from patients.models import Patient
from therapy import plans
from therapy.domain import (
    Escalation,
    EscalationKind,
    EstimateDay,
    EstimateEvidence,
    EvidenceSummary,
    PatientState,
    ProposalKind,
)
from therapy.escalation import CRISIS_DBP_MMHG, CRISIS_SBP_MMHG, LOW_SBP_MMHG, check_escalation
from therapy.evidence import CLOCK_TOLERANCE
from therapy.models import Alert, LatestEvaluation, PlanVersion, Suggestion, SuggestionKind, SuggestionStatus
from therapy.routing import route
from therapy.selectors import (
    adherence_of,
    cuff_readings_between,
    plan_current,
    regimen_started_at,
    reports_since,
    wearable_agreement_of,
)
from therapy.services import plan_rung_move
from therapy.titration import propose_step

log = structlog.get_logger(__name__)

# Names the rules a suggestion was routed by; bump when titration/routing/escalation change.
POLICY_VERSION = "therapy-policy-4"
# A clinician has answered these; their escalations are not raised again.
DECIDED = (SuggestionStatus.APPROVED, SuggestionStatus.MODIFIED, SuggestionStatus.REJECTED, SuggestionStatus.ACKNOWLEDGED)


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc)


def _quiet_days(patient: Patient, start: dt.datetime, now: dt.datetime) -> tuple[list[EstimateDay], list[str]]:
    """The whole UTC days strictly inside (start, now) whose day totals hold no crisis- or low-level
    estimate, as EstimateDay, and their model versions. Every other estimate of the look-back (the
    part-days at both ends, a day with an alarming reading, a day without totals) is read one by one."""
    first, last = start.astimezone(dt.timezone.utc).date() + dt.timedelta(days=1), now.astimezone(dt.timezone.utc).date()
    rows = list(EstimateDayTotals.objects.filter(patient=patient, day__gte=first, day__lt=last).values(
        "day", "n", "sum_sbp_mmhg", "sum_dbp_mmhg", "sum_sq_sbp_mmhg2", "sum_sq_dbp_mmhg2", "min_sbp_mmhg",
        "max_sbp_mmhg", "min_dbp_mmhg", "max_dbp_mmhg", "sum_sbp_halfwidth_mmhg", "sum_dbp_halfwidth_mmhg",
        "min_interval_level", "n_flagged", "flags", "first_at", "last_at", "model_version__version"))
    # Written as "not quiet" so a value that is not a number makes its day read one by one.
    loud = {r["day"] for r in rows if not (r["min_sbp_mmhg"] >= LOW_SBP_MMHG and r["max_sbp_mmhg"] < CRISIS_SBP_MMHG
                                          and r["max_dbp_mmhg"] < CRISIS_DBP_MMHG)}
    days = [_estimate_day(r) for r in rows if r["day"] not in loud]
    return days, sorted({d.model_version for d in days})


def _estimate_day(row: Mapping[str, Any]) -> EstimateDay:
    values: dict[str, Any] = {k: v for k, v in row.items() if k not in ("flags", "model_version__version")}
    return EstimateDay(**values, flags=tuple(row["flags"] or ()), model_version=row["model_version__version"])


def _evidence(patient: Patient, plan: PlanVersion, now: dt.datetime
              ) -> tuple[list[EstimateEvidence], list[EstimateDay], list[str]]:
    """The look-back's live estimates: whole quiet days as their totals, the rest one by one (up to
    a few minutes ahead of `now`: a device clock running fast must not hide a crisis from the
    checks); and the model versions of them all."""
    start = now - dt.timedelta(days=plan.look_back_days)
    days, day_versions = _quiet_days(patient, start, now)
    summed = Q()
    for day in {d.day for d in days}:
        summed |= Q(recorded_at__gte=_utc_midnight(day), recorded_at__lt=_utc_midnight(day + dt.timedelta(days=1)))
    evidence, versions = _estimates_between(patient, start, now + CLOCK_TOLERANCE, excluding=summed, after=True)
    return evidence, days, sorted({*versions, *day_versions})


def _estimate_ids_between(patient: Patient, start: dt.datetime, now: dt.datetime) -> list[int]:
    """Every live estimate of the look-back (start, now], summed or not: what a suggestion rests on."""
    return list(BPEstimate.objects.filter(patient=patient, shadow=False, recorded_at__gt=start, recorded_at__lte=now)
                .order_by("recorded_at").values_list("pk", flat=True))


def _estimates_between(patient: Patient, since: dt.datetime, now: dt.datetime, *, excluding: Q | None = None,
                       after: bool = False) -> tuple[list[EstimateEvidence], list[str]]:
    """The patient's live estimates recorded in [since, now] ((since, now] when `after`), as
    evidence, and their model versions; none matching `excluding`."""
    # Plain values, not model rows joined to their model version: a version row carries its
    # metrics and artifact, and decoding those once per estimate made every evaluation slow.
    rows = BPEstimate.objects.filter(patient=patient, shadow=False, recorded_at__lte=now,
                                     **({"recorded_at__gt": since} if after else {"recorded_at__gte": since}))
    if excluding:
        rows = rows.exclude(excluding)
    values = (rows.order_by("recorded_at")
              .values_list("pk", "recorded_at", "sbp_mmhg", "dbp_mmhg", "sbp_low_mmhg", "sbp_high_mmhg", "dbp_low_mmhg",
                           "dbp_high_mmhg", "interval_level", "flags", "model_version__version"))
    evidence: list[EstimateEvidence] = []
    versions: set[str] = set()
    for pk, recorded_at, sbp, dbp, sbp_low, sbp_high, dbp_low, dbp_high, level, flags, version in values:
        evidence.append(EstimateEvidence(
            recorded_at=recorded_at, sbp_mmhg=sbp, dbp_mmhg=dbp, sbp_halfwidth_mmhg=(sbp_high - sbp_low) / 2,
            dbp_halfwidth_mmhg=(dbp_high - dbp_low) / 2, interval_level=level, flags=tuple(flags), estimate_id=pk,
        ))
        versions.add(version)
    return evidence, sorted(versions)


def _mean_error_model(model_versions: list[str]) -> MeanErrorModel | None:
    """The mean-interval model of the one model version behind the estimates (None when they come
    from several, or it has none: the interval of the mean is then taken as one window's)."""
    if len(model_versions) != 1:
        return None
    metrics = BPModelVersion.objects.filter(version=model_versions[0]).values_list("metrics", flat=True).first()
    return mean_error_model_of(metrics or {})


def _usable_window_share(patient: Patient, plan: PlanVersion, now: dt.datetime) -> float | None:
    counts = SignalWindow.objects.filter(
        patient=patient, recorded_at__gte=now - dt.timedelta(days=plan.look_back_days), recorded_at__lte=now,
    ).aggregate(usable=Count("id", filter=Q(status=WindowStatus.PROCESSED)),
                judged=Count("id", filter=Q(status__in=[WindowStatus.PROCESSED, WindowStatus.REJECTED])))
    return counts["usable"] / counts["judged"] if counts["judged"] else None


def _handled_sources(patient: Patient) -> dict[str, set[str]]:
    """What raised escalations a clinician has already decided, by kind: an escalation sharing a
    source with one of these is the same episode and is not raised again."""
    handled: dict[str, set[str]] = {}
    decided = Suggestion.objects.filter(patient=patient, kind=SuggestionKind.ESCALATE, status__in=DECIDED)
    for escalations in decided.values_list("escalations", flat=True):
        for item in escalations:
            handled.setdefault(item["kind"], set()).update(item.get("sources", ()))
    return handled


def _is_new_episode(escalation: Escalation, handled: dict[str, set[str]]) -> bool:
    return not (escalation.sources & handled.get(escalation.kind.value, set()))


def _record_outcome(*, patient: Patient, plan: PlanVersion, now: dt.datetime, outcome: str, reasons: list[str],
                    evidence: dict, suggestion: Suggestion | None) -> None:
    LatestEvaluation.objects.update_or_create(patient=patient, defaults={
        "evaluated_at": now, "plan_version": plan, "outcome": outcome, "reasons": reasons, "evidence": evidence,
        "suggestion": suggestion, "policy_version": POLICY_VERSION,
    })


def _raise_alerts(suggestion: Suggestion, escalations: list[Escalation], plan: PlanVersion) -> None:
    """One open alert per patient and cause: a new episode updates the open one (and points it at
    the newest suggestion); the patient sees the plan's seek-care instructions when they must."""
    patient = suggestion.patient
    # A new urgent question means the patient worsened: every snoozed alert comes back now.
    snoozed = Alert.objects.filter(patient=patient, closed_at__isnull=True, snoozed_until__gt=suggestion.created_at)
    for alert in snoozed if escalations else ():
        alert.snoozed_until = None
        alert.save(update_fields=["snoozed_until", "updated_at"])
        audit_record(actor=SYSTEM, action="alert.unsnooze", target=alert, patient=patient,
                     detail={"reason": "the patient worsened", "suggestion": suggestion.pk})
    Alert.objects.filter(patient=patient, closed_at__isnull=True).update(suggestion=suggestion, updated_at=suggestion.created_at)
    for item in escalations:
        values = {"message": item.reason, "seek_care": item.seek_care, "suggestion": suggestion,
                  "patient_message": plan.seek_care_instructions if item.seek_care else ""}
        alert, created = Alert.objects.get_or_create(patient=patient, cause=item.kind.value, closed_at=None, defaults=values)
        if not created:
            for name, value in values.items():
                setattr(alert, name, value)
            alert.seek_care = alert.seek_care or item.seek_care
            alert.save()
        if created:
            audit_record(actor=SYSTEM, action="alert.raise", target=alert, patient=patient,
                         detail={"cause": alert.cause, "seek_care": alert.seek_care, "suggestion": suggestion.pk})
            metrics.count_escalation_raised(cause=alert.cause)
        log.warning("therapy.alert", patient_id=patient.pk, cause=alert.cause, seek_care=alert.seek_care,
                    alert_id=alert.pk, suggestion_id=suggestion.pk)


def patient_therapy_evaluate(*, patient_id: int, now: dt.datetime) -> Suggestion | None:
    """Propose and route a step for one patient; if that fails for any reason but a lost database
    connection (which the task retries), the escalation checks still run on their own minimal path
    and the failure itself becomes an urgent item for the care team and a critical operator alert:
    no broken plan field or rule may silence a red flag, a crisis or a low reading.
    Returns the suggestion stored, the pending one, or None for a hold."""
    try:
        suggestion = _titrate_and_route(patient_id=patient_id, now=now)
    except (OperationalError, InterfaceError):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever broke, the patient's safety checks still run
        log.exception("therapy.evaluation_failed", patient_id=patient_id)
        metrics.count_therapy_evaluation(failed=True)
        return _escalate_despite_failure(patient_id=patient_id, now=now, failure=f"{exc.__class__.__name__}: {exc}")
    OperatorAlert.objects.filter(signal=EVALUATION_FAILING_SIGNAL, scope=f"patient:{patient_id}",
                                 resolved_at__isnull=True).update(resolved_at=now)
    metrics.count_therapy_evaluation(failed=False)
    return suggestion


# The escalation checks' own look-back when the plan cannot be read (days): the default plan's.
SAFETY_LOOK_BACK_DAYS = 7.0
EVALUATION_FAILING_SIGNAL = "therapy.evaluation_failing"


def _escalate_despite_failure(*, patient_id: int, now: dt.datetime, failure: str) -> Suggestion | None:
    """The minimal path: the patient's estimates, cuff readings and reports of the last week through
    the escalation rules alone (nothing of the plan but its id, its rung and its seek-care words),
    stored as one urgent item that also says the evaluation is failing, with the alerts the patient
    and the team must see, and a critical operator alert."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update(no_key=True).filter(pk=patient_id).first()
        if patient is None:
            return None
        plan = plan_current(patient)
        if plan is None:
            return None
        since = now - dt.timedelta(days=SAFETY_LOOK_BACK_DAYS)
        readings = [*_estimates_between(patient, since, now + CLOCK_TOLERANCE)[0],
                    *(EstimateEvidence.from_cuff(r) for r in cuff_readings_between(patient, since=since,
                                                                                   until=now + CLOCK_TOLERANCE))]
        handled = _handled_sources(patient)
        handled_reports = set().union(*handled.values())
        symptoms, side_effects = reports_since(patient, since)
        symptoms = [s for s in symptoms if f"report:{s.report_id}" not in handled_reports]
        found = [e for e in check_escalation(readings, symptoms, side_effects, now=now,
                                             look_back_days=SAFETY_LOOK_BACK_DAYS) if _is_new_episode(e, handled)]
        failing = Escalation(kind=EscalationKind.EVALUATION_FAILING, at=now, plan_version_ids=(plan.pk,),
                             reason=f"evaluation failing for this patient ({failure[:300]}): no dose step can be "
                                    "proposed until it is fixed; the escalation checks ran on their own")
        if not found and not _is_new_episode(failing, handled):
            # A clinician has seen this plan version fail and nothing new is urgent: the failure stays
            # on the patient's latest evaluation and the operator alert, not as a fresh item each run.
            suggestion = None
        else:
            suggestion = _store_urgent_item(patient=patient, plan=plan, found=found, failing=failing)
        _record_outcome(patient=patient, plan=plan, now=now, outcome="failed", reasons=[failing.reason],
                        evidence={"source": "none", "failure": failure[:1000]}, suggestion=suggestion)
        alert, created = OperatorAlert.objects.get_or_create(
            signal=EVALUATION_FAILING_SIGNAL, scope=f"patient:{patient_id}", resolved_at=None,
            defaults={"severity": AlertSeverity.CRITICAL, "last_seen_at": now,
                      "message": f"therapy evaluation failing for patient {patient_id}: {failure[:500]}"})
        if not created:
            alert.last_seen_at = now
            alert.save(update_fields=["last_seen_at"])
        log.error("therapy.evaluation_failing", patient_id=patient_id, operator_alert_id=alert.pk,
                  suggestion_id=suggestion.pk if suggestion else None, escalations=[e.kind.value for e in found])
        return suggestion


def _store_urgent_item(*, patient: Patient, plan: PlanVersion, found: list[Escalation], failing: Escalation) -> Suggestion:
    """One urgent escalation item carrying what the checks found and the failure, with its alerts
    (or the pending item that already asks exactly this)."""
    escalations = [*found, failing]
    rows = [{"kind": e.kind.value, "reason": e.reason, "seek_care": e.seek_care, "sources": sorted(e.sources)}
                for e in escalations]
    pending = Suggestion.objects.filter(patient=patient, status=SuggestionStatus.PENDING_REVIEW).first()
    if pending is not None and _same_question(pending, SuggestionKind.ESCALATE, plan.current_rung, rows):
        return pending
    regimen = _regimen_or_unreadable(plan)
    suggestion = Suggestion(
        patient=patient, plan_version=plan, kind=SuggestionKind.ESCALATE, from_rung=plan.current_rung,
        to_rung=plan.current_rung, from_regimen=regimen, to_regimen=regimen, evidence={"source": "none"},
        estimate_ids=sorted({i for e in found for i in e.estimate_ids}), model_versions=[],
        policy_version=POLICY_VERSION, auto_release=False, routing_reasons=[e.reason for e in escalations],
        proposal_reasons=[failing.reason], escalations=rows, urgent=True, status=SuggestionStatus.PENDING_REVIEW)
    _save_superseding(suggestion, pending)
    audit_record(actor=SYSTEM, action="suggestion.pending_review", target=suggestion, patient=patient,
                 detail={"kind": SuggestionKind.ESCALATE, "reasons": suggestion.routing_reasons,
                         "policy_version": POLICY_VERSION, "evaluation_failed": True})
    _raise_alerts(suggestion, escalations, plan)
    return suggestion


def _save_superseding(suggestion: Suggestion, pending: Suggestion | None) -> None:
    """Store a new suggestion; the undecided one it replaces says so (one pending per patient)."""
    if pending is not None:
        pending.status = SuggestionStatus.SUPERSEDED
        pending.save(update_fields=["status", "updated_at"])
    suggestion.save()
    if pending is not None:
        pending.superseded_by = suggestion
        pending.save(update_fields=["superseded_by", "updated_at"])
        audit_record(actor=SYSTEM, action="suggestion.supersede", target=pending, patient=suggestion.patient,
                     detail={"superseded_by": suggestion.pk})


def _regimen_or_unreadable(plan: PlanVersion) -> str:
    try:
        return plans.ladder_of(plan).describe(plan.current_rung)[:255]
    except Exception:  # noqa: BLE001 - the ladder may be what is broken
        return "regimen unreadable: the plan could not be evaluated"


def _titrate_and_route(*, patient_id: int, now: dt.datetime) -> Suggestion | None:
    """Propose and route a step for one patient. Returns the suggestion it stored (or the pending
    one it already had), or None for a hold (recorded with its reasons in LatestEvaluation). Two
    workers evaluating the same patient at once take turns on the patient's row, so they make one
    suggestion, not two. The row is held FOR NO KEY UPDATE: that still serializes evaluations, but
    does not block the inserts of the patient's windows and estimates (a foreign key takes FOR KEY
    SHARE on the row, which FOR UPDATE would make wait for the whole evaluation)."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update(no_key=True).filter(pk=patient_id).first()
        if patient is None:
            return None
        plan = plan_current(patient)
        if plan is None:
            return None
        evidence, estimate_days, model_versions = _evidence(patient, plan, now)
        calibration = Calibration.objects.filter(patient=patient, calibrated_at__lte=now).order_by("-calibrated_at").first()
        handled = _handled_sources(patient)
        symptoms, side_effects = reports_since(patient, now - dt.timedelta(days=plan.look_back_days))
        # A report a clinician has already decided on does not drive another step or alert.
        handled_reports = set().union(*handled.values())
        symptoms = [s for s in symptoms if f"report:{s.report_id}" not in handled_reports]
        adherence = adherence_of(patient, plan, now=now)
        # The cuff readings of the series and of the look-back (crisis and low checks), whichever is longer.
        cuff_days = max(plan.look_back_days, float(plan.series_days))
        cuff = cuff_readings_between(patient, since=now - dt.timedelta(days=cuff_days), until=now + CLOCK_TOLERANCE)
        cuff_as_readings = [EstimateEvidence.from_cuff(r) for r in cuff]
        agreement = wearable_agreement_of(patient, plan, now=now)
        # The plan's start counts as a change: a regimen the patient was just put on has not had
        # the minimum interval to work either, so the first step waits as any other would.
        state = PatientState(current_rung=plan.current_rung, last_change_at=regimen_started_at(patient),
                             adherence_share=adherence.share, exclusions=frozenset(plans.exclusions_of(plan)),
                             symptoms=tuple(symptoms), side_effects=tuple(side_effects))
        proposal = propose_step(plans.rules_of(plan), plans.ladder_of(plan), state, evidence, now=now,
                                usable_window_share=_usable_window_share(patient, plan, now), cuff_readings=cuff,
                                agreement=agreement, error_model=_mean_error_model(model_versions),
                                estimate_days=estimate_days)
        escalations = [e for e in check_escalation([*evidence, *cuff_as_readings], state.symptoms, state.side_effects,
                                                   now=now, look_back_days=plan.look_back_days)
                       if _is_new_episode(e, handled)]
        calibration_age_days = (now - calibration.calibrated_at).total_seconds() / 86400 if calibration else None
        suspended = [f"{s.model_version.version}: {s.reason}" for s in autonomy_suspensions_in_force(model_versions)]
        decision = route(
            proposal, plans.bounds_of(plan), estimates=[*evidence, *cuff_as_readings],
            calibration_age_days=calibration_age_days,
            adherence=state.adherence_share, exclusions=state.exclusions, escalations=escalations, now=now,
            suspensions=suspended,
        )
        # The ids of the estimates are the suggestion's own field, read in full only for a suggestion.
        summary = _jsonable({**{k: v for k, v in dataclasses.asdict(proposal.evidence).items() if k != "estimate_ids"},
                             "adherence": dataclasses.asdict(adherence), "adherence_text": adherence.describe(),
                             "calibration_age_days": calibration_age_days})
        if proposal.kind is ProposalKind.HOLD and not escalations:
            log.info("therapy.hold", patient_id=patient_id, reasons=list(decision.reasons))
            _record_outcome(patient=patient, plan=plan, now=now, outcome="hold", reasons=list(decision.reasons),
                            evidence=summary, suggestion=None)
            return None
        # Anything urgent makes the item an escalation for a clinician, whatever step was proposed.
        urgent = proposal.kind in (ProposalKind.HOLD, ProposalKind.ESCALATE) or bool(escalations)
        kind = SuggestionKind.ESCALATE if urgent else SuggestionKind(proposal.kind.value)
        escalation_rows = [{"kind": e.kind.value, "reason": e.reason, "seek_care": e.seek_care,
                            "sources": sorted(e.sources)} for e in escalations]
        pending = Suggestion.objects.filter(patient=patient, status=SuggestionStatus.PENDING_REVIEW).first()
        if pending is not None and _same_question(pending, kind, proposal.to_rung, escalation_rows):
            _record_outcome(patient=patient, plan=plan, now=now, outcome=pending.status, reasons=pending.routing_reasons,
                            evidence=pending.evidence, suggestion=pending)
            return pending  # the same question is already waiting for a clinician
        suggestion = Suggestion(
            patient=patient, plan_version=plan, kind=kind, from_rung=proposal.from_rung, to_rung=proposal.to_rung,
            from_regimen=proposal.from_regimen, to_regimen=proposal.to_regimen,
            evidence=summary, estimate_ids=_estimate_ids_of(proposal.evidence, patient, plan, now),
            model_versions=model_versions, policy_version=POLICY_VERSION,
            auto_release=decision.auto_release and kind != SuggestionKind.ESCALATE,
            routing_reasons=list(decision.reasons), proposal_reasons=list(proposal.reasons),
            escalations=escalation_rows, urgent=bool(escalations),
        )
        suggestion.status = SuggestionStatus.AUTO_RELEASED if suggestion.auto_release else SuggestionStatus.PENDING_REVIEW
        _save_superseding(suggestion, pending)
        audit_record(actor=SYSTEM, action=f"suggestion.{suggestion.status}", target=suggestion, patient=patient,
                     detail={"kind": kind, "from_rung": proposal.from_rung, "to_rung": proposal.to_rung,
                             "reasons": list(decision.reasons), "policy_version": POLICY_VERSION})
        if escalations or pending is not None:
            _raise_alerts(suggestion, escalations, plan)
        if suggestion.auto_release:
            plan_rung_move(actor=SYSTEM, patient=patient, to_rung=suggestion.to_rung,
                           reason=f"automatic release of suggestion {suggestion.pk}")
        _record_outcome(patient=patient, plan=plan, now=now, outcome=suggestion.status, reasons=list(decision.reasons),
                        evidence=summary, suggestion=suggestion)
        return suggestion


def _estimate_ids_of(evidence: EvidenceSummary, patient: Patient, plan: PlanVersion, now: dt.datetime) -> list[int]:
    if not evidence.summed_days:
        return list(evidence.estimate_ids)
    return _estimate_ids_between(patient, now - dt.timedelta(days=plan.look_back_days), now)


def _same_question(pending: Suggestion, kind: str, to_rung: int, escalations: list[dict]) -> bool:
    """The pending suggestion already asks this: same step and no escalation it does not carry."""
    carried = {(e["kind"], source) for e in pending.escalations for source in e.get("sources", ())}
    new = {(e["kind"], source) for e in escalations for source in e["sources"]}
    return (pending.kind, pending.to_rung) == (kind, to_rung) and new <= carried


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value
