"""Adherence: taken / scheduled doses of the current regimen over the complete days of the look-back."""
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from therapy.adherence import DoseLogEntry, adherence_over_look_back, scheduled_doses
from therapy.domain import Dose, Frequency, Rung

TODAY = dt.date(2026, 11, 23)
REGIMEN = Rung(doses=(Dose("lisinopril", 40.0), Dose("amlodipine", 5.0, Frequency.TWICE_DAILY)))


def taken(day, drug, slot, ok=True):
    return DoseLogEntry(day=day, drug=drug, slot=slot, taken=ok)


def test_a_day_holds_every_intake_of_every_drug():
    due = scheduled_doses(REGIMEN, TODAY)
    assert [(d.drug, d.slot) for d in due] == [("lisinopril", 1), ("amlodipine", 1), ("amlodipine", 2)]
    assert due[2].describe() == "amlodipine 5 mg, dose 2 of 2"


def test_nothing_logged_is_unknown_not_perfect():
    result = adherence_over_look_back(REGIMEN, [], today=TODAY, look_back_days=7, regimen_since=dt.date(2026, 1, 1))
    assert (result.scheduled, result.share) == (21, None)
    assert result.describe().startswith("adherence unknown")


def test_doses_not_logged_count_as_not_taken_and_today_is_left_out():
    days = [TODAY - dt.timedelta(days=n) for n in range(1, 8)]
    logs = [taken(d, "lisinopril", 1) for d in days] + [taken(TODAY, "amlodipine", 1)]
    result = adherence_over_look_back(REGIMEN, logs, today=TODAY, look_back_days=7, regimen_since=dt.date(2026, 1, 1))
    assert (result.first_day, result.last_day) == (TODAY - dt.timedelta(days=7), TODAY - dt.timedelta(days=1))
    assert (result.taken, result.scheduled) == (7, 21)
    assert result.share == pytest.approx(1 / 3)


def test_only_days_on_the_current_regimen_count():
    since = TODAY - dt.timedelta(days=2)
    logs = [taken(since, d.drug, d.slot) for d in scheduled_doses(REGIMEN, since)]
    logs += [taken(TODAY - dt.timedelta(days=5), "lisinopril", 1, ok=False)]  # the old regimen
    result = adherence_over_look_back(REGIMEN, logs, today=TODAY, look_back_days=7, regimen_since=since)
    assert (result.first_day, result.scheduled, result.taken) == (since, 6, 3)
    assert result.share == 0.5


def test_a_regimen_started_today_has_no_adherence_yet():
    result = adherence_over_look_back(REGIMEN, [taken(TODAY, "lisinopril", 1)], today=TODAY, look_back_days=7,
                                      regimen_since=TODAY)
    assert (result.scheduled, result.share) == (0, None)


@given(st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["lisinopril", "amlodipine", "other"]),
                          st.integers(1, 3), st.booleans())))
def test_the_share_is_a_fraction_and_never_counts_an_unscheduled_dose(entries):
    logs = [taken(TODAY - dt.timedelta(days=n), drug, slot, ok) for n, drug, slot, ok in entries]
    result = adherence_over_look_back(REGIMEN, logs, today=TODAY, look_back_days=7, regimen_since=dt.date(2026, 1, 1))
    assert result.taken <= result.logged <= result.scheduled == 21
    assert result.share is None or 0.0 <= result.share <= 1.0


def test_the_portal_words_count_today_as_it_stands_and_say_no_look_back():
    from therapy.adherence import Adherence, adherence_in_patient_words

    nothing = Adherence(dt.date(2026, 12, 1), dt.date(2026, 12, 7), 7, 0, 0, None)
    words = adherence_in_patient_words(nothing, today_taken=1, today_logged=1, today_due=1)
    assert words.startswith("Today so far: 1 of 1 taken.") and "look-back" not in words
    assert "not logged any doses for the 7 days before today" in words
    some = Adherence(dt.date(2026, 12, 1), dt.date(2026, 12, 7), 14, 12, 13, 12 / 14)
    assert adherence_in_patient_words(some, today_taken=0, today_logged=0, today_due=2) == (
        "Today: 2 doses still to log. The 7 days before today: 12 of 14 doses taken.")
    new = Adherence(None, None, 0, 0, 0, None)
    assert "new today" in adherence_in_patient_words(new, today_taken=0, today_logged=0, today_due=1)
