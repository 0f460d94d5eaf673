"""Triage of a clinician's patient list: which patients need attention first.

Pure: values in, a `Triage` out; `now` is passed in. Units: mmHg, hours.
Order of precedence (the first that applies):
1. escalated — an open alert (crisis, red flag, side effect, ...);
2. device silent — no upload for more than 48 h (nothing else can be judged without data);
3. insufficient data — no evaluation yet, or the latest one lacked enough estimates;
4. uncontrolled — the look-back mean is at or above the target (SBP or DBP);
5. controlled — below target on sufficient data.
"""
from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

DEVICE_SILENT_AFTER = dt.timedelta(hours=48)


class Triage(str, enum.Enum):
    ESCALATED = "escalated"
    DEVICE_SILENT = "device silent"
    INSUFFICIENT_DATA = "insufficient data"
    UNCONTROLLED = "uncontrolled"
    CONTROLLED = "controlled"

    @property
    def rank(self) -> int:
        """0 = most urgent."""
        return list(Triage).index(self)


@dataclass(frozen=True)
class TriageInput:
    """open_alerts: count of open alerts; last_upload_at: newest upload of any of the patient's
    devices (None = never); mean_*_mmhg: look-back means of the latest evaluation (None = none);
    sufficient: that evaluation had enough data; target_*_mmhg: the plan's target."""

    open_alerts: int
    last_upload_at: dt.datetime | None
    mean_sbp_mmhg: float | None
    mean_dbp_mmhg: float | None
    sufficient: bool
    target_sbp_mmhg: float
    target_dbp_mmhg: float


def triage_of(patient: TriageInput, *, now: dt.datetime) -> Triage:
    """The patient's triage category at `now`."""
    if patient.open_alerts > 0:
        return Triage.ESCALATED
    if patient.last_upload_at is None or now - patient.last_upload_at > DEVICE_SILENT_AFTER:
        return Triage.DEVICE_SILENT
    if not patient.sufficient or patient.mean_sbp_mmhg is None or patient.mean_dbp_mmhg is None:
        return Triage.INSUFFICIENT_DATA
    if patient.mean_sbp_mmhg >= patient.target_sbp_mmhg or patient.mean_dbp_mmhg >= patient.target_dbp_mmhg:
        return Triage.UNCONTROLLED
    return Triage.CONTROLLED
