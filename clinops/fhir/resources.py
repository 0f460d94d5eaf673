"""Rows -> FHIR R4B resources (fhir.resources models), one plain function per resource kind.

No queries here: callers pass the rows (and whatever related rows a resource needs), so the export
reads a patient's record in a fixed number of queries. Every builder validates its resource
(pydantic, through fhir.resources) as it builds it, so a malformed resource fails here, not in a
consumer.

Ids are stable and say what they are: `Patient/<pk>`, `Device/<pk>`, `Practitioner/<clinician pk>`,
`Observation/bp-estimate-<pk>`, `Observation/bp-cuff-<pk>`, `Observation/signal-window-<pk>`,
`MedicationRequest/suggestion-<pk>` (the proposal) and `MedicationRequest/suggestion-<pk>-order`
(the released change), `Provenance/audit-<pk>` and `AuditEvent/audit-<pk>` (from our audit trail).

Units: blood pressure in mmHg (UCUM `mm[Hg]`), doses in mg (UCUM `mg`), heart rate in beats/min
(UCUM `/min`), pulse arrival time in ms (UCUM `ms`); times are timezone-aware ISO 8601.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device as FhirDevice
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient as FhirPatient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.resource import Resource

from clinops.base.models import AuditEvent
from monitoring.models import BPEstimate, BPModelVersion, CuffReading, CuffSource, SignalWindow, WindowAnalysis
from patients.models import Clinician, Device, Patient
from therapy.domain import Frequency, Rung
from therapy.models import Suggestion, SuggestionStatus

# --- Code systems and our own definitions -------------------------------------------------------

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
AUDIT_ACTION = "http://hl7.org/fhir/audit-event-action"

LOINC_BP_PANEL = ("85354-9", "Blood pressure panel with all children optional")
LOINC_SYSTOLIC = ("8480-6", "Systolic blood pressure")
LOINC_DIASTOLIC = ("8462-4", "Diastolic blood pressure")
LOINC_HEART_RATE = ("8867-4", "Heart rate")

# Our own identifiers, codes and extensions. The base is a placeholder domain of the project
# (nothing is served there); a deployment may publish its StructureDefinitions under it.
CLINOPS = "https://clinops.example/fhir"
MRN_SYSTEM = f"{CLINOPS}/NamingSystem/medical-record-number"
DEVICE_SERIAL_SYSTEM = f"{CLINOPS}/NamingSystem/device-serial"
WINDOW_SYSTEM = f"{CLINOPS}/NamingSystem/signal-window"  # "<device serial>:<device sequence>"
WINDOW_SHA256_SYSTEM = f"{CLINOPS}/NamingSystem/signal-window-sha256"
REGISTRATION_SYSTEM = f"{CLINOPS}/NamingSystem/clinician-registration"
SUGGESTION_SYSTEM = f"{CLINOPS}/NamingSystem/suggestion"
BP_METHOD_SYSTEM = f"{CLINOPS}/CodeSystem/bp-method"
SIGNAL_SYSTEM = f"{CLINOPS}/CodeSystem/signal"
DECISION_SYSTEM = f"{CLINOPS}/CodeSystem/decision"  # codes = our audit actions, e.g. suggestion.approve
# The estimate's prediction interval. Not `referenceRange`: in FHIR that is the normal range of
# the test, and a consumer would read our uncertainty as "normal BP is 140-156". A complex
# extension on each component carries the interval (valueRange, mmHg) and its level (0-1).
PREDICTION_INTERVAL_URL = f"{CLINOPS}/StructureDefinition/prediction-interval"
# A clinician's own words with a decision (the note of an approval, the reason of a modify or
# reject); Provenance has no element for it.
DECISION_REASON_URL = f"{CLINOPS}/StructureDefinition/decision-reason"

ENGINE = "ClinOps therapy engine"

_GENDER = {"female": "female", "male": "male", "other": "other", "unknown": "unknown"}
_TIMES_A_DAY = {Frequency.ONCE_DAILY: 1, Frequency.TWICE_DAILY: 2, Frequency.THREE_TIMES_DAILY: 3}
_DECISION_WORDS = {
    "suggestion.pending_review": "proposed and routed to clinician review",
    "suggestion.auto_released": "proposed and released automatically within the clinician's bounds",
    "suggestion.approve": "approved by a clinician",
    "suggestion.modify": "modified by a clinician",
    "suggestion.reject": "rejected by a clinician",
}
DECISION_ACTIONS = tuple(_DECISION_WORDS)
PLAN_ACTIONS = {"plan.create": ("C", "therapy plan set"), "plan.change": ("U", "therapy plan changed"),
                "plan.rung_move": ("U", "regimen changed (a released or approved step)")}


# --- Small helpers ------------------------------------------------------------------------------

def ref(resource_type: str, resource_id: Any, display: str | None = None) -> dict[str, Any]:
    """A relative reference, e.g. {"reference": "Device/3"}; resolved against the Bundle's base."""
    out: dict[str, Any] = {"reference": f"{resource_type}/{resource_id}"}
    if display:
        out["display"] = display
    return out


def local_reference(resource: Resource) -> str:
    return f"{resource.get_resource_type()}/{resource.id}"


def _instant(at: dt.datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("FHIR times must be timezone-aware")
    return at.isoformat()


def _mmhg(value: float) -> dict[str, Any]:
    # 0.1 mmHg is finer than any cuff or model; more digits would suggest a precision we lack.
    return {"value": round(float(value), 1), "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}


def _coding(system: str, code_display: tuple[str, str]) -> dict[str, Any]:
    return {"system": system, "code": code_display[0], "display": code_display[1]}


def _vital_signs() -> list[dict[str, Any]]:
    return [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}],
             "text": "Vital Signs"}]


def _bp_code() -> dict[str, Any]:
    return {"coding": [_coding(LOINC, LOINC_BP_PANEL)], "text": "Blood pressure"}


def _prediction_interval(low: float, high: float, level: float) -> dict[str, Any]:
    return {"url": PREDICTION_INTERVAL_URL, "extension": [
        {"url": "interval", "valueRange": {"low": _mmhg(low), "high": _mmhg(high)}},
        {"url": "level", "valueDecimal": round(float(level), 4)},
    ]}


def practitioner_reference(clinician: Clinician) -> dict[str, Any]:
    return ref("Practitioner", clinician.pk, str(clinician))


def clinician_of(user: Any) -> Clinician | None:
    """The user's clinician row when they are one (the reverse one-to-one raises otherwise)."""
    if user is None:
        return None
    try:
        return user.clinician
    except Clinician.DoesNotExist:
        return None


# --- People and devices -------------------------------------------------------------------------

def patient_resource(patient: Patient) -> FhirPatient:
    return FhirPatient.model_validate({
        "resourceType": "Patient",
        "id": str(patient.pk),
        "identifier": [{"use": "usual", "system": MRN_SYSTEM, "value": patient.medical_record_number,
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "MR", "display": "Medical record number"}]}}],
        "active": True,
        "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        "gender": _GENDER.get(patient.sex, "unknown"),
        "birthDate": patient.date_of_birth.isoformat(),
    })


def practitioner_resource(clinician: Clinician) -> Practitioner:
    user = clinician.user
    data: dict[str, Any] = {
        "resourceType": "Practitioner",
        "id": str(clinician.pk),
        "active": user.is_active,
        "name": [{"use": "official", "text": str(clinician),
                  **({"family": user.last_name} if user.last_name else {}),
                  **({"given": [user.first_name]} if user.first_name else {})}],
        "qualification": [{"code": {"text": clinician.get_profession_display()}}],
    }
    if clinician.registration_number:
        data["identifier"] = [{"system": REGISTRATION_SYSTEM, "value": clinician.registration_number}]
    return Practitioner.model_validate(data)


def device_resource(device: Device) -> FhirDevice:
    """The wearable (or connected cuff). A revoked device is `inactive`, with its reason."""
    data: dict[str, Any] = {
        "resourceType": "Device",
        "id": str(device.pk),
        "identifier": [{"system": DEVICE_SERIAL_SYSTEM, "value": device.serial}],
        "status": "inactive" if device.is_revoked else "active",
        "manufacturer": device.make,
        "deviceName": [{"name": device.model, "type": "model-name"},
                       {"name": str(device), "type": "user-friendly-name"}],
        "modelNumber": device.model,
        "serialNumber": device.serial,
        "version": [{"type": {"text": "firmware"}, "value": device.firmware}],
        "patient": ref("Patient", device.patient_id),
    }
    if device.is_revoked:
        data["statusReason"] = [{"text": f"revoked {device.revoked_at:%Y-%m-%d}: {device.revoked_reason}".strip(": ")}]
    return FhirDevice.model_validate(data)


# --- Observations -------------------------------------------------------------------------------

def window_id(window_pk: int) -> str:
    return f"signal-window-{window_pk}"


def cuff_id(reading_pk: int) -> str:
    return f"bp-cuff-{reading_pk}"


def estimate_id(estimate_pk: int) -> str:
    return f"bp-estimate-{estimate_pk}"


def window_observation(window: SignalWindow, analysis: WindowAnalysis | None, *, device_serial: str) -> Observation:
    """The ECG+PPG window an estimate was computed from (its raw signal stays in ClinOps, named by
    its SHA-256), with the beat features the model used: heart rate and pulse arrival time."""
    start = window.recorded_at
    components = []
    if analysis is not None and analysis.heart_rate_bpm is not None:
        components.append({"code": {"coding": [_coding(LOINC, LOINC_HEART_RATE)], "text": "Heart rate"},
                           "valueQuantity": {"value": round(analysis.heart_rate_bpm, 1), "unit": "beats/min",
                                             "system": UCUM, "code": "/min"}})
    if analysis is not None and analysis.pat_foot_ms is not None:
        components.append({"code": {"coding": [{"system": SIGNAL_SYSTEM, "code": "pat-foot-median",
                                                "display": "Median pulse arrival time (ECG R-peak to PPG foot)"}],
                                    "text": "Pulse arrival time (median, to PPG foot)"},
                           "valueQuantity": {"value": round(analysis.pat_foot_ms, 1), "unit": "ms",
                                             "system": UCUM, "code": "ms"}})
    data: dict[str, Any] = {
        "resourceType": "Observation",
        "id": window_id(window.pk),
        "identifier": [{"system": WINDOW_SYSTEM, "value": f"{device_serial}:{window.sequence}"},
                       {"system": WINDOW_SHA256_SYSTEM, "value": window.raw_sha256 or "unknown"}],
        "status": "final",
        "code": {"coding": [{"system": SIGNAL_SYSTEM, "code": "ecg-ppg-window", "display": "ECG+PPG signal window"}],
                 "text": "ECG+PPG signal window"},
        "subject": ref("Patient", window.patient_id),
        "effectivePeriod": {"start": _instant(start),
                            "end": _instant(start + dt.timedelta(seconds=window.duration_s))},
        "issued": _instant(window.received_at),
        "device": ref("Device", window.device_id),
        "note": [{"text": f"{window.duration_s:g} s; ECG {window.ecg_fs:g} Hz, PPG {window.ppg_fs:g} Hz; "
                          f"firmware {window.firmware}"
                          + (f"; pipeline {analysis.pipeline_version}" if analysis is not None else "")}],
    }
    if components:
        data["component"] = components
    return Observation.model_validate(data)


def estimate_method_text(model: BPModelVersion, *, baseline: bool) -> str:
    text = f"cuffless ML estimate (PPG/ECG pulse arrival time model {model.version})"
    # The carry-forward baseline learns nothing: say so rather than let "ML" suggest it does.
    return text + "; carry-forward baseline: repeats the calibration cuff reading" if baseline else text


def estimate_observation(estimate: BPEstimate, model: BPModelVersion, *, baseline: bool, cuff_reading_id: int,
                         with_flags: bool = True) -> Observation:
    """A cuffless BP estimate: the BP panel with systolic and diastolic components (mmHg), each with
    its prediction interval (extension PREDICTION_INTERVAL_URL), the ML method and model version, the
    wearable, and derivedFrom = the signal window and the calibration's cuff reading.
    with_flags: add, as a note, why the estimate may not support an automatic release (care team)."""
    components = [
        {"code": {"coding": [_coding(LOINC, LOINC_SYSTOLIC)], "text": "Systolic blood pressure"},
         "valueQuantity": _mmhg(estimate.sbp_mmhg),
         "extension": [_prediction_interval(estimate.sbp_low_mmhg, estimate.sbp_high_mmhg, estimate.interval_level)]},
        {"code": {"coding": [_coding(LOINC, LOINC_DIASTOLIC)], "text": "Diastolic blood pressure"},
         "valueQuantity": _mmhg(estimate.dbp_mmhg),
         "extension": [_prediction_interval(estimate.dbp_low_mmhg, estimate.dbp_high_mmhg, estimate.interval_level)]},
    ]
    data: dict[str, Any] = {
        "resourceType": "Observation",
        "id": estimate_id(estimate.pk),
        "status": "final",
        "category": _vital_signs(),
        "code": _bp_code(),
        "subject": ref("Patient", estimate.patient_id),
        "effectiveDateTime": _instant(estimate.recorded_at),
        "issued": _instant(estimate.created_at),
        "method": {"coding": [{"system": BP_METHOD_SYSTEM, "code": "cuffless-ml-estimate",
                               "display": "Cuffless ML estimate"}],
                   "text": estimate_method_text(model, baseline=baseline)},
        "device": ref("Device", estimate.window.device_id),
        "derivedFrom": [ref("Observation", window_id(estimate.window_id), "ECG+PPG signal window"),
                        ref("Observation", cuff_id(cuff_reading_id), "calibration cuff reading")],
        "component": components,
    }
    notes = [f"Calibrated against the cuff reading of {estimate.calibration.calibrated_at:%Y-%m-%d %H:%M} UTC "
             f"({estimate.calibration_age_days:.1f} days before)."]
    if with_flags and estimate.flags:
        notes.append("Not for automatic dose changes: " + "; ".join(estimate.flags))
    data["note"] = [{"text": n} for n in notes]
    return Observation.model_validate(data)


def cuff_observation(reading: CuffReading, *, device_id: int | None) -> Observation:
    """An upper-arm cuff reading (mmHg). performer: who entered it (a clinician, or the patient);
    device: the connected cuff that uploaded it, when one did."""
    source = CuffSource(reading.source)
    data: dict[str, Any] = {
        "resourceType": "Observation",
        "id": cuff_id(reading.pk),
        "status": "final",
        "category": _vital_signs(),
        "code": _bp_code(),
        "subject": ref("Patient", reading.patient_id),
        "effectiveDateTime": _instant(reading.measured_at),
        "issued": _instant(reading.created_at),
        "method": {"coding": [{"system": BP_METHOD_SYSTEM, "code": "upper-arm-cuff", "display": "Upper-arm cuff"}],
                   "text": f"upper-arm cuff ({source.label.lower()})"},
        "component": [
            {"code": {"coding": [_coding(LOINC, LOINC_SYSTOLIC)], "text": "Systolic blood pressure"},
             "valueQuantity": _mmhg(reading.sbp_mmhg)},
            {"code": {"coding": [_coding(LOINC, LOINC_DIASTOLIC)], "text": "Diastolic blood pressure"},
             "valueQuantity": _mmhg(reading.dbp_mmhg)},
        ],
    }
    clinician = clinician_of(reading.entered_by)
    if clinician is not None:
        data["performer"] = [practitioner_reference(clinician)]
    elif source == CuffSource.PATIENT:
        data["performer"] = [ref("Patient", reading.patient_id)]
    if device_id is not None:
        data["device"] = ref("Device", device_id)
    return Observation.model_validate(data)


# --- Medication requests ------------------------------------------------------------------------

def proposal_id(suggestion_pk: int) -> str:
    return f"suggestion-{suggestion_pk}"


def order_id(suggestion_pk: int) -> str:
    return f"suggestion-{suggestion_pk}-order"


def dosage_instructions(regimen: Rung) -> list[dict[str, Any]]:
    """One instruction per drug of the regimen: dose in mg per intake, intakes per day."""
    # The same sequence number for every drug: FHIR's way of saying they are taken together.
    return [{"sequence": 1, "text": dose.describe(),
             "timing": {"repeat": {"frequency": _TIMES_A_DAY[dose.frequency], "period": 1, "periodUnit": "d"}},
             "doseAndRate": [{"doseQuantity": {"value": dose.dose_mg, "unit": "mg", "system": UCUM, "code": "mg"}}]}
            for dose in regimen.doses]


def _regimen_concept(regimen: Rung) -> dict[str, Any]:
    # A rung is the whole regimen (e.g. lisinopril + amlodipine): one request per step the
    # clinician decides, with one dosage instruction per drug. No RxNorm/ATC codes are on record.
    return {"text": regimen.describe()}


# Keyed by the stored status, a plain string (SuggestionStatus members are strings and equal theirs).
_PROPOSAL_STATUS: dict[str, tuple[str, str | None]] = {
    SuggestionStatus.PENDING_REVIEW: ("draft", None),
    # Accepted as proposed: done as a proposal; the order (basedOn it) is what is in force.
    SuggestionStatus.AUTO_RELEASED: ("completed", None),
    SuggestionStatus.APPROVED: ("completed", None),
    SuggestionStatus.ACKNOWLEDGED: ("completed", None),
    SuggestionStatus.MODIFIED: ("cancelled", "modified by a clinician: another rung was released instead"),
    SuggestionStatus.REJECTED: ("cancelled", "rejected by a clinician"),
    SuggestionStatus.SUPERSEDED: ("cancelled", "superseded by a newer suggestion"),
}


def proposal_status(suggestion: Suggestion) -> tuple[str, str | None]:
    """MedicationRequest.status of the proposal, with the reason when it did not go ahead."""
    # A status added later than this mapping exports as FHIR's own "unknown" rather than failing.
    return _PROPOSAL_STATUS.get(suggestion.status, ("unknown", None))


def medication_request_proposal(suggestion: Suggestion, *, proposed: Rung,
                                supporting: Sequence[str] = ()) -> MedicationRequest:
    """The engine's proposal (intent `proposal`): the regimen it proposed (for a modified suggestion,
    the one proposed before the clinician changed it). supporting: local references of the estimate
    Observations behind it that the export includes."""
    status, why = proposal_status(suggestion)
    data: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        "id": proposal_id(suggestion.pk),
        "identifier": [{"system": SUGGESTION_SYSTEM, "value": str(suggestion.pk)}],
        "status": status,
        "intent": "proposal",
        "priority": "urgent" if suggestion.urgent else "routine",
        "medicationCodeableConcept": _regimen_concept(proposed),
        "subject": ref("Patient", suggestion.patient_id),
        "authoredOn": _instant(suggestion.created_at),
        "requester": {"display": f"{ENGINE} ({suggestion.policy_version})"},
        "dosageInstruction": dosage_instructions(proposed),
        "note": [{"text": f"{suggestion.get_kind_display()}: from {suggestion.from_regimen}."}],
    }
    if why:
        data["statusReason"] = {"text": why}
    if supporting:
        data["supportingInformation"] = [{"reference": r} for r in supporting]
    return MedicationRequest.model_validate(data)


def medication_request_order(suggestion: Suggestion, *, released: Rung, authored_at: dt.datetime,
                             requester: dict[str, Any], in_force: bool) -> MedicationRequest:
    """A released or approved change (intent `order`), based on its proposal. `active` while it is
    the patient's regimen, `stopped` once a later change replaced it."""
    return MedicationRequest.model_validate({
        "resourceType": "MedicationRequest",
        "id": order_id(suggestion.pk),
        "identifier": [{"system": SUGGESTION_SYSTEM, "value": f"{suggestion.pk}-order"}],
        "status": "active" if in_force else "stopped",
        "intent": "order",
        "medicationCodeableConcept": _regimen_concept(released),
        "subject": ref("Patient", suggestion.patient_id),
        "authoredOn": _instant(authored_at),
        "requester": requester,
        "basedOn": [ref("MedicationRequest", proposal_id(suggestion.pk))],
        "dosageInstruction": dosage_instructions(released),
        "note": [{"text": f"Replaces {suggestion.from_regimen}."}],
    })


# --- Decisions: Provenance and AuditEvent -------------------------------------------------------

def actor_reference(event: AuditEvent) -> dict[str, Any]:
    """Who acted: a Practitioner for a clinician, the Patient for the patient, else their name."""
    clinician = clinician_of(event.actor_user)
    if clinician is not None:
        return practitioner_reference(clinician)
    if event.actor_type == "system":
        return {"display": ENGINE}
    if event.actor_device_id is not None:
        return ref("Device", event.actor_device_id, event.actor_label)
    patient = getattr(event.actor_user, "patient", None) if event.actor_user is not None else None
    if patient is not None:
        return ref("Patient", patient.pk, event.actor_label)
    return {"display": event.actor_label}


def decision_provenance(event: AuditEvent, *, targets: Iterable[str], with_reason: bool = True) -> Provenance:
    """Who decided a suggestion and when, from its audit row: the engine's routing
    (`suggestion.pending_review`, `suggestion.auto_released`) or a clinician's approve, modify or
    reject. targets: local references of the MedicationRequests the decision made or changed.
    with_reason: carry the clinician's note or reason (extension DECISION_REASON_URL)."""
    words = _DECISION_WORDS[event.action]
    data: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": f"audit-{event.pk}",
        "target": [{"reference": t} for t in targets],
        "occurredDateTime": _instant(event.at),
        "recorded": _instant(event.at),
        "activity": {"coding": [{"system": DECISION_SYSTEM, "code": event.action, "display": words}],
                     "text": words},
        "agent": [{"type": {"coding": [{"system": PROVENANCE_PARTICIPANT, "code": "author", "display": "Author"}]},
                   "who": actor_reference(event)}],
    }
    reason = (event.detail or {}).get("reason") or (event.detail or {}).get("note")
    if with_reason and reason:
        data["extension"] = [{"url": DECISION_REASON_URL, "valueString": str(reason)}]
    return Provenance.model_validate(data)


def plan_audit_event(event: AuditEvent, *, with_reason: bool = True) -> FhirAuditEvent:
    """A change to the patient's therapy plan (set, changed, rung moved), from its audit row. Plans
    are not exported as resources, so the entity names the version and carries the reason (the
    clinician's own words: not for the patient's own reading, as with decisions)."""
    action, words = PLAN_ACTIONS[event.action]
    detail = event.detail or {}
    details = ([{"type": "reason", "valueString": str(detail.get("reason", ""))}]
               if with_reason and detail.get("reason") else [])
    if detail.get("changed"):
        details.append({"type": "changed", "valueString": ", ".join(map(str, detail["changed"]))})
    entity: dict[str, Any] = {"what": ref("Patient", event.patient_id),
                              "name": f"therapy plan v{detail.get('version', '?')}", "description": words}
    if details:
        entity["detail"] = details
    return FhirAuditEvent.model_validate({
        "resourceType": "AuditEvent",
        "id": f"audit-{event.pk}",
        "type": {"system": DICOM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": DECISION_SYSTEM, "code": event.action, "display": words}],
        "action": action,
        "recorded": _instant(event.at),
        "outcome": "0",
        "agent": [{"who": actor_reference(event), "requestor": True}],
        "source": {"observer": {"display": "ClinOps"}},
        "entity": [entity],
    })


# --- Outcomes and the Bundle --------------------------------------------------------------------

def operation_outcome(message: str, *, severity: str = "error", code: str = "processing",
                      outcome_id: str | None = None) -> OperationOutcome:
    """An OperationOutcome with one issue: an error body, or a notice inside a Bundle."""
    data: dict[str, Any] = {"resourceType": "OperationOutcome",
                            "issue": [{"severity": severity, "code": code, "diagnostics": message}]}
    if outcome_id:
        data["id"] = outcome_id
    return OperationOutcome.model_validate(data)


def everything_bundle(resources: Sequence[Resource], *, base_url: str, self_url: str,
                      timestamp: dt.datetime) -> Bundle:
    """A `searchset` Bundle (what $everything returns) with an absolute fullUrl per entry, so the
    relative references inside resolve against base_url (e.g. "https://host/fhir/"). Entries are
    the builders' already-validated resources (pydantic does not validate an instance twice)."""
    return Bundle.model_validate({
        "resourceType": "Bundle",
        "type": "searchset",
        "timestamp": _instant(timestamp),
        "total": sum(1 for r in resources if r.get_resource_type() != "OperationOutcome"),
        "link": [{"relation": "self", "url": self_url}],
        "entry": [{"fullUrl": f"{base_url}{local_reference(r)}", "resource": r,
                   "search": {"mode": "outcome" if r.get_resource_type() == "OperationOutcome" else "match"}}
                  for r in resources],
    })
