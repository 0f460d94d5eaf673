"""Evaluating a patient's therapy: gather the evidence from the database, apply the pure rules
(titration, escalation, routing) and store the suggestion with its routing decision."""
from __future__ import annotations

import dataclasses
import datetime as dt

import structlog
from django.db import transaction
from django.db.models import Count, Q

from clinops.audit import SYSTEM, audit_record
from monitoring.models import BPEstimate, Calibration, SignalWindow, WindowStatus
from patients.models import Patient
from therapy import plans
from therapy.domain import EstimateEvidence, PatientState, ProposalKind
from therapy.escalation import check_escalation
from therapy.models import PlanVersion, Suggestion, SuggestionKind, SuggestionStatus
from therapy.routing import route
from therapy.services import plan_rung_move
from therapy.titration import propose_step

log = structlog.get_logger(__name__)

# Names the rules a suggestion was routed by; bump when titration/routing/escalation change.
POLICY_VERSION = "therapy-policy-1"


def _evidence(patient: Patient, plan: PlanVersion, now: dt.datetime) -> tuple[list[EstimateEvidence], list[str]]:
    since = now - dt.timedelta(days=plan.look_back_days)
    rows = (BPEstimate.objects.filter(patient=patient, shadow=False, recorded_at__gte=since, recorded_at__lte=now)
            .select_related("model_version").order_by("recorded_at"))
    evidence = [
        EstimateEvidence(
            recorded_at=e.recorded_at, sbp_mmhg=e.sbp_mmhg, dbp_mmhg=e.dbp_mmhg,
            sbp_halfwidth_mmhg=(e.sbp_high_mmhg - e.sbp_low_mmhg) / 2, dbp_halfwidth_mmhg=(e.dbp_high_mmhg - e.dbp_low_mmhg) / 2,
            interval_level=e.interval_level, flags=tuple(e.flags), estimate_id=e.pk,
        )
        for e in rows
    ]
    return evidence, sorted({e.model_version.version for e in rows})


def _usable_window_share(patient: Patient, plan: PlanVersion, now: dt.datetime) -> float | None:
    counts = SignalWindow.objects.filter(
        patient=patient, recorded_at__gte=now - dt.timedelta(days=plan.look_back_days), recorded_at__lte=now,
    ).aggregate(usable=Count("id", filter=Q(status=WindowStatus.PROCESSED)),
                judged=Count("id", filter=Q(status__in=[WindowStatus.PROCESSED, WindowStatus.REJECTED])))
    return counts["usable"] / counts["judged"] if counts["judged"] else None


def _last_rung_change(patient: Patient) -> dt.datetime | None:
    """When the patient's rung last moved (a plan version whose rung differs from the one before);
    None when it never has since the plan was set."""
    versions = list(PlanVersion.objects.filter(patient=patient).order_by("version").values_list("current_rung", "created_at"))
    changes = [at for (before, _), (rung, at) in zip(versions, versions[1:]) if rung != before]
    return changes[-1] if changes else None


def patient_therapy_evaluate(*, patient_id: int, now: dt.datetime) -> Suggestion | None:
    """Propose and route a step for one patient. Returns the suggestion it stored (or the pending
    one it already had), or None for a hold. Two workers evaluating the same patient at once take
    turns on the patient's row, so they make one suggestion, not two."""
    with transaction.atomic():
        patient = Patient.objects.select_for_update().filter(pk=patient_id).first()
        plan = PlanVersion.objects.filter(patient_id=patient_id).order_by("-version").first() if patient else None
        if plan is None:
            return None
        evidence, model_versions = _evidence(patient, plan, now)
        calibration = Calibration.objects.filter(patient=patient, calibrated_at__lte=now).order_by("-calibrated_at").first()
        state = PatientState(current_rung=plan.current_rung, last_change_at=_last_rung_change(patient),
                             adherence_share=None, exclusions=frozenset(plans.exclusions_of(plan)))
        proposal = propose_step(plans.rules_of(plan), plans.ladder_of(plan), state, evidence, now=now,
                                usable_window_share=_usable_window_share(patient, plan, now))
        escalations = check_escalation(evidence, (), (), now=now)
        decision = route(
            proposal, plans.bounds_of(plan), estimates=evidence,
            calibration_age_days=(now - calibration.calibrated_at).total_seconds() / 86400 if calibration else None,
            adherence=state.adherence_share, exclusions=state.exclusions, escalations=escalations, now=now,
        )
        if proposal.kind is ProposalKind.HOLD and not escalations:
            log.info("therapy.hold", patient_id=patient_id, reasons=list(decision.reasons))
            return None
        # Anything urgent makes the item an escalation for a clinician, whatever step was proposed.
        urgent = proposal.kind in (ProposalKind.HOLD, ProposalKind.ESCALATE) or bool(escalations)
        kind = SuggestionKind.ESCALATE if urgent else SuggestionKind(proposal.kind.value)
        pending = Suggestion.objects.filter(patient=patient, status=SuggestionStatus.PENDING_REVIEW).first()
        if pending is not None and (pending.kind, pending.to_rung) == (kind, proposal.to_rung):
            return pending  # the same question is already waiting for a clinician
        suggestion = Suggestion(
            patient=patient, plan_version=plan, kind=kind, from_rung=proposal.from_rung, to_rung=proposal.to_rung,
            from_regimen=proposal.from_regimen, to_regimen=proposal.to_regimen,
            evidence=_jsonable(dataclasses.asdict(proposal.evidence)), estimate_ids=list(proposal.evidence.estimate_ids),
            model_versions=model_versions, policy_version=POLICY_VERSION,
            auto_release=decision.auto_release and kind != SuggestionKind.ESCALATE,
            routing_reasons=list(decision.reasons), proposal_reasons=list(proposal.reasons),
            escalations=[{"kind": e.kind.value, "reason": e.reason, "seek_care": e.seek_care} for e in escalations],
            urgent=bool(escalations),
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
        if suggestion.auto_release:
            plan_rung_move(actor=SYSTEM, patient=patient, to_rung=suggestion.to_rung,
                           reason=f"automatic release of suggestion {suggestion.pk}")
        return suggestion


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
