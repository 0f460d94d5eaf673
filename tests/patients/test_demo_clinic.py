"""The demo clinic: 2 clinicians, 1 admin, 6 patients with a wearable and a home cuff, printed logins,
usable keys. (The clinic alone, `--no-history`; the weeks of history: test_demo_history.py.)"""
import json

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from clinops.base.models import AuditEvent
from patients.models import CareTeam, Clinician, CuffModel, Device, DeviceKind, Patient, Role, User

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_the_clinic_and_prints_logins(tmp_path, capsys):
    keys_file = tmp_path / "keys.json"
    call_command("seed_demo", keys_file=str(keys_file), history=False)
    out = capsys.readouterr().out
    assert Clinician.objects.count() == 2
    assert User.objects.filter(role=Role.ADMIN).count() == 1
    assert Patient.objects.count() == 6
    assert all(p.user_id for p in Patient.objects.all())
    # Each patient: one wearable and one home cuff; all but one cuff of the model the admin validated.
    for patient in Patient.objects.all():
        assert sorted(patient.devices.values_list("kind", flat=True)) == [DeviceKind.CUFF, DeviceKind.WEARABLE]
    validated = CuffModel.objects.get(validated=True)
    assert (validated.make, validated.model, validated.validation_reference) == (
        "Omron", "M3 Comfort (HEM-7155-E)", "STRIDE BP validated device list")
    assert validated.changed_by.username == "admin"
    assert Device.objects.filter(kind=DeviceKind.CUFF, make="Omron").count() == 5
    assert AuditEvent.objects.filter(action="cuff_model.validate").count() == 1
    assert CareTeam.objects.count() == 2
    for username in ["admin", "dr.okafor", "nurse.lindqvist", "patient1", "patient6"]:
        assert username in out
    keys = json.loads(keys_file.read_text())
    assert len(keys) == 6
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {keys[0]['api_key']}")
    assert client.get("/api/v1/device/").json()["serial"] == keys[0]["serial"]
    assert AuditEvent.objects.filter(action="patient.create").count() == 6
    # Every demo patient starts on a plan set by their team's clinician.
    from therapy.selectors import plan_current

    plans = [plan_current(p) for p in Patient.objects.order_by("medical_record_number")]
    assert all(plan is not None and plan.created_by.role == Role.CLINICIAN for plan in plans)
    assert plans[4].exclusions == [{"kind": "irregular rhythm", "detail": "paroxysmal atrial fibrillation"}]


def test_seeding_twice_keeps_one_clinic_and_rotates_the_device_keys(tmp_path):
    first, second = tmp_path / "1.json", tmp_path / "2.json"
    call_command("seed_demo", keys_file=str(first), history=False)
    call_command("seed_demo", keys_file=str(second), history=False)
    assert Patient.objects.count() == 6 and Device.objects.count() == 12
    old_key = json.loads(first.read_text())[0]["api_key"]
    new_key = json.loads(second.read_text())[0]["api_key"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {old_key}")
    assert client.get("/api/v1/device/").status_code == 403
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {new_key}")
    assert client.get("/api/v1/device/").status_code == 200


def test_every_demo_device_replays_a_shipped_recording(tmp_path):
    from django.conf import settings

    from monitoring.signals.recordings import challenge2015_records

    keys_file = tmp_path / "keys.json"
    call_command("seed_demo", keys_file=str(keys_file), history=False)
    shipped = set(challenge2015_records(settings.RECORDINGS_DIR))
    assert {device["record"] for device in json.loads(keys_file.read_text())} <= shipped
