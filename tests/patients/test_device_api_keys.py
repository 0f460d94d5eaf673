"""Devices authenticate with hashed API keys, write only for their own patient, and can be revoked."""
import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from clinops.base.audit import SYSTEM
from patients import services
from patients.models import DeviceAPIKey
from patients.permissions import device_may_write_for
from tests.factories import make_clinician, make_device, make_patient, make_team

pytestmark = pytest.mark.django_db

DEVICE_SELF = "/api/v1/device/"


def with_key(client, key):
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def test_a_registered_device_key_identifies_its_device_and_patient(api_client):
    patient = make_patient()
    device, key = make_device(patient)
    response = with_key(api_client, key).get(DEVICE_SELF)
    assert response.status_code == 200
    assert response.json()["serial"] == device.serial
    assert response.json()["patient"] == patient.pk


def test_only_a_hash_of_the_key_is_stored(api_client):
    device, key = make_device(make_patient())
    stored = DeviceAPIKey.objects.get(device=device)
    assert key not in stored.hashed_key and key.split(".")[1] not in stored.hashed_key
    assert stored.is_valid(key)


def test_unknown_key_gets_401(api_client):
    make_device(make_patient())
    response = with_key(api_client, "AbCdEfGh.not-a-real-secret").get(DEVICE_SELF)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Api-Key"


def test_a_key_with_the_right_prefix_but_wrong_secret_gets_401(api_client):
    _, key = make_device(make_patient())
    prefix = key.split(".")[0]
    assert with_key(api_client, f"{prefix}.wrong-secret").get(DEVICE_SELF).status_code == 401


def test_missing_key_is_refused(api_client):
    assert api_client.get(DEVICE_SELF).status_code in {401, 403}


def test_revoked_device_key_gets_403(api_client):
    device, key = make_device(make_patient())
    services.device_revoke(actor=SYSTEM, device=device, reason="lost by the patient")
    response = with_key(api_client, key).get(DEVICE_SELF)
    assert response.status_code == 403
    assert "revoked" in response.json()["message"]


def test_rotated_key_stops_working_and_the_new_one_works():
    device, old_key = make_device(make_patient())
    new_key = services.device_key_issue(actor=SYSTEM, device=device)
    assert with_key(APIClient(), old_key).get(DEVICE_SELF).status_code == 403
    assert with_key(APIClient(), new_key).get(DEVICE_SELF).status_code == 200


def test_a_device_writes_only_for_its_own_patient():
    patient_a, patient_b = make_patient(), make_patient()
    device_a, _ = make_device(patient_a)
    assert device_may_write_for(device_a, patient_a)
    assert not device_may_write_for(device_a, patient_b)


def test_a_revoked_device_writes_for_nobody():
    patient = make_patient()
    device, _ = make_device(patient)
    device = services.device_revoke(actor=SYSTEM, device=device, reason="replaced")
    assert not device_may_write_for(device, patient)


def test_a_device_key_does_not_open_the_clinical_api(api_client):
    patient = make_patient()
    _, key = make_device(patient)
    response = with_key(api_client, key).get(reverse("patients:patient-detail", args=[patient.pk]))
    assert response.status_code in {401, 403}


def test_care_team_clinician_revokes_a_device_and_it_is_audited(client_for):
    from clinops.base.models import AuditEvent

    team = make_team()
    clinician = make_clinician(team=team)
    device, key = make_device(make_patient(team=team))
    response = client_for(clinician.user).post(f"/api/v1/devices/{device.pk}/revoke/", {"reason": "stolen"}, format="json")
    assert response.status_code == 200 and response.json()["revoked"] is True
    event = AuditEvent.objects.filter(action="device.revoke").get()
    assert event.actor_user == clinician.user and event.detail == {"reason": "stolen"}


def test_revoking_needs_a_reason(client_for):
    team = make_team()
    clinician = make_clinician(team=team)
    device, _ = make_device(make_patient(team=team))
    response = client_for(clinician.user).post(f"/api/v1/devices/{device.pk}/revoke/", {"reason": ""}, format="json")
    assert response.status_code == 400
    assert "reason" in response.json()
    device.refresh_from_db()
    assert not device.is_revoked


def test_clinician_of_another_team_cannot_revoke_a_device(client_for):
    device, _ = make_device(make_patient(team=make_team()))
    outsider = make_clinician(team=make_team())
    response = client_for(outsider.user).post(f"/api/v1/devices/{device.pk}/revoke/", {"reason": "x"}, format="json")
    assert response.status_code == 404


def test_the_patient_cannot_revoke_their_own_device(client_for):
    patient = make_patient(team=make_team())
    device, _ = make_device(patient)
    response = client_for(patient.user).post(f"/api/v1/devices/{device.pk}/revoke/", {"reason": "x"}, format="json")
    assert response.status_code == 403
