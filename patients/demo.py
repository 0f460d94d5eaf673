"""The demo clinic: 2 clinicians, 1 admin, 6 patients, each with a wearable replaying a real record.

Everything is written through the services, so the demo's audit trail is real too.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction

from clinops.audit import SYSTEM
from patients import services
from patients.models import CareTeam, ConsentStatus, Device, Profession, Sex, User
from therapy.services import plan_create

DEMO_PASSWORD = "clinops-demo"
DEMO_DEVICE_MAKE = "ClinOps Reference"
DEMO_DEVICE_MODEL = "WristBP-1"
DEMO_FIRMWARE = "1.4.2"

CLINICIANS = [
    # username, first, last, profession, team
    ("dr.okafor", "Adaeze", "Okafor", Profession.PHYSICIAN, "Hypertension clinic A"),
    ("nurse.lindqvist", "Sara", "Lindqvist", Profession.NURSE, "Hypertension clinic B"),
]
# username, given, family, date of birth, sex, team, challenge2015 record replayed by the device
PATIENTS = [
    ("patient1", "Maria", "Santos", dt.date(1958, 3, 14), Sex.FEMALE, "Hypertension clinic A", "v140s"),
    ("patient2", "John", "Baker", dt.date(1949, 11, 2), Sex.MALE, "Hypertension clinic A", "v154s"),
    ("patient3", "Aiko", "Tanaka", dt.date(1967, 7, 21), Sex.FEMALE, "Hypertension clinic A", "v166s"),
    ("patient4", "Samuel", "Mensah", dt.date(1972, 1, 30), Sex.MALE, "Hypertension clinic B", "v162s"),
    ("patient5", "Fatima", "Haddad", dt.date(1955, 5, 9), Sex.FEMALE, "Hypertension clinic B", "v201l"),
    ("patient6", "Piotr", "Nowak", dt.date(1961, 9, 17), Sex.MALE, "Hypertension clinic B", "v205l"),
]
ADMIN_USERNAME = "admin"
# The plan each demo patient starts on, set by their team's clinician (DESIGN 4 defaults otherwise).
DEMO_PLANS: list[dict] = [
    {"template": "ace-ccb-thiazide", "auto_step_up": True, "auto_step_down": True, "max_auto_rung": 2},
    {"template": "ace-ccb-thiazide", "current_rung": 2},
    {"template": "ace-ccb-thiazide", "target_sbp_mmhg": 130.0, "target_dbp_mmhg": 80.0, "auto_step_down": True},
    {"template": "arb-ccb-thiazide", "auto_step_up": True, "max_auto_rung": 1},
    {"template": "arb-ccb-thiazide", "current_rung": 1,
     "exclusions": [{"kind": "irregular rhythm", "detail": "paroxysmal atrial fibrillation"}]},
    {"template": "arb-ccb-thiazide"},
]


@dataclass
class DemoDevice:
    patient_username: str
    serial: str
    record: str
    api_key: str


@dataclass
class DemoClinic:
    created: bool
    logins: list[tuple[str, str, str]] = field(default_factory=list)  # (role, username, password)
    devices: list[DemoDevice] = field(default_factory=list)


@transaction.atomic
def demo_clinic_seed() -> DemoClinic:
    """Create the demo clinic once; on later runs, keep it and issue fresh device keys.

    Device keys are stored hashed, so the plaintext can only be handed out when issued.
    """
    created = not User.objects.filter(username=ADMIN_USERNAME).exists()
    if created:
        services.admin_create(actor=SYSTEM, username=ADMIN_USERNAME, password=DEMO_PASSWORD)
        teams: dict[str, CareTeam] = {}
        leads: dict[str, User] = {}
        for username, first, last, profession, team_name in CLINICIANS:
            clinician = services.clinician_create(
                actor=SYSTEM, username=username, password=DEMO_PASSWORD,
                first_name=first, last_name=last, profession=profession,
            )
            teams[team_name] = services.care_team_create(actor=SYSTEM, name=team_name)
            services.care_team_add_clinician(actor=SYSTEM, team=teams[team_name], clinician=clinician)
            leads[team_name] = clinician.user
        for number, (username, given, family, dob, sex, team_name, record) in enumerate(PATIENTS, start=1):
            patient = services.patient_create(
                actor=SYSTEM, medical_record_number=f"DEMO-{number:04d}", given_name=given,
                family_name=family, date_of_birth=dob, sex=sex, consent_status=ConsentStatus.GIVEN,
                username=username, password=DEMO_PASSWORD,
            )
            services.care_team_add_patient(actor=SYSTEM, team=teams[team_name], patient=patient)
            services.device_register(
                actor=SYSTEM, patient=patient, make=DEMO_DEVICE_MAKE, model=DEMO_DEVICE_MODEL,
                firmware=DEMO_FIRMWARE, serial=f"WBP-{record.upper()}",
            )
            plan_create(actor=leads[team_name], patient=patient, reason="demo: starting plan", **DEMO_PLANS[number - 1])
    clinic = DemoClinic(created=created)
    clinic.logins.append(("admin", ADMIN_USERNAME, DEMO_PASSWORD))
    clinic.logins += [("clinician", c[0], DEMO_PASSWORD) for c in CLINICIANS]
    clinic.logins += [("patient", p[0], DEMO_PASSWORD) for p in PATIENTS]
    for username, *_, record in PATIENTS:
        device = Device.objects.get(serial=f"WBP-{record.upper()}", revoked_at__isnull=True)
        clinic.devices.append(
            DemoDevice(patient_username=username, serial=device.serial, record=record,
                       api_key=services.device_key_issue(actor=SYSTEM, device=device))
        )
    return clinic
