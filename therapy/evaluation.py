"""Evaluating a patient's therapy: gather the evidence from the database, apply the pure rules
(titration, escalation, routing) and store the suggestion with its routing decision."""
from __future__ import annotations

import dataclasses
import datetime as dt

import structlog
from django.db import transaction
from django.db.models import Count, Q

from clinops.audit import SYSTEM, audit_record
from monitoring.model_health import autonomy_suspensions_in_force
from monitoring.bp_mean_interval import MeanErrorModel
from monitoring.bp_mean_interval import from_metrics as mean_error_model_of
from monitoring.models import BPEstimate, BPModelVersion, Calibration, SignalWindow, WindowStatus
from patients.models import Patient
from therapy import plans
from therapy.domain import Escalation, EstimateEvidence, PatientState, ProposalKind
from therapy.escalation import check_escalation
from therapy.evidence import CLOCK_TOLERANCE
from therapy.models import Alert, LatestEvaluation, PlanVersion, Suggestion, SuggestionKind, SuggestionStatus
from therapy.routing import route
from therapy.selectors import (adherence_of, cuff_readings_between, last_rung_change, plan_current, reports_since,
                               wearable_agreement_of)
from therapy.services import plan_rung_move
from therapy.titration import propose_step

log = structlog.get_logger(__name__)

# Names the rules a suggestion was routed by; bump when titration/routing/escalation change.
POLICY_VERSION = "therapy-policy-4"
# A clinician has answered these; their escalations are not raised again.
DECIDED = (SuggestionStatus.APPROVED, SuggestionStatus.MODIFIED, SuggestionStatus.REJECTED, SuggestionStatus.ACKNOWLEDGED)


def _evidence(patient: Patient, plan: PlanVersion, now: dt.datetime) -> tuple[list[EstimateEvidence], list[str]]:
    since = now - dt.timedelta(days=plan.look_back_days)
    # Plain values, not model rows joined to their model version: a version row carries its
    # metrics and artifact, and decoding those once per estimate made every evaluation slow.
    rows = (BPEstimate.objects.filter(patient=patient, shadow=False, recorded_at__gte=since, recorded_at__lte=now)
            .order_by("recorded_at")
            .values_list("pk", "recorded_at", "sbp_mmhg", "dbp_mmhg", "sbp_low_mmhg", "sbp_high_mmhg", "dbp_low_mmhg",
                         "dbp_high_mmhg", "interval_level", "flags", "model_version__version"))
    evidence, versions = [], set()
    for pk, recorded_at, sbp, dbp, sbp_low, sbp_high, dbp_low, dbp_high, level, flags, version in rows:
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
        log.warning("therapy.alert", patient_id=patient.pk, cause=alert.cause, seek_care=alert.seek_care,
                    alert_id=alert.pk, suggestion_id=suggestion.pk)


def patient_therapy_evaluate(*, patient_id: int, now: dt.datetime) -> Suggestion | None:
    """Propose and route a step for one patient. Returns the suggestion it stored (or the pending
    one it already had), or None for a hold (recorded with its reasons in LatestEvaluation). Two
    workers evaluating the same patient at once take turns on the patient's row, so they make one
    suggestion, not two. The row is held FOR NO KEY UPDATE: that still serializes evaluations, but
    does not block the inserts of the patient's windows and estimates (a foreign key takes FOR KEY
    SHARE on the row, which FOR UPDATE would make wait for the whole evaluation)."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update(no_key=True).filter(pk=patient_id).first()
        plan = plan_current(patient) if patient else None
        if plan is None:
            return None
        evidence, model_versions = _evidence(patient, plan, now)
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
        state = PatientState(current_rung=plan.current_rung, last_change_at=last_rung_change(patient),
                             adherence_share=adherence.share, exclusions=frozenset(plans.exclusions_of(plan)),
                             symptoms=tuple(symptoms), side_effects=tuple(side_effects))
        proposal = propose_step(plans.rules_of(plan), plans.ladder_of(plan), state, evidence, now=now,
                                usable_window_share=_usable_window_share(patient, plan, now), cuff_readings=cuff,
                                agreement=agreement, error_model=_mean_error_model(model_versions))
        escalations = [e for e in check_escalation([*evidence, *cuff_as_readings], state.symptoms, state.side_effects,
                                                   now=now + CLOCK_TOLERANCE, look_back_days=plan.look_back_days)
                       if _is_new_episode(e, handled)]
        calibration_age_days = (now - calibration.calibrated_at).total_seconds() / 86400 if calibration else None
        suspended = [f"{s.model_version.version}: {s.reason}" for s in autonomy_suspensions_in_force(model_versions)]
        decision = route(
            proposal, plans.bounds_of(plan), estimates=[*evidence, *cuff_as_readings],
            calibration_age_days=calibration_age_days,
            adherence=state.adherence_share, exclusions=state.exclusions, escalations=escalations, now=now,
            suspensions=suspended,
        )
        summary = _jsonable({**dataclasses.asdict(proposal.evidence), "adherence": dataclasses.asdict(adherence),
                             "adherence_text": adherence.describe(), "calibration_age_days": calibration_age_days})
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
            evidence=summary, estimate_ids=list(proposal.evidence.estimate_ids),
            model_versions=model_versions, policy_version=POLICY_VERSION,
            auto_release=decision.auto_release and kind != SuggestionKind.ESCALATE,
            routing_reasons=list(decision.reasons), proposal_reasons=list(proposal.reasons),
            escalations=escalation_rows, urgent=bool(escalations),
        )
        suggestion.status = SuggestionStatus.AUTO_RELEASED if suggestion.auto_release else SuggestionStatus.PENDING_REVIEW
        if pending is not None:
            pending.status = SuggestionStatus.SUPERSEDED
            pending.save(update_fields=["status", "updated_at"])
        suggestion.save()
        if pending is not None:
            pending.superseded_by = suggestion
            pending.save(update_fields=["superseded_by", "updated_at"])
            audit_record(actor=SYSTEM, action="suggestion.supersede", target=pending, patient=patient,
                         detail={"superseded_by": suggestion.pk})
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
