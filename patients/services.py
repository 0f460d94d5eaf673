"""Writes for people, care teams, devices and consent. One transaction and one audit row each."""
from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from clinops.base.audit import Actor, audit_record
from clinops.base.errors import ApplicationError, clean_text
from patients.models import (
    CareTeam,
    Clinician,
    ConsentStatus,
    CuffModel,
    Device,
    DeviceAPIKey,
    DeviceKind,
    Patient,
    Profession,
    Role,
    Sex,
    User,
)


def _user_create(*, username: str, password: str, role: Role, first_name: str, last_name: str, email: str) -> User:
    if User.objects.filter(username=username).exists():
        raise ApplicationError("This username is taken.", extra={"fields": {"username": ["taken"]}})
    user = User(username=username, role=role, first_name=first_name, last_name=last_name, email=email)
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    return user


@transaction.atomic
def clinician_create(
    *,
    actor: Actor,
    username: str,
    password: str,
    first_name: str,
    last_name: str,
    profession: Profession,
    email: str = "",
) -> Clinician:
    user = _user_create(
        username=username, password=password, role=Role.CLINICIAN,
        first_name=first_name, last_name=last_name, email=email,
    )
    clinician = Clinician.objects.create(user=user, profession=profession)
    audit_record(actor=actor, action="clinician.create", target=clinician, detail={"user_id": user.pk})
    return clinician


@transaction.atomic
def admin_create(*, actor: Actor, username: str, password: str, email: str = "") -> User:
    user = _user_create(
        username=username, password=password, role=Role.ADMIN,
        first_name="", last_name="", email=email,
    )
    user.is_staff = True
    user.is_superuser = True
    user.save(update_fields=["is_staff", "is_superuser"])
    audit_record(actor=actor, action="admin.create", target=user)
    return user


@transaction.atomic
def patient_create(
    *,
    actor: Actor,
    medical_record_number: str,
    given_name: str,
    family_name: str,
    date_of_birth: dt.date,
    sex: Sex,
    consent_status: ConsentStatus = ConsentStatus.PENDING,
    username: str | None = None,
    password: str | None = None,
    phone: str = "",
) -> Patient:
    """Register a patient; with a username and password they also get a portal account. `phone`:
    where the care team reaches them about an escalation."""
    phone_max_length = Patient._meta.get_field("phone").max_length
    assert phone_max_length is not None  # Patient.phone is a CharField declared with its max_length
    phone = clean_text("phone", phone, max_length=phone_max_length)
    if date_of_birth > timezone.localdate():
        raise ApplicationError(
            "Date of birth is in the future.", extra={"fields": {"date_of_birth": ["in the future"]}}
        )
    if Patient.objects.filter(medical_record_number=medical_record_number).exists():
        raise ApplicationError(
            "A patient with this medical record number exists.",
            extra={"fields": {"medical_record_number": ["already registered"]}},
        )
    user = None
    if username:
        if not password:
            raise ApplicationError("A portal account needs a password.", extra={"fields": {"password": ["required"]}})
        user = _user_create(
            username=username, password=password, role=Role.PATIENT,
            first_name=given_name, last_name=family_name, email="",
        )
    patient = Patient.objects.create(
        user=user,
        medical_record_number=medical_record_number,
        given_name=given_name,
        family_name=family_name,
        date_of_birth=date_of_birth,
        sex=sex,
        consent_status=consent_status,
        consent_changed_at=timezone.now() if consent_status != ConsentStatus.PENDING else None,
        phone=phone,
    )
    # Names stay out of the audit detail: it holds ids, so an audit export is not a patient list.
    audit_record(
        actor=actor, action="patient.create", target=patient, patient=patient,
        detail={"consent_status": consent_status, "portal_account": user is not None},
    )
    return patient


@transaction.atomic
def patient_consent_record(*, actor: Actor, patient: Patient, status: ConsentStatus, note: str = "") -> Patient:
    """Record the patient's consent decision (given or withdrawn)."""
    patient = Patient.objects.select_for_update().get(pk=patient.pk)
    previous = patient.consent_status
    patient.consent_status = status
    patient.consent_changed_at = timezone.now()
    patient.save(update_fields=["consent_status", "consent_changed_at"])
    audit_record(
        actor=actor, action="patient.consent", target=patient, patient=patient,
        detail={"from": previous, "to": status, "note": note},
    )
    return patient


@transaction.atomic
def care_team_create(*, actor: Actor, name: str) -> CareTeam:
    if CareTeam.objects.filter(name=name).exists():
        raise ApplicationError("A care team with this name exists.", extra={"fields": {"name": ["taken"]}})
    team = CareTeam.objects.create(name=name)
    audit_record(actor=actor, action="care_team.create", target=team, detail={"name": name})
    return team


@transaction.atomic
def care_team_add_clinician(*, actor: Actor, team: CareTeam, clinician: Clinician) -> CareTeam:
    team.clinicians.add(clinician)
    audit_record(actor=actor, action="care_team.add_clinician", target=team, detail={"clinician_id": clinician.pk})
    return team


@transaction.atomic
def care_team_remove_clinician(*, actor: Actor, team: CareTeam, clinician: Clinician) -> CareTeam:
    team.clinicians.remove(clinician)
    audit_record(actor=actor, action="care_team.remove_clinician", target=team, detail={"clinician_id": clinician.pk})
    return team


@transaction.atomic
def care_team_add_patient(*, actor: Actor, team: CareTeam, patient: Patient) -> CareTeam:
    team.patients.add(patient)
    audit_record(actor=actor, action="care_team.add_patient", target=team, patient=patient)
    return team


@transaction.atomic
def device_register(
    *, actor: Actor, patient: Patient, make: str, model: str, firmware: str, serial: str,
    kind: str = DeviceKind.WEARABLE,
) -> tuple[Device, str]:
    """Bind a new device (a wearable, or a home cuff) to a patient and issue its API key (a
    connected cuff uploads its readings with it; a plain cuff just names the readings typed in).

    Returns the device and the plaintext key, which is shown once and never stored (only its hash).
    """
    if Device.objects.filter(serial=serial).exists():
        raise ApplicationError(
            "A device with this serial number is registered.", extra={"fields": {"serial": ["already registered"]}}
        )
    device = Device.objects.create(patient=patient, make=make, model=model, firmware=firmware, serial=serial, kind=kind)
    if kind == DeviceKind.CUFF:
        CuffModel.objects.get_or_create(make=make, model=model)  # listed for an administrator to judge
    audit_record(
        actor=actor, action="device.register", target=device, patient=patient,
        detail={"make": make, "model": model, "firmware": firmware, "serial": serial, "kind": kind},
    )
    return device, device_key_issue(actor=actor, device=device)


@transaction.atomic
def device_key_issue(*, actor: Actor, device: Device) -> str:
    """Issue a new API key for a device and revoke its earlier ones (key rotation).

    Returns the plaintext key, shown once; only its hash is stored.
    """
    if device.is_revoked:
        raise ApplicationError("A revoked device cannot get a new key; register a new device.")
    revoked = 0
    for old_key in device.api_keys.filter(revoked=False):
        old_key.revoked = True
        old_key.save(update_fields=["revoked"])
        revoked += 1
    api_key, key = DeviceAPIKey.objects.create_key(name=f"device {device.serial}", device=device)
    audit_record(
        actor=actor, action="device.key_issue", target=device, patient=device.patient,
        detail={"key_prefix": api_key.prefix, "revoked_keys": revoked},
    )
    return key


@transaction.atomic
def device_revoke(*, actor: Actor, device: Device, reason: str) -> Device:
    """Revoke a device for good: its keys stop working at once. Its past data is kept."""
    if not reason.strip():
        raise ApplicationError("Say why the device is revoked.", extra={"fields": {"reason": ["required"]}})
    device = Device.objects.select_for_update().get(pk=device.pk)
    if device.is_revoked:
        return device
    device.revoked_at = timezone.now()
    device.revoked_reason = reason
    device.save(update_fields=["revoked_at", "revoked_reason"])
    for api_key in device.api_keys.filter(revoked=False):
        api_key.revoked = True
        api_key.save(update_fields=["revoked"])
    audit_record(actor=actor, action="device.revoke", target=device, patient=device.patient, detail={"reason": reason})
    return device


@transaction.atomic
def device_firmware_update(*, actor: Actor, device: Device, firmware: str) -> Device:
    """Record a device's new firmware version (drift is tracked per firmware)."""
    device = Device.objects.select_for_update().get(pk=device.pk)
    previous = device.firmware
    if previous == firmware:
        return device
    device.firmware = firmware
    device.save(update_fields=["firmware"])
    audit_record(
        actor=actor, action="device.firmware_update", target=device, patient=device.patient,
        detail={"from": previous, "to": firmware},
    )
    return device


@transaction.atomic
def cuff_model_set_validated(*, actor: User, cuff_model: CuffModel, validated: bool, reference: str) -> CuffModel:
    """An administrator marks a cuff model validated (its readings may then support an automatic
    dose change) or withdraws the mark, naming the evidence (e.g. "STRIDE BP list, 2024")."""
    if not (isinstance(actor, User) and actor.is_superuser):
        raise ApplicationError("Only an administrator may mark a cuff model validated.", status_code=403)
    if validated and not reference.strip():
        raise ApplicationError("Name where the validation is published.",
                               extra={"fields": {"validation_reference": ["required to mark a cuff validated"]}})
    cuff_model.validated = validated
    cuff_model.validation_reference = reference.strip()
    cuff_model.changed_at, cuff_model.changed_by = timezone.now(), actor
    cuff_model.save()
    audit_record(actor=actor, action="cuff_model.validate" if validated else "cuff_model.unvalidate", target=cuff_model,
                 detail={"make": cuff_model.make, "model": cuff_model.model, "reference": cuff_model.validation_reference})
    return cuff_model


@transaction.atomic
def care_team_appoint_lead(*, actor: User, team: CareTeam, clinician: Clinician) -> CareTeam:
    """An administrator names a clinician of the team its clinical lead (audited)."""
    if not (isinstance(actor, User) and actor.is_clinops_admin):
        raise ApplicationError("Only an administrator appoints a clinical lead.", status_code=403)
    if not team.clinicians.filter(pk=clinician.pk).exists():
        raise ApplicationError("A clinical lead is a clinician of the team.",
                               extra={"fields": {"clinician": ["not in this care team"]}})
    team.clinical_leads.add(clinician)
    audit_record(actor=actor, action="care_team.appoint_lead", target=team, detail={"clinician_id": clinician.pk})
    return team


def is_clinical_lead(user: User) -> bool:
    """The user leads at least one care team."""
    clinician = getattr(user, "clinician", None)
    return clinician is not None and clinician.leads_care_teams.exists()
