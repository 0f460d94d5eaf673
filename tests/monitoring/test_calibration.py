"""Cuff readings are recorded by patient, clinician or connected cuff, and calibrate against the
usable windows recorded within +/- 10 minutes of them."""
import datetime as dt
import inspect
import json

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from clinops.base.audit import SYSTEM
from clinops.base.models import AuditEvent
from monitoring.bp import cuff_calibration, estimation
from monitoring.models import Calibration, CuffReading
from patients import services as services_patients
from tests.factories import make_clinician, make_device, make_patient, make_team

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]
T0 = timezone.now().replace(microsecond=0) - dt.timedelta(hours=2)


def reading_body(**overrides):
    return {"measured_at": T0.isoformat(), "sbp_mmhg": 142, "dbp_mmhg": 88, **overrides}


def test_a_patient_enters_their_own_cuff_reading(patient):
    client = APIClient()
    client.force_login(patient.user)
    response = client.post(f"/api/v1/patients/{patient.pk}/cuff-readings/", reading_body(), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["source"] == "patient" and response.json()["calibrated"] is False
    event = AuditEvent.objects.filter(action="cuff_reading.record").get()
    assert event.actor_user == patient.user and event.patient == patient


def test_a_care_team_clinician_enters_a_reading_and_an_outsider_cannot(patient, team):
    member, outsider = APIClient(), APIClient()
    member.force_login(make_clinician(team=team).user)
    outsider.force_login(make_clinician(team=make_team()).user)
    url = f"/api/v1/patients/{patient.pk}/cuff-readings/"
    assert member.post(url, reading_body(), format="json").json()["source"] == "clinician"
    assert outsider.post(url, reading_body(), format="json").status_code == 404
    other_patient = APIClient()
    other_patient.force_login(make_patient(team=team).user)
    assert other_patient.post(url, reading_body(), format="json").status_code == 404
    assert CuffReading.objects.count() == 1


def test_a_connected_cuff_uploads_a_reading_for_its_patient(patient):
    _, key = make_device(patient)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.post("/api/v1/cuff-readings/", data=json.dumps(reading_body()), content_type="application/json")
    assert response.status_code == 201
    assert response.json()["patient"] == patient.pk and response.json()["source"] == "device"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"sbp_mmhg": 400}, "sbp_mmhg"),
        ({"dbp_mmhg": 5}, "dbp_mmhg"),
        ({"sbp_mmhg": 80, "dbp_mmhg": 90}, "dbp_mmhg"),
        ({"measured_at": (timezone.now() + dt.timedelta(hours=1)).isoformat()}, "measured_at"),
        ({"sbp_mmhg": "high"}, "sbp_mmhg"),
        ({"measured_at": "0001-01-01T00:05:00Z"}, "measured_at"),
        ({"measured_at": (timezone.now() - dt.timedelta(days=400)).isoformat()}, "measured_at"),
    ],
)
def test_an_implausible_reading_is_refused_field_by_field(patient, overrides, field):
    client = APIClient()
    client.force_login(patient.user)
    response = client.post(f"/api/v1/patients/{patient.pk}/cuff-readings/", reading_body(**overrides), format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body or field in body["extra"].get("fields", {}), body
    assert CuffReading.objects.count() == 0


def test_a_reading_calibrates_against_usable_windows_within_10_minutes(patient, processed_window_at):
    near = [processed_window_at(T0 - dt.timedelta(minutes=5), 0), processed_window_at(T0 + dt.timedelta(minutes=4), 1)]
    processed_window_at(T0 - dt.timedelta(minutes=15), 2)
    processed_window_at(T0 + dt.timedelta(minutes=11), 3)
    reading = cuff_calibration.cuff_reading_record(actor=SYSTEM, patient=patient, measured_at=T0, sbp_mmhg=140, dbp_mmhg=85, source="clinician")
    calibration = Calibration.objects.get(cuff_reading=reading)
    assert set(calibration.windows.all()) == set(near)
    pats = [w.analyses.get().features["pat_foot_ms_median"] for w in near]
    assert calibration.features["pat_foot_ms_median"] == pytest.approx(sum(pats) / 2)
    assert calibration.calibrated_at == T0


def test_a_reading_without_windows_waits_and_calibrates_when_a_window_arrives(patient, processed_window_at):
    reading = cuff_calibration.cuff_reading_record(actor=SYSTEM, patient=patient, measured_at=T0, sbp_mmhg=140, dbp_mmhg=85, source="patient")
    assert not Calibration.objects.exists()
    window = processed_window_at(T0 + dt.timedelta(minutes=2))
    assert [c.cuff_reading for c in cuff_calibration.calibrations_touching(windows=[window])] == [reading]
    assert list(Calibration.objects.get().windows.all()) == [window]


def test_a_retried_cuff_upload_is_the_same_reading(patient):
    _, key = make_device(patient)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    first = client.post("/api/v1/cuff-readings/", data=json.dumps(reading_body()), content_type="application/json")
    again = client.post("/api/v1/cuff-readings/", data=json.dumps(reading_body()), content_type="application/json")
    assert first.json()["id"] == again.json()["id"]
    assert CuffReading.objects.count() == 1


@pytest.mark.parametrize("status", ["pending", "withdrawn"])
def test_no_cuff_reading_is_accepted_without_consent(patient, status):
    services_patients.patient_consent_record(actor=SYSTEM, patient=patient, status=status)
    client = APIClient()
    client.force_login(patient.user)
    response = client.post(f"/api/v1/patients/{patient.pk}/cuff-readings/", reading_body(), format="json")
    assert response.status_code == 403
    assert not CuffReading.objects.exists()


def test_a_calibration_used_by_an_estimate_no_longer_changes(patient, processed_window_at):
    from monitoring.bp import registry
    from tests.monitoring.test_bp_registry import register

    registry.model_version_promote(actor=SYSTEM, model=register("cf", test_mae=5.0, kind="baseline"))
    first = processed_window_at(T0 - dt.timedelta(minutes=5), 0)
    reading = cuff_calibration.cuff_reading_record(actor=SYSTEM, patient=patient, measured_at=T0, sbp_mmhg=140, dbp_mmhg=85, source="clinician")
    [estimate] = estimation.window_estimate(window_id=first.pk)
    features = dict(reading.calibration.features)
    processed_window_at(T0 + dt.timedelta(minutes=5), 1)
    calibration = Calibration.objects.get(cuff_reading=reading)
    assert list(calibration.windows.all()) == [first] and calibration.features == features
    assert any("part of its own calibration" in flag for flag in estimate.flags)


def test_windows_processed_before_their_calibration_are_estimated_once_it_exists(
        patient, processed_window_at, django_capture_on_commit_callbacks):
    from monitoring.bp import registry
    from tests.monitoring.test_bp_registry import register

    registry.model_version_promote(actor=SYSTEM, model=register("cf", test_mae=5.0, kind="baseline"))
    near = processed_window_at(T0 + dt.timedelta(minutes=2), 0)
    later = processed_window_at(T0 + dt.timedelta(minutes=30), 1)
    before = processed_window_at(T0 - dt.timedelta(minutes=30), 2)
    assert estimation.window_estimate(window_id=later.pk) == []  # no calibration, no estimate
    with django_capture_on_commit_callbacks() as sent:
        cuff_calibration.cuff_reading_record(actor=SYSTEM, patient=patient, measured_at=T0, sbp_mmhg=140, dbp_mmhg=85,
                                     source="clinician")
    queued = [window_id for c in sent if c.__qualname__ == "send monitoring.tasks.estimate_windows"
              for window_id in inspect.getclosurevars(c).nonlocals["args"][0]]
    # The calibration cannot serve a window recorded before it (more than the pairing time).
    assert queued == [near.pk, later.pk]
    for window_id in queued:
        estimation.window_estimate(window_id=window_id)
    assert [len(w.estimates.all()) for w in (near, later, before)] == [1, 1, 0]
