"""Log lines carry ids, never who the patient is or what their signals and pressures were."""
import logging

import numpy as np
import pytest
from django.utils import timezone

from monitoring.bp import estimation
from monitoring.models import WindowAnalysis

pytestmark = pytest.mark.django_db


def test_the_log_lines_of_a_processed_window_hold_ids_not_names_or_values(caplog, device, processed_window_at, real_windows):
    caplog.set_level(logging.DEBUG)
    window = processed_window_at(timezone.now())
    estimation.window_estimate(window_id=window.pk)
    lines = [f"{r.getMessage()} {r.msg!r}" for r in caplog.records]
    text = "\n".join(lines)
    assert f"'window_id': {window.pk}" in text, text  # the lines are there, and they say which window
    patient = device.patient
    for secret in (patient.given_name + " " + patient.family_name, patient.family_name, patient.medical_record_number,
                   patient.date_of_birth.isoformat(), patient.user.username, device.serial):
        assert secret not in text, f"{secret!r} leaked into the logs"
    analysis = WindowAnalysis.objects.get(window=window)
    values = [analysis.features["pat_foot_ms_median"], analysis.features["heart_rate_bpm_median"],
              *np.asarray(real_windows[0].ecg[:5]).round(4).tolist()]
    for value in values:
        assert f"{value}" not in text, f"a signal or feature value ({value}) leaked into the logs"
