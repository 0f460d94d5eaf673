"""WindowInput.quick_validation (the upload's fast path) gives exactly what run_validation gives, or
None, whereupon the view runs run_validation and its errors (no database)."""
import copy
import datetime as dt
from types import SimpleNamespace

import numpy as np
import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from monitoring.ingest.serializers import WindowInput

ODD_VALUES = [None, True, False, 0, -1, 1.5, 1e300, 2**64, "", " ", "x", "12", "250", "NaN", "2026-11-23T10:00:00",
              "2026-11-23T10:00:00Z", "2026-11-23T12:99:00Z", [], {}, [1, 2], {"a": 1}, "AAAA", "AAA=", "\x00", "int16",
              "float32", "QQ==", 7500, 250, 30, 30.0, 0.0, 1e-9, -3.5]
FIELDS = ["sequence", "serial", "recorded_at", "duration_s", "ecg", "ppg", "ecg.fs", "ecg.data", "ecg.dtype", "ecg.scale",
          "ecg.offset", "ppg.fs", "ppg.data", "ppg.dtype", "ppg.scale", "ppg.offset", "extra", "ecg.extra", "ecg.samples"]


def _outcome(checker, payload):
    try:
        return checker.run_validation(copy.deepcopy(payload))
    except serializers.ValidationError as exc:
        return ("invalid", exc.detail)


def _same(quick, full):
    assert quick.keys() == full.keys()
    for key in full:
        if key == "channels":
            for name, channel in full["channels"].items():
                ours = quick["channels"][name]
                assert (ours.fs, ours.scale, ours.offset) == (channel.fs, channel.scale, channel.offset)
                assert ours.raw.dtype == channel.raw.dtype and np.array_equal(ours.raw, channel.raw)
        else:
            assert quick[key] == full[key] and type(quick[key]) is type(full[key])


@pytest.fixture
def base(make_payload):
    return make_payload(0, sequence=5, serial="SER-1")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # base is only read
@given(changes=st.lists(st.tuples(st.sampled_from(FIELDS), st.one_of(st.just("<drop>"), st.sampled_from(ODD_VALUES))),
                        max_size=3))
def test_quick_validation_is_run_validation_or_none(base, changes):
    payload = copy.deepcopy(base)
    for path, value in changes:
        *parents, leaf = path.split(".")
        target = payload
        for parent in parents:
            target = target.get(parent) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            continue
        if value == "<drop>":
            target.pop(leaf, None)
        else:
            target[leaf] = value
    checker = WindowInput(context={"device": SimpleNamespace(serial="SER-1")})
    full = _outcome(checker, payload)
    quick = checker.quick_validation(copy.deepcopy(payload))
    if isinstance(full, tuple):
        assert quick is None
    elif quick is not None:
        _same(quick, full)


def test_a_plain_compact_window_takes_the_quick_path(base, make_payload):
    checker = WindowInput(context={"device": SimpleNamespace(serial="SER-1")})
    quick = checker.quick_validation(copy.deepcopy(base))
    assert quick is not None
    _same(quick, checker.run_validation(copy.deepcopy(base)))
    assert quick["recorded_at"].tzinfo is not None and quick["recorded_at"] <= timezone.now() + dt.timedelta(minutes=5)
    # JSON samples and a serial of another device take the full path (and its errors).
    assert checker.quick_validation(make_payload(0, encoding="json")) is None
    assert checker.quick_validation(dict(copy.deepcopy(base), serial="OTHER")) is None
