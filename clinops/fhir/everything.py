"""One patient's record as a FHIR Bundle (`Patient/{id}/$everything`): reads the rows in a fixed
number of queries, whatever the record's size, and hands them to the builders of resources.py.

What goes in:
- the Patient, their Devices, the Practitioners who decided or entered something;
- BP estimates (live, not shadow) recorded in [since, end), the most recent MAX_ESTIMATES of them
  (an OperationOutcome entry says when older ones were left out, and how to ask for them), each
  with the Observation of its signal window;
- cuff readings measured in [since, end), and every calibration reading an exported estimate
  derives from (whatever its age, so derivedFrom always resolves inside the Bundle);
- every suggestion as a MedicationRequest proposal, every released or approved change as an order,
  the Provenance of each decision and an AuditEvent per plan change (the whole history: a few per
  month, and the trail must be complete).

A patient reading their own record gets what the API shows them: their released changes only
(not pending, rejected or superseded proposals), without clinicians' free-text reasons or the
estimates' internal flags.
"""
from __future__ import annotations

import datetime as dt

from django.db.models import F, Q
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.resource import Resource

from clinops.base.models import AuditEvent
from clinops.fhir import resources as fhir
from monitoring.bp import registry
from monitoring.models import BPEstimate, BPModelVersion, CuffReading
from patients.models import Clinician, Device, Patient
from therapy import plans
from therapy.domain import Rung
from therapy.models import PlanVersion, Suggestion, SuggestionStatus

# By default the export covers this much recent data (estimates and cuff readings).
DEFAULT_SINCE = dt.timedelta(days=90)
# fhir.resources takes about 1.2 ms to validate and serialise an Observation, and each estimate
# brings its window: 1,000 estimates took 2.5 s (a 3 MB Bundle) on the development machine. A
# wearable uploading all day makes far more than that in 90 days; `_since` and `end` narrow the span.
MAX_ESTIMATES = 1000

RELEASED = (SuggestionStatus.AUTO_RELEASED, SuggestionStatus.APPROVED, SuggestionStatus.MODIFIED,
            SuggestionStatus.ACKNOWLEDGED)


# A released change: when it was authored, the suggestion, the regimen released, the decision (None: the engine's).
_Release = tuple[dt.datetime, Suggestion, Rung, AuditEvent | None]


def _rung(plan: PlanVersion, index: int) -> Rung | None:
    ladder = plans.ladder_of(plan)
    return ladder.rungs[index] if ladder.has(index) else None


def _recent_estimates(patient: Patient, recorded: Q) -> tuple[list[BPEstimate], bool, dict[int, BPModelVersion]]:
    """The most recent MAX_ESTIMATES live estimates recorded in the span, oldest first; whether older
    ones were left out; the model versions that made them."""
    # Never the raw signal, the model file or the feature JSON: large, and not exported.
    rows = list(
        BPEstimate.objects.filter(recorded, patient=patient, shadow=False)
        .select_related("window", "analysis", "calibration")
        .defer("window__raw", "analysis__features", "analysis__issues", "analysis__reasons", "calibration__features")
        .order_by("-recorded_at", "-pk")[:MAX_ESTIMATES + 1]
    )
    truncated = len(rows) > MAX_ESTIMATES
    estimates = sorted(rows[:MAX_ESTIMATES], key=lambda e: (e.recorded_at, e.pk))
    models = {m.pk: m for m in BPModelVersion.objects.filter(pk__in={e.model_version_id for e in estimates})
              .only("version", "hyperparameters")}
    return estimates, truncated, models


def _cuff_readings(patient: Patient, measured: Q,
                   estimates: list[BPEstimate]) -> tuple[list[CuffReading], dict[str, int]]:
    """Cuff readings measured in the span plus every calibration reading an exported estimate derives
    from, whatever its age, so that derivedFrom resolves inside the Bundle; and the device that
    recorded each reading, by reading id."""
    calibration_readings = {e.calibration.cuff_reading_id for e in estimates}
    readings = list(
        CuffReading.objects.filter(patient=patient)
        .filter(measured | Q(pk__in=calibration_readings))
        .select_related("entered_by__clinician").order_by("measured_at", "pk")
    )
    cuff_devices = dict(
        AuditEvent.objects.filter(action="cuff_reading.record", object_type=CuffReading._meta.label,
                                  object_id__in=[str(r.pk) for r in readings], actor_device__isnull=False)
        .values_list("object_id", "actor_device_id")
    )
    return readings, cuff_devices


def _therapy_history(patient: Patient, for_patient: bool
                     ) -> tuple[list[Suggestion], list[AuditEvent], dict[int, dict[str, AuditEvent]]]:
    """The suggestions the reader may see, the audit trail of their decisions and of every plan
    change (the whole history: the trail must be complete), and each suggestion's decisions by action."""
    visible = Suggestion.objects.filter(patient=patient).select_related("plan_version").order_by("created_at", "pk")
    if for_patient:
        visible = visible.filter(status__in=RELEASED).exclude(to_rung=F("from_rung"))
    suggestions = list(visible)
    exported = {s.pk for s in suggestions}
    events = [
        e for e in AuditEvent.objects.filter(patient=patient, action__in=(*fhir.DECISION_ACTIONS, *fhir.PLAN_ACTIONS))
        .select_related("actor_user__clinician", "actor_user__patient").order_by("at", "pk")
        if e.action in fhir.PLAN_ACTIONS or (e.object_type == Suggestion._meta.label and int(e.object_id) in exported)
    ]
    decisions: dict[int, dict[str, AuditEvent]] = {}
    for e in events:
        if e.action in fhir.DECISION_ACTIONS:
            decisions.setdefault(int(e.object_id), {})[e.action] = e
    return suggestions, events, decisions


def _current_regimen(patient: Patient) -> Rung | None:
    """The regimen of the patient's current plan (None: no plan)."""
    current = PlanVersion.objects.filter(patient=patient).order_by("-version").only(
        "ladder", "ladder_name", "current_rung").first()
    return _rung(current, current.current_rung) if current else None


def _clinicians_involved(events: list[AuditEvent], readings: list[CuffReading]) -> list[Clinician]:
    """Every clinician who decided or entered something, once each, by id."""
    clinicians: dict[int, Clinician] = {}
    for user in [e.actor_user for e in events] + [r.entered_by for r in readings]:
        clinician = fhir.clinician_of(user)
        if clinician is not None:
            clinicians[clinician.pk] = clinician
    return [c for _, c in sorted(clinicians.items())]


def _estimate_observations(estimates: list[BPEstimate], models: dict[int, BPModelVersion], serials: dict[int, str],
                           for_patient: bool) -> list[Resource]:
    """Each estimate preceded by the Observation of the signal window it was made from."""
    out: list[Resource] = []
    for e in estimates:
        out.append(fhir.window_observation(e.window, e.analysis, device_serial=serials.get(e.window.device_id, "?")))
        model = models[e.model_version_id]
        out.append(fhir.estimate_observation(e, model, baseline=registry.is_baseline(model),
                                             cuff_reading_id=e.calibration.cuff_reading_id, with_flags=not for_patient))
    return out


def _proposals(suggestions: list[Suggestion], decisions: dict[int, dict[str, AuditEvent]],
               exported_estimates: set[int]) -> tuple[list[Resource], list[_Release]]:
    """A MedicationRequest proposal per suggestion, as the engine proposed it and citing the exported
    estimates behind it; and the changes that were released, each with the decision that released it."""
    out: list[Resource] = []
    orders: list[_Release] = []
    for s in suggestions:
        decided = decisions.get(s.pk, {})
        # A modify rewrites the suggestion's to_rung; what the engine proposed is in the audit row.
        modify = decided.get("suggestion.modify")
        proposed_rung = (modify.detail or {}).get("proposed_rung", s.to_rung) if modify else s.to_rung
        proposed = _rung(s.plan_version, proposed_rung) or _rung(s.plan_version, s.to_rung)
        # A suggestion's to_rung is on its plan version's ladder: the engine proposes from that ladder
        # and a modify is refused off it (therapy.services.suggestion_modify).
        assert proposed is not None
        supporting = [f"Observation/{fhir.estimate_id(i)}" for i in s.estimate_ids if i in exported_estimates]
        out.append(fhir.medication_request_proposal(s, proposed=proposed, supporting=supporting))
        if s.status in RELEASED and s.to_rung != s.from_rung:
            event = decided.get("suggestion.approve") or modify or decided.get("suggestion.auto_released")
            released_rung = _rung(s.plan_version, s.to_rung)
            assert released_rung is not None  # to_rung is on the ladder, as above
            orders.append((event.at if event else s.updated_at, s, released_rung, event))
    return out, orders


def _orders(released: list[_Release], current_regimen: Rung | None) -> tuple[list[Resource], set[int]]:
    """A MedicationRequest order per released change, oldest first; and the suggestions that have one."""
    out: list[Resource] = []
    orders = sorted(released, key=lambda o: (o[0], o[1].pk))
    has_order = set()
    for i, (at, s, released_rung, event) in enumerate(orders):
        # In force: the latest change, while the current plan still holds its regimen.
        in_force = i == len(orders) - 1 and current_regimen is not None and released_rung == current_regimen
        requester = fhir.actor_reference(event) if event is not None else {"display": fhir.ENGINE}
        out.append(fhir.medication_request_order(s, released=released_rung, authored_at=at, requester=requester,
                                                 in_force=in_force))
        has_order.add(s.pk)
    return out, has_order


def _audit_trail(events: list[AuditEvent], has_order: set[int], for_patient: bool) -> list[Resource]:
    """The Provenance of each decision (of the proposal, and of the order it released), then an
    AuditEvent per plan change; a patient reader does not get clinicians' free-text reasons."""
    out: list[Resource] = []
    for e in events:
        if e.action in fhir.PLAN_ACTIONS:
            continue
        pk = int(e.object_id)
        targets = [f"MedicationRequest/{fhir.proposal_id(pk)}"]
        if e.action in ("suggestion.approve", "suggestion.modify", "suggestion.auto_released") and pk in has_order:
            targets.append(f"MedicationRequest/{fhir.order_id(pk)}")
        out.append(fhir.decision_provenance(e, targets=targets, with_reason=not for_patient))
    out += [fhir.plan_audit_event(e, with_reason=not for_patient) for e in events if e.action in fhir.PLAN_ACTIONS]
    return out


def _truncation_warning(since: dt.datetime, estimates: list[BPEstimate]) -> Resource:
    """Tells the reader older estimates were left out, and how to ask for them."""
    return fhir.operation_outcome(
        f"Only the {MAX_ESTIMATES} most recent BP estimates since {since.isoformat()} are included; for "
        f"older ones ask again with end={estimates[0].recorded_at.isoformat()} (exclusive).",
        severity="warning", code="too-costly", outcome_id="estimates-truncated")


def patient_everything(patient: Patient, *, since: dt.datetime, now: dt.datetime, base_url: str, self_url: str,
                       end: dt.datetime | None = None, for_patient: bool = False) -> Bundle:
    """The Bundle of `patient`'s record: observations recorded in [since, end) (end None: up to
    now and beyond), the therapy history in full. base_url: absolute URL the entries' fullUrl start
    with (ends with "/"). for_patient: the reader is the patient themself (see the module docstring)."""
    recorded = Q(recorded_at__gte=since) & (Q(recorded_at__lt=end) if end else Q())
    measured = Q(measured_at__gte=since) & (Q(measured_at__lt=end) if end else Q())
    devices = list(Device.objects.filter(patient=patient).order_by("pk"))
    serials = {d.pk: d.serial for d in devices}
    estimates, truncated, models = _recent_estimates(patient, recorded)
    readings, cuff_devices = _cuff_readings(patient, measured, estimates)
    suggestions, events, decisions = _therapy_history(patient, for_patient)
    current_regimen = _current_regimen(patient)

    clinicians = _clinicians_involved(events, readings)
    out: list[Resource] = [fhir.patient_resource(patient)]
    out += [fhir.practitioner_resource(c) for c in clinicians]
    out += [fhir.device_resource(d) for d in devices]
    out += [fhir.cuff_observation(r, device_id=cuff_devices.get(str(r.pk))) for r in readings]
    out += _estimate_observations(estimates, models, serials, for_patient)
    proposals, released = _proposals(suggestions, decisions, {e.pk for e in estimates})
    out += proposals
    orders, has_order = _orders(released, current_regimen)
    out += orders
    out += _audit_trail(events, has_order, for_patient)
    if truncated:
        out.append(_truncation_warning(since, estimates))
    return fhir.everything_bundle(out, base_url=base_url, self_url=self_url, timestamp=now)
