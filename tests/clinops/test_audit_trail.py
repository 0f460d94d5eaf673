"""Every service writes its audit row in the same transaction; the app can never change one."""
import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction

from clinops.base.audit import SYSTEM, audit_record
from clinops.base.models import ActorType, AuditEvent, AuditTrailIsAppendOnly
from patients import services
from patients.models import ConsentStatus, Sex
from tests.factories import make_clinician, make_device, make_patient, make_team

pytestmark = pytest.mark.django_db


def last_event() -> AuditEvent:
    return AuditEvent.objects.order_by("-id").first()


@pytest.mark.parametrize(
    "use_case, action",
    [
        (lambda: make_team(), "care_team.create"),
        (lambda: make_clinician(), "clinician.create"),
        (lambda: services.admin_create(actor=SYSTEM, username="root2", password="x"), "admin.create"),
        (lambda: make_patient(), "patient.create"),
        (lambda: services.patient_consent_record(actor=SYSTEM, patient=make_patient(), status=ConsentStatus.WITHDRAWN), "patient.consent"),
        (lambda: services.care_team_add_clinician(actor=SYSTEM, team=make_team(), clinician=make_clinician()), "care_team.add_clinician"),
        (lambda: services.care_team_remove_clinician(actor=SYSTEM, team=make_team(), clinician=make_clinician()), "care_team.remove_clinician"),
        (lambda: services.care_team_add_patient(actor=SYSTEM, team=make_team(), patient=make_patient()), "care_team.add_patient"),
        (lambda: make_device(make_patient()), "device.key_issue"),
        (lambda: services.device_key_issue(actor=SYSTEM, device=make_device(make_patient())[0]), "device.key_issue"),
        (lambda: services.device_revoke(actor=SYSTEM, device=make_device(make_patient())[0], reason="lost"), "device.revoke"),
        (lambda: services.device_firmware_update(actor=SYSTEM, device=make_device(make_patient())[0], firmware="9.9"), "device.firmware_update"),
    ],
)
def test_each_service_writes_an_audit_event(use_case, action):
    use_case()
    event = last_event()
    assert event.action == action
    assert event.actor_type == ActorType.SYSTEM and event.actor_label == "system"
    assert event.object_id and event.object_type


def test_registering_a_device_records_the_registration_and_the_key():
    patient = make_patient()
    device, _ = make_device(patient)
    actions = list(AuditEvent.objects.filter(object_id=str(device.pk), object_type="patients.Device").values_list("action", flat=True))
    assert actions == ["device.register", "device.key_issue"]
    assert AuditEvent.objects.filter(action="device.register").get().patient == patient


def test_a_person_acting_is_recorded_by_user():
    team = make_team()
    clinician = make_clinician(team=team)
    patient = make_patient(team=team)
    services.patient_consent_record(actor=clinician.user, patient=patient, status=ConsentStatus.WITHDRAWN, note="phone call")
    event = last_event()
    assert (event.actor_type, event.actor_user, event.actor_label) == (ActorType.USER, clinician.user, clinician.user.username)
    assert event.detail == {"from": "given", "to": "withdrawn", "note": "phone call"}
    assert event.patient == patient


def test_audit_record_names_a_device_actor_by_its_serial():
    device, _ = make_device(make_patient())
    with transaction.atomic():
        event = audit_record(actor=device, action="device.firmware_report", target=device, patient=device.patient)
    assert (event.actor_type, event.actor_device, event.actor_label) == (ActorType.DEVICE, device, f"device:{device.serial}")


def test_the_audit_detail_holds_no_patient_names():
    patient = make_patient()
    event = AuditEvent.objects.filter(action="patient.create").get()
    assert patient.family_name not in str(event.detail) and patient.given_name not in str(event.detail)


def test_a_failed_service_leaves_no_audit_event_and_no_change():
    make_patient()
    before = AuditEvent.objects.count()
    with pytest.raises(Exception):
        services.patient_create(
            actor=SYSTEM, medical_record_number="MRN-X", given_name="A", family_name="B",
            date_of_birth=dt.date(2999, 1, 1), sex=Sex.MALE,
        )
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_is_refused():
    team = make_team()
    with pytest.raises(RuntimeError, match="inside the service's transaction"):
        audit_record(actor=SYSTEM, action="care_team.rename", target=team)


def test_an_audit_event_cannot_be_saved_again():
    make_team()
    event = last_event()
    event.action = "something.else"
    with pytest.raises(AuditTrailIsAppendOnly):
        event.save()
    assert last_event().action == "care_team.create"


def test_an_audit_event_cannot_be_deleted():
    make_team()
    with pytest.raises(AuditTrailIsAppendOnly):
        last_event().delete()
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.count() == 1


def test_audit_events_cannot_be_bulk_updated():
    make_team()
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.filter(action="care_team.create").update(action="x")
    with pytest.raises(AuditTrailIsAppendOnly):
        AuditEvent.objects.bulk_update([last_event()], ["action"])


def test_the_database_refuses_a_raw_update():
    make_team()
    with pytest.raises(IntegrityError if connection.vendor == "sqlite" else Exception):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE clinops_auditevent SET action = 'forged'")
    assert last_event().action == "care_team.create"


def test_the_admin_cannot_add_change_or_delete_audit_events(client):
    from tests.factories import make_admin

    admin_user = make_admin()
    client.force_login(admin_user)
    event = last_event()
    assert client.get("/admin/clinops/auditevent/").status_code == 200
    assert client.get("/admin/clinops/auditevent/add/").status_code == 403
    assert client.post(f"/admin/clinops/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    response = client.post(f"/admin/clinops/auditevent/{event.pk}/change/", {"action": "forged"})
    assert response.status_code in {200, 403}
    event_after = AuditEvent.objects.get(pk=event.pk)
    assert event_after.action == event.action


def test_the_admin_cannot_grant_privileges_and_its_changes_to_a_person_are_audited(client):
    from tests.factories import make_admin, make_patient

    admin_user, patient = make_admin(), make_patient()
    user = patient.user
    client.force_login(admin_user)
    page = client.get(f"/admin/patients/user/{user.pk}/change/")
    assert page.status_code == 200
    form = {"username": user.username, "first_name": "Renamed", "last_name": user.last_name, "email": "",
            "is_active": "on", "is_superuser": "on", "is_staff": "on", "_save": "Save"}
    answer = client.post(f"/admin/patients/user/{user.pk}/change/", form)
    assert answer.status_code == 302, answer.content.decode()[:2000]
    user.refresh_from_db()
    assert user.first_name == "Renamed" and not user.is_superuser and not user.is_staff
    event = AuditEvent.objects.get(action="user.admin_change")
    assert event.actor_user == admin_user and event.patient == patient and event.detail["changed"] == ["first_name"]
    assert client.get("/admin/patients/user/add/").status_code == 403
