"""Test data built through the services, so every row has its audit trail like in production."""
from __future__ import annotations

import datetime as dt
import itertools

from clinops.base.audit import SYSTEM
from patients import services
from patients.models import CareTeam, Clinician, ConsentStatus, Device, Patient, Profession, Sex, User

_seq = itertools.count(1)


def make_clinician(*, team: CareTeam | None = None, username: str | None = None) -> Clinician:
    n = next(_seq)
    clinician = services.clinician_create(
        actor=SYSTEM, username=username or f"clinician{n}", password="pw-clinician",
        first_name="Test", last_name=f"Clinician {n}", profession=Profession.PHYSICIAN,
    )
    if team is not None:
        services.care_team_add_clinician(actor=SYSTEM, team=team, clinician=clinician)
    return clinician


def make_team(name: str | None = None) -> CareTeam:
    return services.care_team_create(actor=SYSTEM, name=name or f"Team {next(_seq)}")


def make_patient(*, team: CareTeam | None = None, portal: bool = True) -> Patient:
    n = next(_seq)
    patient = services.patient_create(
        actor=SYSTEM, medical_record_number=f"MRN-{n:05d}", given_name="Test", family_name=f"Patient {n}",
        date_of_birth=dt.date(1960, 1, 1) + dt.timedelta(days=n), sex=Sex.FEMALE if n % 2 else Sex.MALE,
        consent_status=ConsentStatus.GIVEN,
        username=f"patient{n}" if portal else None, password="pw-patient" if portal else None,
    )
    if team is not None:
        services.care_team_add_patient(actor=SYSTEM, team=team, patient=patient)
    return patient


def make_device(patient: Patient) -> tuple[Device, str]:
    n = next(_seq)
    return services.device_register(
        actor=SYSTEM, patient=patient, make="Acme", model="Wrist-2", firmware="2.0.1", serial=f"SN-{n:06d}"
    )


def make_admin() -> User:
    return services.admin_create(actor=SYSTEM, username=f"admin{next(_seq)}", password="pw-admin")
