"""Adherence (docs/clinical-rules.md): the share of scheduled doses the patient logged as taken.

Pure: values in, values out; today's date is passed in. A scheduled dose is one intake of one
drug of the current regimen on one day ("amlodipine 5 mg, dose 1 of 1, 2026-11-20"). The patient
logs each as taken (one tap) or missed; a dose not logged at all counts as not taken, so
forgetting to log can only make an automatic step up less likely, never more.

The window is the complete days of the look-back (today is left out: its evening dose may not be
due yet), and only days on the current regimen: adherence to a regimen the patient no longer
takes says nothing about this one. With nothing logged in the window adherence is unknown (None)
and a step up is never automatic.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass

from therapy.domain import Frequency, Rung

DOSES_PER_DAY: dict[Frequency, int] = {
    Frequency.ONCE_DAILY: 1,
    Frequency.TWICE_DAILY: 2,
    Frequency.THREE_TIMES_DAILY: 3,
}


@dataclass(frozen=True)
class ScheduledDose:
    """One intake due: `drug` at `dose_mg` mg, intake `slot` (1-based) of `per_day` on `day`."""

    day: dt.date
    drug: str
    dose_mg: float
    slot: int
    per_day: int

    def describe(self) -> str:
        which = f", dose {self.slot} of {self.per_day}" if self.per_day > 1 else ""
        return f"{self.drug} {self.dose_mg:g} mg{which}"


@dataclass(frozen=True)
class DoseLogEntry:
    """What the patient logged for one scheduled dose (drug, day, slot) : taken or missed."""

    day: dt.date
    drug: str
    slot: int
    taken: bool


@dataclass(frozen=True)
class Adherence:
    """scheduled / taken: doses over `first_day`..`last_day` (complete days on the current regimen);
    share: taken / scheduled (0..1), None when nothing was logged or no complete day has passed."""

    first_day: dt.date | None
    last_day: dt.date | None
    scheduled: int
    taken: int
    logged: int
    share: float | None

    def describe(self) -> str:
        if self.share is None:
            return "adherence unknown: no doses logged over the look-back"
        return f"{100.0 * self.share:.0f} % of doses taken ({self.taken} of {self.scheduled} scheduled)"


def scheduled_doses(regimen: Rung, day: dt.date) -> list[ScheduledDose]:
    """Every intake of the regimen due on `day`, in the order a patient takes them."""
    return [
        ScheduledDose(day=day, drug=dose.drug, dose_mg=dose.dose_mg, slot=slot, per_day=DOSES_PER_DAY[dose.frequency])
        for slot in range(1, 4)
        for dose in regimen.doses
        if slot <= DOSES_PER_DAY[dose.frequency]
    ]


def adherence_over_look_back(
    regimen: Rung,
    logs: Iterable[DoseLogEntry],
    *,
    today: dt.date,
    look_back_days: float,
    regimen_since: dt.date,
) -> Adherence:
    """Adherence to `regimen` over the complete days of the look-back (days) before `today`, not
    earlier than `regimen_since` (the day the patient started it)."""
    days_back = max(1, math.ceil(look_back_days))
    first = max(today - dt.timedelta(days=days_back), regimen_since)
    last = today - dt.timedelta(days=1)
    if first > last:
        return Adherence(None, None, 0, 0, 0, None)
    due = {
        (d.day, d.drug.lower(), d.slot)
        for n in range((last - first).days + 1)
        for d in scheduled_doses(regimen, first + dt.timedelta(days=n))
    }
    answered = {(e.day, e.drug.lower(), e.slot): e.taken for e in logs if (e.day, e.drug.lower(), e.slot) in due}
    taken = sum(answered.values())
    share = taken / len(due) if answered else None
    return Adherence(first, last, len(due), taken, len(answered), share)


def adherence_in_patient_words(complete_days: Adherence, *, today_taken: int, today_logged: int, today_due: int) -> str:
    """What the portal says about the patient's doses: the complete days the care team's rule
    counts (`complete_days`) and today as it stands, in plain words."""
    if today_due == 0:
        today = ""
    elif today_logged == 0:
        today = f"Today: {today_due} dose{'s' if today_due > 1 else ''} still to log."
    else:
        today = f"Today so far: {today_taken} of {today_due} taken."
    if complete_days.first_day is None:
        before = "This medicine is new today, so there are no earlier days to count yet."
    else:
        # adherence_over_look_back sets the first and last day together (both None before a complete day).
        assert complete_days.last_day is not None
        days = (complete_days.last_day - complete_days.first_day).days + 1
        if complete_days.logged == 0:
            before = (f"You have not logged any doses for the {days} day{'s' if days > 1 else ''} before today. "
                      "Your care team changes a medicine only when they know you have been taking it.")
        else:
            before = (f"The {days} day{'s' if days > 1 else ''} before today: {complete_days.taken} of "
                      f"{complete_days.scheduled} doses taken.")
    return " ".join(part for part in (today, before) if part)
