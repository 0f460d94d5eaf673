"""The upload limits as plain rules, at a fixed `now` (no clock inside)."""
import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from monitoring.ingest.rules import channel_length_problem, recorded_at_problem

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def test_a_device_clock_up_to_5_min_ahead_is_accepted_and_beyond_is_not():
    assert recorded_at_problem(recorded_at=NOW + dt.timedelta(minutes=5), now=NOW) is None
    assert "in the future" in recorded_at_problem(recorded_at=NOW + dt.timedelta(minutes=5, seconds=1), now=NOW)


def test_a_window_up_to_30_days_old_is_accepted_and_older_is_not():
    assert recorded_at_problem(recorded_at=NOW - dt.timedelta(days=30), now=NOW) is None
    assert "older than 30 days" in recorded_at_problem(recorded_at=NOW - dt.timedelta(days=30, seconds=1), now=NOW)


@given(fs=st.floats(125, 1000), duration=st.floats(8, 120))
def test_a_channel_of_exactly_rate_times_duration_samples_fits(fs, duration):
    n = round(fs * duration)
    assert channel_length_problem(n_samples=n, fs_hz=fs, duration_s=duration) is None


@given(fs=st.floats(125, 1000), duration=st.floats(8, 120), off_by=st.integers(2, 1000))
def test_a_channel_off_by_two_samples_or_more_does_not_fit(fs, duration, off_by):
    n = round(fs * duration) + off_by
    assert "needs" in channel_length_problem(n_samples=n, fs_hz=fs, duration_s=duration)
