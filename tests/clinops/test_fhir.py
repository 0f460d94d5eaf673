"""FHIR R4B export: `GET /fhir/Patient/{id}/$everything` returns the patient's record as a Bundle
that fhir.resources validates entry by entry, with the codes, units, lineage and decisions a
consumer needs; and only people who may see the patient get it."""
import datetime as dt
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from rest_framework.test import APIClient

from clinops.fhir import everything
from clinops.fhir.resources import DECISION_REASON_URL, PREDICTION_INTERVAL_URL, estimate_method_text
from monitoring.bp import cuff_calibration
from monitoring.models import BPEstimate, CuffReading
from tests.factories import make_admin, make_clinician, make_device, make_patient, make_team
from tests.therapy.conftest import NOW, clinic, estimates, plan, store_estimates, trusted_wearable, week_of  # noqa: F401 (fixtures)
from therapy import services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import SuggestionStatus

pytestmark = pytest.mark.django_db

LOINC, UCUM = "http://loinc.org", "http://unitsofmeasure.org"


def url(patient_id: int) -> str:
    return f"/fhir/Patient/{patient_id}/$everything"


def get_bundle(client: APIClient, patient_id: int, **params) -> tuple[Bundle, dict]:
    response = client.get(url(patient_id), params)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == "application/fhir+json"
    assert response["Cache-Control"] == "no-store"
    bundle = Bundle.model_validate_json(response.content)  # validates every entry as its resource type
    raw = json.loads(response.content)
    for entry in raw["entry"]:  # and each resource on its own, from the JSON as served
        get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
    index = {f"{e.resource.get_resource_type()}/{e.resource.id}": e.resource for e in bundle.entry}
    assert len(index) == len(bundle.entry), "resource ids are unique in the Bundle"
    for entry in bundle.entry:
        assert entry.fullUrl == f"http://testserver/fhir/{entry.resource.get_resource_type()}/{entry.resource.id}"
    return bundle, index


def of_type(index: dict, resource_type: str, prefix: str = "") -> list:
    return [r for key, r in index.items() if key.startswith(f"{resource_type}/{prefix}")]


def codes(concept) -> set[tuple[str, str]]:
    return {(c.system, c.code) for c in concept.coding or []}


def provenances(index: dict, action: str) -> list:
    """The Provenance resources of one kind of decision (activity coded with our audit action)."""
    return [p for p in of_type(index, "Provenance") if p.activity.coding[0].code == action]


@pytest.fixture
def record(clinic, plan, estimates):
    """A week of high estimates; a suggestion approved by the care-team clinician (rung 0 -> 1);
    then a second one, pending review (rung 1 -> 2); and a cuff reading uploaded by a connected cuff."""
    plan(min_days_between_changes=0)
    estimates(week_of(148, 92))
    patient, clinician = clinic["patient"], clinic["clinician"]
    first = patient_therapy_evaluate(patient_id=patient.pk, now=NOW)
    services.suggestion_approve(actor=clinician, suggestion_id=first.pk, note="agreed, recheck in 4 weeks")
    # The rung moved at the wall clock's now (after NOW): evaluate again just after it.
    pending = patient_therapy_evaluate(patient_id=patient.pk, now=timezone.now() + dt.timedelta(minutes=1))
    assert (first.status, pending.status) == (SuggestionStatus.PENDING_REVIEW, SuggestionStatus.PENDING_REVIEW)
    assert (pending.from_rung, pending.to_rung) == (1, 2)
    cuff, key = make_device(patient)
    reading = cuff_calibration.cuff_reading_record(actor=cuff, patient=patient, sbp_mmhg=146, dbp_mmhg=91,
                                                      measured_at=NOW - dt.timedelta(hours=1), source="device")
    first.refresh_from_db()
    return {**clinic, "approved": first, "pending": pending, "cuff": cuff, "cuff_key": key, "reading": reading}


def test_the_bundle_validates_and_carries_codes_units_lineage_and_decisions(client_for, record):
    patient, clinician = record["patient"], record["clinician"]
    bundle, index = get_bundle(client_for(clinician), patient.pk)
    assert bundle.type == "searchset" and bundle.total == len(bundle.entry)

    fhir_patient = index[f"Patient/{patient.pk}"]
    assert fhir_patient.identifier[0].value == patient.medical_record_number
    assert fhir_patient.birthDate == patient.date_of_birth and fhir_patient.gender == patient.sex

    # Every BP Observation: vital signs, the LOINC panel, systolic and diastolic in mmHg (UCUM).
    bp = of_type(index, "Observation", "bp-")
    assert len(bp) == 14 + 2  # the week's estimates; the calibration and the connected cuff's readings
    for obs in bp:
        assert codes(obs.category[0]) == {("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")}
        assert codes(obs.code) == {(LOINC, "85354-9")}
        assert [next(iter(codes(c.code))) for c in obs.component] == [(LOINC, "8480-6"), (LOINC, "8462-4")]
        assert {(c.valueQuantity.system, c.valueQuantity.code) for c in obs.component} == {(UCUM, "mm[Hg]")}
        assert obs.subject.reference == f"Patient/{patient.pk}"

    # Estimates: ML method with the model version, the interval as an extension, lineage that resolves.
    estimate_rows = {e.pk: e for e in BPEstimate.objects.filter(patient=patient).select_related("model_version")}
    estimates = of_type(index, "Observation", "bp-estimate-")
    assert len(estimates) == len(estimate_rows) == 14
    for obs in estimates:
        row = estimate_rows[int(obs.id.rsplit("-", 1)[1])]
        assert "cuffless ML estimate (PPG/ECG pulse arrival time model" in obs.method.text
        assert row.model_version.version in obs.method.text
        systolic = obs.component[0]
        assert float(systolic.valueQuantity.value) == pytest.approx(row.sbp_mmhg)
        interval = next(x for x in systolic.extension if x.url == PREDICTION_INTERVAL_URL)
        parts = {x.url: x for x in interval.extension}
        assert float(parts["interval"].valueRange.low.value) == pytest.approx(row.sbp_low_mmhg)
        assert float(parts["interval"].valueRange.high.value) == pytest.approx(row.sbp_high_mmhg)
        assert parts["interval"].valueRange.low.code == "mm[Hg]"
        assert float(parts["level"].valueDecimal) == pytest.approx(0.9)
        assert not obs.referenceRange  # the interval is not a normal range
        window, calibration = (index[d.reference] for d in obs.derivedFrom)  # both resolve in the Bundle
        assert window.code.text == "ECG+PPG signal window"
        assert window.effectivePeriod.start == row.recorded_at
        assert calibration.id == f"bp-cuff-{row.calibration.cuff_reading_id}"
        device = index[obs.device.reference]
        assert device.serialNumber == record["device"].serial and window.device.reference == obs.device.reference

    # The connected cuff's reading names the cuff; it is a cuff measurement, not an estimate.
    cuff_obs = index[f"Observation/bp-cuff-{record['reading'].pk}"]
    assert index[cuff_obs.device.reference].serialNumber == record["cuff"].serial
    assert "cuff" in cuff_obs.method.text and "ML" not in cuff_obs.method.text

    # The approved step: its proposal (done), the order it became (in force), and who approved it.
    approved, pending = record["approved"], record["pending"]
    proposal = index[f"MedicationRequest/suggestion-{approved.pk}"]
    order = index[f"MedicationRequest/suggestion-{approved.pk}-order"]
    assert (proposal.intent, proposal.status) == ("proposal", "completed")
    assert (order.intent, order.status) == ("order", "active")
    assert order.medicationCodeableConcept.text == approved.to_regimen
    assert [b.reference for b in order.basedOn] == [f"MedicationRequest/suggestion-{approved.pk}"]
    dose = order.dosageInstruction[0].doseAndRate[0].doseQuantity
    assert (dose.system, dose.code) == (UCUM, "mg")
    clinician_ref = f"Practitioner/{clinician.clinician.pk}"
    assert order.requester.reference == clinician_ref
    assert index[clinician_ref].name[0].family == clinician.last_name
    assert {s.reference for s in proposal.supportingInformation} <= set(index)  # the estimates behind it
    assert proposal.supportingInformation

    # The pending one: a draft proposal, no order.
    waiting = index[f"MedicationRequest/suggestion-{pending.pk}"]
    assert (waiting.intent, waiting.status) == ("proposal", "draft")
    assert f"MedicationRequest/suggestion-{pending.pk}-order" not in index
    assert {m.intent for m in of_type(index, "MedicationRequest")} == {"proposal", "order"}

    # Provenance of the approval: the clinician, targeting the proposal and the order, with the note.
    [approval] = provenances(index, "suggestion.approve")
    assert [a.who.reference for a in approval.agent] == [clinician_ref]
    assert {t.reference for t in approval.target} == {f"MedicationRequest/suggestion-{approved.pk}",
                                                       f"MedicationRequest/suggestion-{approved.pk}-order"}
    assert [x.valueString for x in approval.extension if x.url == DECISION_REASON_URL] == ["agreed, recheck in 4 weeks"]
    for provenance in of_type(index, "Provenance"):
        assert {t.reference for t in provenance.target} <= set(index)
    # The engine's routing of each suggestion is on record too; plan changes are AuditEvents.
    routed = provenances(index, "suggestion.pending_review")
    assert len(routed) == 2 and all(p.agent[0].who.display.startswith("ClinOps therapy engine") for p in routed)
    assert [a.subtype[0].code for a in of_type(index, "AuditEvent")] == ["plan.create", "plan.rung_move"]


def test_a_modified_step_keeps_what_was_proposed_and_why_it_was_changed(client_for, clinic, plan, estimates):
    plan()
    estimates(week_of(148, 92))
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    proposed = suggestion.to_regimen
    services.suggestion_modify(actor=clinic["clinician"], suggestion_id=suggestion.pk, to_rung=0,
                               reason="recheck with a cuff first")
    _, index = get_bundle(client_for(clinic["clinician"]), clinic["patient"].pk)
    proposal = index[f"MedicationRequest/suggestion-{suggestion.pk}"]
    assert (proposal.status, proposal.medicationCodeableConcept.text) == ("cancelled", proposed)
    assert f"MedicationRequest/suggestion-{suggestion.pk}-order" not in index  # rung 0 -> 0: nothing released
    [modify] = provenances(index, "suggestion.modify")
    assert modify.extension[0].valueString == "recheck with a cuff first"


def test_the_patient_gets_their_released_changes_only(client_for, record):
    patient, approved, pending = record["patient"], record["approved"], record["pending"]
    _, index = get_bundle(client_for(patient.user), patient.pk)
    assert f"MedicationRequest/suggestion-{approved.pk}-order" in index
    assert f"MedicationRequest/suggestion-{pending.pk}" not in index  # not decided: not theirs to see yet
    assert all(not p.extension for p in of_type(index, "Provenance"))  # clinicians' notes stay with them
    assert len(of_type(index, "Observation", "bp-estimate-")) == 14


def test_only_people_who_may_see_the_patient_get_the_record(client_for, record):
    patient = record["patient"]
    outsider = make_clinician(team=make_team()).user
    other_patient = make_patient(team=make_team())
    for user in (outsider, other_patient.user):
        response = client_for(user).get(url(patient.pk))
        assert response.status_code == 404
        assert response["Content-Type"] == "application/fhir+json"
        outcome = get_fhir_model_class("OperationOutcome").model_validate_json(response.content)
        assert outcome.issue[0].code == "not-found"
    assert client_for(record["clinician"]).get(url(999_999)).status_code == 404
    for unknown in ("/fhir/Patient/abc/$everything", "/fhir/Observation/1"):  # no such route: still FHIR
        response = client_for(record["clinician"]).get(unknown)
        assert response.status_code == 404 and response["Content-Type"] == "application/fhir+json", unknown
        assert get_fhir_model_class("OperationOutcome").model_validate_json(response.content).issue[0].code == "not-found"
    get_bundle(client_for(make_admin()), patient.pk)

    anonymous = APIClient().get(url(patient.pk))
    assert anonymous.status_code in (401, 403)
    assert json.loads(anonymous.content)["resourceType"] == "OperationOutcome"
    device = APIClient()
    device.credentials(HTTP_AUTHORIZATION=f"Api-Key {record['cuff_key']}")
    assert device.get(url(patient.pk)).status_code in (401, 403)  # a device is not a person
    unknown = APIClient()
    unknown.credentials(HTTP_AUTHORIZATION="Api-Key abc.def")
    assert unknown.get(url(patient.pk)).status_code in (401, 403)


def test_clinicians_need_their_second_factor_where_it_is_required(client_for, record, settings):
    settings.CLINOPS_OTP_REQUIRED_FOR_CLINICIANS = True
    assert client_for(record["clinician"]).get(url(record["patient"].pk)).status_code == 403


def test_since_bounds_the_observations_but_keeps_the_calibration_they_derive_from(client_for, record):
    patient, clinician = record["patient"], record["clinician"]
    since = NOW - dt.timedelta(days=2)
    _, index = get_bundle(client_for(clinician), patient.pk, _since=since.isoformat())
    kept = BPEstimate.objects.filter(patient=patient, recorded_at__gte=since)
    assert {o.id for o in of_type(index, "Observation", "bp-estimate-")} == {f"bp-estimate-{e.pk}" for e in kept}
    assert len(of_type(index, "Observation", "signal-window-")) == kept.count()
    calibration = CuffReading.objects.get(patient=patient, source="clinician")
    assert calibration.measured_at < since and f"Observation/bp-cuff-{calibration.pk}" in index
    # The whole therapy history stays.
    assert f"MedicationRequest/suggestion-{record['approved'].pk}-order" in index

    # An unencoded "+00:00" arrives as " 00:00" and still parses; `end` bounds from above.
    _, index = get_bundle(client_for(clinician), patient.pk, _since=(NOW - dt.timedelta(days=30)).isoformat(),
                          end=since.isoformat().replace("+", " "))
    assert {o.id for o in of_type(index, "Observation", "bp-estimate-")} == {
        f"bp-estimate-{e.pk}" for e in BPEstimate.objects.filter(patient=patient, recorded_at__lt=since)}

    bad = client_for(clinician).get(url(patient.pk), {"_since": "last tuesday"})
    assert bad.status_code == 400
    assert "_since" in get_fhir_model_class("OperationOutcome").model_validate_json(bad.content).issue[0].diagnostics


def test_the_default_span_is_90_days(client_for, clinic, plan):
    plan()
    store_estimates(clinic["patient"], clinic["device"], [(24 * 100, 150, 95), (24 * 10, 140, 90)])
    _, index = get_bundle(client_for(clinic["clinician"]), clinic["patient"].pk)
    assert [o.effectiveDateTime for o in of_type(index, "Observation", "bp-estimate-")] == [NOW - dt.timedelta(days=10)]


def test_a_long_record_keeps_the_latest_estimates_and_says_so(client_for, clinic, plan, estimates, monkeypatch):
    monkeypatch.setattr(everything, "MAX_ESTIMATES", 5)
    plan()
    estimates([(h, 140, 90) for h in range(1, 9)])
    bundle, index = get_bundle(client_for(clinic["clinician"]), clinic["patient"].pk)
    kept = of_type(index, "Observation", "bp-estimate-")
    assert sorted(o.effectiveDateTime for o in kept) == [NOW - dt.timedelta(hours=h) for h in (5, 4, 3, 2, 1)]
    notice = index["OperationOutcome/estimates-truncated"]
    assert notice.issue[0].severity == "warning" and "end=" in notice.issue[0].diagnostics
    assert bundle.total == len(bundle.entry) - 1  # the notice is not a match


def test_queries_do_not_grow_with_the_record(client_for, clinic, plan, estimates):
    plan(min_days_between_changes=0)
    client = client_for(clinic["clinician"])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url(clinic["patient"].pk)).status_code == 200
        return len(captured)

    estimates(week_of(148, 92))
    first = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    services.suggestion_approve(actor=clinic["clinician"], suggestion_id=first.pk)
    small = queries()
    estimates([(1.5 + 4 * i, 150, 95) for i in range(42)])  # 42 more, none at the time of another
    later = timezone.now() + dt.timedelta(minutes=1)  # after the first rung move
    second = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=later)
    services.suggestion_approve(actor=clinic["clinician"], suggestion_id=second.pk)
    assert patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=later + dt.timedelta(minutes=1))
    assert queries() == small


def test_an_automatic_release_is_ordered_by_the_engine_and_says_so(client_for, clinic, plan, estimates, trusted_wearable):
    plan(current_rung=2, auto_step_down=True, max_auto_rung=3)
    estimates(week_of(104, 66))
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert suggestion.status == SuggestionStatus.AUTO_RELEASED
    services.suggestion_acknowledge(actor=clinic["patient"].user, suggestion_id=suggestion.pk)
    _, index = get_bundle(client_for(clinic["patient"].user), clinic["patient"].pk)
    order = index[f"MedicationRequest/suggestion-{suggestion.pk}-order"]
    assert (order.intent, order.status, order.medicationCodeableConcept.text) == ("order", "active", suggestion.to_regimen)
    assert order.requester.display.startswith("ClinOps therapy engine") and order.requester.reference is None
    [released] = provenances(index, "suggestion.auto_released")
    assert released.agent[0].who.display == "ClinOps therapy engine"
    assert {t.reference for t in released.target} == {f"MedicationRequest/suggestion-{suggestion.pk}",
                                                       f"MedicationRequest/suggestion-{suggestion.pk}-order"}


def test_the_method_says_when_the_model_is_the_carry_forward_baseline():
    from monitoring.models import BPModelVersion

    model = BPModelVersion(version="bp-2026-11-01")
    assert estimate_method_text(model, baseline=False) == (
        "cuffless ML estimate (PPG/ECG pulse arrival time model bp-2026-11-01)")
    assert estimate_method_text(model, baseline=True).endswith("carry-forward baseline: repeats the calibration cuff reading")


def test_a_revoked_device_is_inactive_with_its_reason(client_for, record):
    from patients import services as patient_services

    patient_services.device_revoke(actor=record["clinician"], device=record["cuff"], reason="lost")
    _, index = get_bundle(client_for(record["clinician"]), record["patient"].pk)
    cuff = index[f"Device/{record['cuff'].pk}"]
    assert cuff.status == "inactive" and "lost" in cuff.statusReason[0].text


def test_a_patient_reading_their_own_record_gets_no_clinician_plan_reason(client_for, clinic, plan):  # noqa: F811
    plan(auto_step_up=True)
    from therapy import services as therapy_services

    therapy_services.plan_change(actor=clinic["clinician"], patient=clinic["patient"], reason="suspect white-coat effect",
                                 target_sbp_mmhg=130.0)
    own = client_for(clinic["patient"].user)
    bundle = own.get(f"/fhir/Patient/{clinic['patient'].pk}/$everything").content.decode()
    assert "suspect white-coat effect" not in bundle
    assert own.get(f"/api/v1/patients/{clinic['patient'].pk}/plan/").json()["reason"] == ""
    team = client_for(clinic["clinician"])
    assert "suspect white-coat effect" in team.get(f"/fhir/Patient/{clinic['patient'].pk}/$everything").content.decode()
    assert team.get(f"/api/v1/patients/{clinic['patient'].pk}/plan/").json()["reason"] == "suspect white-coat effect"
