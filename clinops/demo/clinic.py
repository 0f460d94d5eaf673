"""The demo clinic: 2 clinicians, 1 admin, 6 patients, each with a wearable replaying a real record
and a home cuff, and (demo_seed) weeks of their history.

Everything is written through the services, so the demo's audit trail is real too; the history is
written at simulated times (clinops/demo/history.py), so it reads as weeks of the running product.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import time_machine
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from clinops.base.audit import SYSTEM
from clinops.base.tasks import tasks_not_sent
from clinops.demo.history import DAY, HistorySubject, HomeCourse, history_replay, record_windows
from monitoring.bp.training import bp_model_ensure_active
from patients import services
from patients.models import CareTeam, ConsentStatus, CuffModel, Device, DeviceKind, Patient, Profession, Sex, User
from therapy.models import LatestEvaluation, Suggestion
from therapy.selectors import plan_current
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
# The plan each demo patient starts on, set by their team's clinician (docs/clinical-rules.md defaults otherwise).
DEMO_PLANS: list[dict] = [
    {"template": "ace-ccb-thiazide", "auto_step_up": True, "auto_step_down": True, "max_auto_rung": 2},
    {"template": "ace-ccb-thiazide", "current_rung": 2},
    {"template": "ace-ccb-thiazide", "target_sbp_mmhg": 130.0, "target_dbp_mmhg": 80.0, "auto_step_down": True},
    {"template": "arb-ccb-thiazide", "auto_step_up": True, "max_auto_rung": 1},
    {"template": "arb-ccb-thiazide", "current_rung": 1,
     "exclusions": [{"kind": "irregular rhythm", "detail": "paroxysmal atrial fibrillation"}]},
    {"template": "arb-ccb-thiazide"},
]


# The home cuff of every demo patient but one: a model an administrator marks validated.
DEMO_CUFF_MAKE, DEMO_CUFF_MODEL = "Omron", "M3 Comfort (HEM-7155-E)"
DEMO_CUFF_REFERENCE = "STRIDE BP validated device list"
# The other one's: a model nobody has marked validated, so its readings can never release a change.
UNVALIDATED_CUFF_MAKE, UNVALIDATED_CUFF_MODEL = "Unbranded", "Pharmacy upper-arm cuff"
DEMO_CUFF_FIRMWARE = "1.0"

# The history (demo_seed): the plans start this many days before the seed, at PLAN_START_TIME
# (UTC) of that day (day 0); home sittings from HISTORY_SITTINGS_FROM_DAY, the wearables from
# HISTORY_WINDOWS_FROM_DAY, up to the moment of seeding: about 5 weeks of windows and readings.
PLAN_STARTED_DAYS_AGO = 42
PLAN_START_TIME = dt.timedelta(hours=9)
HISTORY_SITTINGS_FROM_DAY = 5
HISTORY_WINDOWS_FROM_DAY = 7
# Each demo patient's day runs this much after the one before (their events never coincide).
HISTORY_STAGGER = dt.timedelta(minutes=4)

# What happens to each demo patient (same order as PATIENTS and DEMO_PLANS; see HomeCourse).
# Day 0 is the day the plans started; the engine decides, these only set the pressure and habits.
DEMO_COURSES: list[HomeCourse] = [
    HomeCourse(
        story="uncontrolled; the first step waits for review (no doses logged yet) and is approved; "
              "28 days later a complete home series above target releases the next step automatically",
        sbp_mmhg=151, dbp_mmhg=94, step_sbp_mmhg=8, step_dbp_mmhg=5, logs_from_day=10,
        approval_note="Adherence confirmed by phone: she takes lisinopril every morning.", seed=1),
    HomeCourse(
        story="uncontrolled on a plan that allows nothing automatically: the first step is approved, "
              "the next one waits for review",
        sbp_mmhg=158, dbp_mmhg=97, step_sbp_mmhg=9, step_dbp_mmhg=5,
        approval_note="Confirmed by the home series: adding amlodipine.", seed=2),
    HomeCourse(
        story="at target; from day 28 one morning reading a day, so the home series lapses and the "
              "wearable's estimates hold her at target",
        sbp_mmhg=120, dbp_mmhg=74, morning_only_from_day=28, miss_every=20, seed=3),
    HomeCourse(
        story="at target for four weeks, then pressure rises: the home series releases the first "
              "step automatically (not yet acknowledged)",
        sbp_mmhg=128, dbp_mmhg=80, step_sbp_mmhg=10, step_dbp_mmhg=6, rise_from_day=28, rise_sbp_mmhg=16,
        rise_dbp_mmhg=10, miss_every=14, acknowledges=False, seed=4),
    HomeCourse(
        story="at target, then pressure rises: the step waits for review (atrial fibrillation excludes "
              "automatic changes)",
        sbp_mmhg=127, dbp_mmhg=79, rise_from_day=30, rise_sbp_mmhg=18, rise_dbp_mmhg=11, miss_every=10, seed=5),
    HomeCourse(
        story="uncontrolled, measuring with a cuff nobody validated and missing doses: the step waits "
              "for review; on day 38 a confirmed crisis and a severe headache escalate",
        sbp_mmhg=149, dbp_mmhg=93, crisis_day=38, miss_every=3, validated_cuff=False, seed=6),
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
        admin = services.admin_create(actor=SYSTEM, username=ADMIN_USERNAME, password=DEMO_PASSWORD)
        teams: dict[str, CareTeam] = {}
        leads: dict[str, User] = {}
        for username, first, last, profession, team_name in CLINICIANS:
            clinician = services.clinician_create(
                actor=SYSTEM, username=username, password=DEMO_PASSWORD,
                first_name=first, last_name=last, profession=profession,
            )
            teams[team_name] = services.care_team_create(actor=SYSTEM, name=team_name)
            services.care_team_add_clinician(actor=SYSTEM, team=teams[team_name], clinician=clinician)
            services.care_team_appoint_lead(actor=admin, team=teams[team_name], clinician=clinician)
            leads[team_name] = clinician.user
        for number, (username, given, family, dob, sex, team_name, record) in enumerate(PATIENTS, start=1):
            patient = services.patient_create(
                actor=SYSTEM, medical_record_number=f"DEMO-{number:04d}", given_name=given,
                family_name=family, date_of_birth=dob, sex=sex, consent_status=ConsentStatus.GIVEN,
                username=username, password=DEMO_PASSWORD,
                phone=f"+44 20 7946 0{number:03d}",  # Ofcom's range kept for fiction: never a real line
            )
            services.care_team_add_patient(actor=SYSTEM, team=teams[team_name], patient=patient)
            services.device_register(
                actor=SYSTEM, patient=patient, make=DEMO_DEVICE_MAKE, model=DEMO_DEVICE_MODEL,
                firmware=DEMO_FIRMWARE, serial=f"WBP-{record.upper()}",
            )
            plan_create(actor=leads[team_name], patient=patient, reason="demo: starting plan", **DEMO_PLANS[number - 1])
    demo_cuffs_ensure()
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


def _cuff_serial(record: str) -> str:
    return f"CUFF-{record.upper()}"


def demo_cuffs_ensure() -> None:
    """Give every demo patient their home cuff (DEMO_COURSES says which model) and have the
    administrator mark the demo cuff model validated, naming the evidence; what is there already
    stays as it is (a clinic seeded before the cuffs existed gets them now)."""
    admin = User.objects.get(username=ADMIN_USERNAME)
    for (username, *_, record), course in zip(PATIENTS, DEMO_COURSES, strict=True):
        patient = Patient.objects.get(user__username=username)
        if patient.devices.filter(kind=DeviceKind.CUFF, revoked_at__isnull=True).exists():
            continue
        make, model = ((DEMO_CUFF_MAKE, DEMO_CUFF_MODEL) if course.validated_cuff
                       else (UNVALIDATED_CUFF_MAKE, UNVALIDATED_CUFF_MODEL))
        services.device_register(actor=SYSTEM, patient=patient, make=make, model=model, firmware=DEMO_CUFF_FIRMWARE,
                                 serial=_cuff_serial(record), kind=DeviceKind.CUFF)
    cuff_model = CuffModel.objects.filter(make=DEMO_CUFF_MAKE, model=DEMO_CUFF_MODEL).first()
    if cuff_model is not None and not cuff_model.validated:
        services.cuff_model_set_validated(actor=admin, cuff_model=cuff_model, validated=True,
                                          reference=DEMO_CUFF_REFERENCE)


@dataclass
class DemoPatientState:
    """Where a demo patient stands after the history: their latest evaluation and suggestion."""

    username: str
    story: str
    windows: int
    estimates: int
    cuff_readings: int
    outcome: str  # the latest evaluation's: hold, or the status of its suggestion
    reasons: list[str]
    latest_suggestion: str  # "kind status" of the newest suggestion ("" without one)
    rung: int


@dataclass
class DemoHistory:
    """What demo_history_seed wrote: the patients it gave a history (usernames), the events it
    replayed from `origin` (midnight UTC of the plans' first day; None when it wrote nothing) to
    `until`, and where each demo patient stands now."""

    seeded: list[str]
    events: int
    origin: dt.datetime | None
    until: dt.datetime
    patients: list[DemoPatientState] = field(default_factory=list)


def _plans_started_at(until: dt.datetime) -> dt.datetime:
    """When a fresh demo clinic's plans start: PLAN_STARTED_DAYS_AGO days before `until`, in the
    morning (day 0 of the history)."""
    midnight = until.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight - PLAN_STARTED_DAYS_AGO * DAY + PLAN_START_TIME


@contextlib.contextmanager
def _clock_at(at: dt.datetime | None, *, tick: bool) -> Iterator[None]:
    """The clock at `at` for the block (time-machine), or the real clock when `at` is None."""
    if at is None:
        yield
        return
    with time_machine.travel(at, tick=tick):
        yield


def _username_of(patient: Patient) -> str:
    assert patient.user is not None  # a demo patient signs in to the portal: found by their user's name
    return patient.user.username


def demo_history_seed(*, until: dt.datetime | None = None, recordings_dir: Path | None = None,
                      progress: Callable[[str], None] = lambda _: None) -> DemoHistory:
    """Weeks of history for each demo patient who has none yet (no windows and no cuff readings),
    written through the production services at simulated times (clinops/demo/history.py): from
    the day their plan started to `until` (default: now), home sittings from day
    HISTORY_SITTINGS_FROM_DAY and the wearable from day HISTORY_WINDOWS_FROM_DAY, following
    DEMO_COURSES. A clinic whose plans started recently gets only the days since (nothing before a
    plan exists); run twice, it adds nothing. Needs the clinic (demo_clinic_seed) and, for
    estimates, an active BP model (demo_seed makes sure of both). One transaction; no broker or
    worker is needed (tasks_not_sent: the tasks' steps run in process)."""
    until = until or timezone.now()
    recordings_dir = recordings_dir or settings.RECORDINGS_DIR
    subjects: list[HistorySubject] = []
    for number, ((username, *_, record), course) in enumerate(zip(PATIENTS, DEMO_COURSES, strict=True)):
        patient = Patient.objects.select_related("user").get(user__username=username)
        if patient.windows.exists() or patient.cuff_readings.exists():
            continue  # has a history (an earlier seed, or the demo has been running): keep it
        first_plan = patient.plan_versions.order_by("version").first()
        # demo_clinic_seed starts every demo patient's plan, as their care team's lead.
        assert first_plan is not None and first_plan.created_by is not None
        subjects.append(HistorySubject(
            patient=patient, clinician=first_plan.created_by,
            wearable=patient.devices.get(kind=DeviceKind.WEARABLE, revoked_at__isnull=True),
            cuff=patient.devices.get(kind=DeviceKind.CUFF, revoked_at__isnull=True),
            course=course, windows=record_windows(recordings_dir, record),
            offset=number * HISTORY_STAGGER, started_at=first_plan.created_at,
        ))
    history = DemoHistory(seeded=[_username_of(s.patient) for s in subjects], events=0, origin=None, until=until)
    if subjects:
        started = min(s.started_at for s in subjects).astimezone(dt.timezone.utc)
        history.origin = started.replace(hour=0, minute=0, second=0, microsecond=0)
        history.events = history_replay(
            subjects, origin=history.origin, sittings_from_day=HISTORY_SITTINGS_FROM_DAY,
            windows_from_day=HISTORY_WINDOWS_FROM_DAY, until=until, progress=progress)
    history.patients = demo_patient_states()
    return history


def demo_patient_states() -> list[DemoPatientState]:
    """Each demo patient's counts and where the therapy engine left them (for the seed's report)."""
    states = []
    for (username, *_), course in zip(PATIENTS, DEMO_COURSES, strict=True):
        patient = Patient.objects.get(user__username=username)
        latest = LatestEvaluation.objects.filter(patient=patient).first()
        suggestion = Suggestion.objects.filter(patient=patient).order_by("-created_at", "-pk").first()
        plan = plan_current(patient)
        states.append(DemoPatientState(
            username=username, story=course.story, windows=patient.windows.count(),
            estimates=patient.bp_estimates.filter(shadow=False).count(), cuff_readings=patient.cuff_readings.count(),
            outcome=latest.outcome if latest else "not evaluated", reasons=list(latest.reasons) if latest else [],
            latest_suggestion=f"{suggestion.kind} {suggestion.status}" if suggestion else "",
            rung=plan.current_rung if plan else 0,
        ))
    return states


@dataclass
class DemoSeed:
    clinic: DemoClinic
    model: str  # the active BP model's version ("" when not ensured)
    model_why: str
    history: DemoHistory | None


def demo_seed(*, history: bool = True, until: dt.datetime | None = None, recordings_dir: Path | None = None,
              progress: Callable[[str], None] = lambda _: None) -> DemoSeed:
    """The demo as `manage.py seed_demo` leaves it: an active BP model (trained on the shipped
    recordings when there is none: monitoring.bp.training.bp_model_ensure_active), the clinic
    (demo_clinic_seed; fresh device keys on every run) and, with `history`, weeks of each demo
    patient's history up to `until` (default now; demo_history_seed). A fresh clinic is created
    PLAN_STARTED_DAYS_AGO days back — the clock is moved, so its rows and audit trail carry that
    time — and the model is trained just before it. Idempotent: a second run rotates the device
    keys and adds nothing else. Needs no broker or worker.

    history=False: the clinic alone, created now, and no model (quick, for tests of the clinic)."""
    until = until or timezone.now()
    recordings_dir = recordings_dir or settings.RECORDINGS_DIR
    creating = not User.objects.filter(username=ADMIN_USERNAME).exists()
    start = _plans_started_at(until) if creating and history else None
    model, why = None, ""
    with tasks_not_sent():
        if history:
            # Ticking: training measures its own durations.
            with _clock_at(start - dt.timedelta(hours=1) if start else None, tick=True):
                model, why = bp_model_ensure_active(actor=SYSTEM, data_dir=recordings_dir / "challenge2015",
                                                    progress=progress)
        with transaction.atomic():
            with _clock_at(start, tick=False):
                clinic = demo_clinic_seed()
            written = None
            if history:
                written = demo_history_seed(until=until, recordings_dir=recordings_dir, progress=progress)
    return DemoSeed(clinic=clinic, model=model.version if model else "", model_why=why, history=written)
