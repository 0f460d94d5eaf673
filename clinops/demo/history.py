"""The demo's weeks of history: each demo patient's days replayed through the production services at
simulated times, so that every row — windows and their analyses, estimates, cuff readings and
calibrations, agreement pairs, dose logs, symptom reports, suggestions, alerts, plan versions and
their audit rows — is what the running product would have written, stamped when it would have
been written (time-machine moves the clock; tasks are not sent, the steps run here instead).

A day of a demo patient (UTC; each patient a few minutes after the one before, see `offset`; the
home sittings start a couple of days before the wearable, so the first complete home series is
there before the wearable has enough estimates of its own):

- 06:54, 11:30, 15:30 and 18:54: the wearable records a 30-s window (the patient's own
  challenge2015 record, cycled) and uploads it half a minute later. It is checked by the API's own
  serializer, received (monitoring.ingest.intake.windows_receive), processed and estimated
  (windows_process, windows_estimate) as monitoring.tasks.process_windows does. The windows 6 min
  before a sitting give that sitting's calibration and, estimated before it, its prospective
  agreement pair.
- 07:00 and 19:00: a home sitting, two readings a minute apart (left arm, sitting, pulse from the
  wearable's heart rate), typed in by the patient with their registered cuff
  (monitoring.bp.cuff_calibration.cuff_reading_record); windows a new calibration leaves waiting are
  estimated (what its estimate_windows tasks do); then the patient is evaluated
  (therapy.evaluation.patient_therapy_evaluate), as a cuff reading asks for at once.
- 08:00: the day's doses of the current regimen are logged (therapy.services.dose_log_record).
- 08:30: the patient acknowledges a change released to them (if their course says they do).
- 10:00: the care team's clinician works through the queue (if the course says they approve).

Blood pressure follows each patient's `HomeCourse` and the engine's own decisions: every rung the
plan climbs lowers it over RESPONSE_DAYS, so what the engine releases changes what it sees next.
"""
from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import time_machine
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from clinops.base.tasks import tasks_not_sent
from monitoring import selectors as monitoring_selectors
from monitoring.bp.cuff_calibration import cuff_reading_record
from monitoring.bp.estimation import windows_estimate
from monitoring.ingest.devicesim import window_payload
from monitoring.ingest.intake import WindowUpload, windows_process, windows_receive
from monitoring.ingest.serializers import WindowInput
from monitoring.models import CALIBRATION_PAIRING, Arm, CuffSource, Position
from monitoring.signals import pipeline
from monitoring.signals.recordings import RecordingWindow, iter_windows, load_challenge2015, with_pleth_delay_removed
from patients.models import Device, Patient, User
from therapy import plans
from therapy.adherence import scheduled_doses
from therapy.domain import Symptom
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import RELEASED_STATUSES, PlanVersion, ReportKind, Suggestion, SuggestionKind, SuggestionStatus
from therapy.selectors import plan_current
from therapy.services import dose_log_record, suggestion_acknowledge, suggestion_approve, symptom_report_record

DAY = dt.timedelta(days=1)
WINDOW_S = 30.0
# A dose change has its full effect this many days after it (linear until then), days.
RESPONSE_DAYS = 14.0
# A course's rise in pressure is reached over this many days.
RISE_DAYS = 3.0
# Morning readings run higher than evening ones (mmHg, SBP/DBP).
MORNING_SURGE = (3.0, 2.0)
# Spread of a sitting's mean around the course (day-to-day) and of a reading around its sitting,
# SD in mmHg (SBP, DBP); the second reading of a sitting runs a little lower.
SITTING_SD = (4.0, 2.5)
READING_SD = (2.5, 1.5)
SECOND_READING_LOWER = (2.0, 1.0)
# The crisis evening's two readings (mmHg): both at crisis level (>= 180/120), a minute apart.
CRISIS_READINGS = ((192.0, 123.0), (188.0, 121.0))
# A patient's day (times after midnight UTC, plus the patient's offset): the two home sittings, a
# window BEFORE_SITTING before each (within the 10 min that pair a window with a reading) and two
# more windows; a window is uploaded as soon as it is recorded (UPLOAD_DELAY after its start).
MORNING_SITTING = dt.timedelta(hours=7)
EVENING_SITTING = dt.timedelta(hours=19)
BEFORE_SITTING = dt.timedelta(minutes=6)
OTHER_WINDOWS = (dt.timedelta(hours=11, minutes=30), dt.timedelta(hours=15, minutes=30))
UPLOAD_DELAY = dt.timedelta(seconds=WINDOW_S + 1)
# The longest an event lasts on the simulated clock (a sitting and its evaluation: 1.5 min): no
# event starts later than this before the end of the history, so the clock never passes it.
EVENT_SPAN = dt.timedelta(minutes=2)
DOSES_AT = dt.timedelta(hours=8)
ACKNOWLEDGE_AT = dt.timedelta(hours=8, minutes=30)
REVIEW_AT = dt.timedelta(hours=10)


@dataclass(frozen=True)
class HomeCourse:
    """How one demo patient's home blood pressure runs (mmHg) and what they and their clinician do;
    days count from the day the plan started (day 0).

    sbp/dbp_mmhg: evening sitting mean on the plan's starting rung (mornings run MORNING_SURGE
    higher); each rung the plan climbs lowers it by step_*_mmhg, reached over RESPONSE_DAYS.
    rise_*_mmhg: an increase reached over RISE_DAYS from rise_from_day (None: no rise).
    crisis_day: that evening both readings are at crisis level and the patient then reports a
    severe headache. miss_every: one scheduled dose in this many is missed (0: none), every other
    miss logged as missed and the rest not logged at all; logs_from_day: the day they start
    logging doses. morning_only_from_day: from this day one reading a morning and no evening
    sitting (the home series lapses, the wearable decides). validated_cuff: their cuff is of the
    model the administrator marked validated (else of a model nobody validated).
    approval_note: the clinician approves the first step that waits for review, with this note
    (empty: they leave the queue to the demo's user). acknowledges: the patient acknowledges a
    change released to them the next morning. seed: their random readings. story: what their
    history shows, in words (seed_demo prints it)."""

    story: str
    sbp_mmhg: float
    dbp_mmhg: float
    step_sbp_mmhg: float = 8.0
    step_dbp_mmhg: float = 5.0
    rise_from_day: int | None = None
    rise_sbp_mmhg: float = 0.0
    rise_dbp_mmhg: float = 0.0
    crisis_day: int | None = None
    miss_every: int = 12
    logs_from_day: int = 0
    morning_only_from_day: int | None = None
    validated_cuff: bool = True
    approval_note: str = ""
    acknowledges: bool = True
    seed: int = 0


@dataclass
class HistorySubject:
    """A demo patient whose history is replayed: who they are, their devices and course."""

    patient: Patient
    clinician: User  # of their care team: reviews their suggestions
    wearable: Device
    cuff: Device
    course: HomeCourse
    windows: list[RecordingWindow]  # of their record, uploaded in turn, cycled
    offset: dt.timedelta  # their day runs this much after the clock times above
    started_at: dt.datetime  # their plan's start: nothing happens before it
    rng: random.Random = field(init=False)
    checker: WindowInput = field(init=False)
    next_window: int = 0
    doses_due: int = 0
    heart_rate_bpm: float | None = None
    approved: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.course.seed)
        self.heart_rate_bpm = record_heart_rate(self.windows)
        # One serializer for all of a device's windows, as the batch endpoint reuses its child.
        self.checker = WindowInput(context={"device": self.wearable})


@dataclass(frozen=True)
class _Event:
    at: dt.datetime
    order: int
    run: Callable[[], None]


def record_windows(recordings_dir: Path, record: str) -> list[RecordingWindow]:
    """The record's consecutive 30-s windows as a one-clock wearable records them (PLETH latency
    removed, see monitoring/signals/recordings.py)."""
    recording = with_pleth_delay_removed(load_challenge2015(recordings_dir, record))
    return list(iter_windows(recording, window_s=WINDOW_S))


def record_heart_rate(windows: list[RecordingWindow]) -> float | None:
    """The record's heart rate (beats/min, the first usable window's median): the pulse the home
    cuff shows before the wearable has sent anything (afterwards, the wearable's latest)."""
    for window in windows:
        result = pipeline.analyse_window(window.ecg, window.ecg_fs, window.ppg, window.ppg_fs)
        rate = result.features.as_dict().get("heart_rate_bpm_median") if result.usable and result.features else None
        if rate:
            return float(rate)
    return None


def history_replay(subjects: list[HistorySubject], *, origin: dt.datetime, sittings_from_day: int,
                   windows_from_day: int, until: dt.datetime, progress: Callable[[str], None] = lambda _: None) -> int:
    """Replay the subjects' days from `origin` (midnight UTC of day 0) to `until`, in time order
    across subjects: doses from day 0 (or the course's logs_from_day), home sittings from
    `sittings_from_day`, the wearable's windows from `windows_from_day`; nothing before a
    subject's plan started or after `until` (the clock never passes it). One transaction; tasks are
    not sent (each step runs here). Returns the number of events run."""
    events: list[_Event] = []
    last_day = (until - origin) // DAY
    for day in range(last_day + 1):
        for subject in subjects:
            events.extend(_day_events(subject, day, origin + day * DAY, sittings_from_day=sittings_from_day,
                                      windows_from_day=windows_from_day))
    events = sorted((e for e in events if e.at + EVENT_SPAN <= until), key=lambda e: (e.at, e.order))
    shown_day = None
    with tasks_not_sent(), transaction.atomic():
        for event in events:
            day = (event.at - origin) // DAY
            if day != shown_day and day % 7 == 0:
                progress(f"history: day {day} of {last_day} ({event.at:%Y-%m-%d})")
                shown_day = day
            with time_machine.travel(event.at, tick=False):
                event.run()
    return len(events)


def _day_events(s: HistorySubject, day: int, midnight: dt.datetime, *, sittings_from_day: int,
                windows_from_day: int) -> list[_Event]:
    course = s.course
    t0 = midnight + s.offset
    planned: list[tuple[dt.datetime, Callable[[], None]]] = []
    if day >= course.logs_from_day:
        planned.append((t0 + DOSES_AT, functools.partial(_log_doses, s)))
    if course.acknowledges:
        planned.append((t0 + ACKNOWLEDGE_AT, functools.partial(_acknowledge, s)))
    if course.approval_note:
        planned.append((t0 + REVIEW_AT, functools.partial(_review, s)))
    morning, evening = t0 + MORNING_SITTING, t0 + EVENING_SITTING
    if day >= windows_from_day:
        for recorded_at in (morning - BEFORE_SITTING, *(t0 + t for t in OTHER_WINDOWS), evening - BEFORE_SITTING):
            planned.append((recorded_at + UPLOAD_DELAY, functools.partial(_window, s, recorded_at)))
    if day >= sittings_from_day:
        lapsed = course.morning_only_from_day is not None and day >= course.morning_only_from_day
        planned.append((morning, functools.partial(_sitting, s, readings=1 if lapsed else 2, morning=True)))
        crisis = day == course.crisis_day
        if lapsed:
            # No sitting, but the day's estimates still ask for an evaluation.
            planned.append((evening, functools.partial(_evaluate, s)))
        else:
            planned.append((evening, functools.partial(_sitting, s, readings=2, morning=False, crisis=crisis)))
        if crisis:
            planned.append((evening + dt.timedelta(minutes=10), functools.partial(_red_flag, s)))
    return [_Event(at, order, run) for order, (at, run) in enumerate(planned) if at > s.started_at]


# --- What happens ------------------------------------------------------------------------------

def _window(s: HistorySubject, recorded_at: dt.datetime) -> None:
    """The wearable uploads a window; the worker's process_windows task, run here."""
    window = s.windows[s.next_window % len(s.windows)]
    s.next_window += 1
    payload = window_payload(window, sequence=int(recorded_at.timestamp()), recorded_at=recorded_at)
    fields = s.checker.run_validation(payload)  # the API's own checks (serializers.WindowInput)
    upload = WindowUpload(sequence=fields["sequence"], recorded_at=fields["recorded_at"],
                          duration_s=fields["duration_s"], encoding=fields["encoding"], channels=fields["channels"])
    [(stored, created)] = windows_receive(device=s.wearable, uploads=[upload])
    if not created:
        return
    analyses = windows_process(window_ids=[stored.pk])
    usable = [window_id for window_id, analysis in analyses.items() if analysis.usable]
    if usable:
        windows_estimate(window_ids=usable, analyses=analyses)
        s.heart_rate_bpm = analyses[usable[0]].heart_rate_bpm or s.heart_rate_bpm


def _home_bp(s: HistorySubject, at: dt.datetime, *, morning: bool) -> tuple[float, float]:
    """The course's sitting mean at `at` (mmHg), before the day's spread: base, rise, and the
    effect of each rung the plan has climbed since it started."""
    course = s.course
    sbp, dbp = course.sbp_mmhg, course.dbp_mmhg
    if course.rise_from_day is not None:
        reached = min(max((at - s.started_at) / DAY - course.rise_from_day, 0.0) / RISE_DAYS, 1.0)
        sbp, dbp = sbp + reached * course.rise_sbp_mmhg, dbp + reached * course.rise_dbp_mmhg
    versions = list(PlanVersion.objects.filter(patient=s.patient).order_by("version")
                    .values_list("current_rung", "created_at"))
    for (before, _), (rung, changed_at) in zip(versions, versions[1:]):
        worked = min(max((at - changed_at) / DAY, 0.0) / RESPONSE_DAYS, 1.0)
        sbp -= worked * (rung - before) * course.step_sbp_mmhg
        dbp -= worked * (rung - before) * course.step_dbp_mmhg
    if morning:
        sbp, dbp = sbp + MORNING_SURGE[0], dbp + MORNING_SURGE[1]
    return sbp, dbp


def _sitting(s: HistorySubject, *, readings: int, morning: bool, crisis: bool = False) -> None:
    """A home sitting: `readings` readings a minute apart, then the evaluation they ask for."""
    start = timezone.now()
    sbp, dbp = _home_bp(s, start, morning=morning)
    sbp, dbp = sbp + s.rng.gauss(0, SITTING_SD[0]), dbp + s.rng.gauss(0, SITTING_SD[1])
    for k in range(readings):
        at = start + dt.timedelta(minutes=k)
        if crisis:
            values = CRISIS_READINGS[k % len(CRISIS_READINGS)]
        else:
            values = (sbp + s.rng.gauss(0, READING_SD[0]) - k * SECOND_READING_LOWER[0],
                      dbp + s.rng.gauss(0, READING_SD[1]) - k * SECOND_READING_LOWER[1])
        pulse = None if s.heart_rate_bpm is None else round(s.heart_rate_bpm + s.rng.gauss(0, 2))
        with time_machine.travel(at, tick=False):
            cuff_reading_record(
                actor=s.patient.user, patient=s.patient, measured_at=at, sbp_mmhg=float(round(values[0])),
                dbp_mmhg=float(round(values[1])), source=CuffSource.PATIENT, pulse_bpm=pulse, arm=Arm.LEFT,
                position=Position.SITTING, cuff=s.cuff,
            )
            # The estimate_windows tasks a new calibration sends for the windows it left waiting.
            waiting = monitoring_selectors.windows_waiting_for_estimate(patient_id=s.patient.pk,
                                                                       recorded_from=at - CALIBRATION_PAIRING)
            if waiting:
                windows_estimate(window_ids=waiting)
    with time_machine.travel(start + dt.timedelta(minutes=readings - 1, seconds=30), tick=False):
        _evaluate(s)


def _evaluate(s: HistorySubject) -> None:
    """The therapy task's evaluation (therapy.tasks.evaluate_patient), run here."""
    patient_therapy_evaluate(patient_id=s.patient.pk, now=timezone.now())


def _red_flag(s: HistorySubject) -> None:
    """After the crisis readings the patient reports a severe headache, which asks for an evaluation at once."""
    symptom_report_record(actor=s.patient.user, patient=s.patient, kind=ReportKind.SYMPTOM,
                          symptom=Symptom.SEVERE_HEADACHE.value, detail="pounding headache since this afternoon")
    _evaluate(s)


def _log_doses(s: HistorySubject) -> None:
    """The morning's doses of the current regimen: taken, or (one in `miss_every`) missed — logged
    as missed every other time, otherwise not logged at all (which counts as not taken)."""
    plan = plan_current(s.patient)
    assert plan is not None  # nothing is replayed before the patient's plan started (started_at)
    today = timezone.localdate()
    every = s.course.miss_every
    for dose in scheduled_doses(plans.ladder_of(plan).rungs[plan.current_rung], today):
        n, s.doses_due = s.doses_due, s.doses_due + 1
        missed = bool(every) and n % every == every - 1
        if missed and (n // every) % 2:
            continue  # forgotten altogether
        dose_log_record(actor=s.patient.user, patient=s.patient, day=today, drug=dose.drug, slot=dose.slot,
                        taken=not missed)


def _acknowledge(s: HistorySubject) -> None:
    """The patient confirms the changes released to them (on the portal)."""
    released = (Suggestion.objects.filter(patient=s.patient, status__in=RELEASED_STATUSES)
                .exclude(to_rung=F("from_rung")).values_list("pk", flat=True))
    for suggestion_id in released:
        suggestion_acknowledge(actor=s.patient.user, suggestion_id=suggestion_id)


def _review(s: HistorySubject) -> None:
    """The clinician approves the first dose step that waits for their review, once."""
    if s.approved:
        return
    pending = (Suggestion.objects.filter(patient=s.patient, status=SuggestionStatus.PENDING_REVIEW, urgent=False)
               .exclude(kind=SuggestionKind.ESCALATE).first())
    if pending is not None:
        suggestion_approve(actor=s.clinician, suggestion_id=pending.pk, note=s.course.approval_note)
        s.approved = True
