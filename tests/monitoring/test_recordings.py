"""The real recordings ship inside the repository, intact, and read as wearable windows."""
import hashlib
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from monitoring.signals.recordings import challenge2015_records, iter_windows, load_challenge2015

RECORDINGS = Path(settings.RECORDINGS_DIR)


def test_recordings_live_in_the_repository_not_in_shared():
    root = Path(settings.BASE_DIR).resolve()
    assert RECORDINGS.resolve().is_relative_to(root)
    assert (RECORDINGS / "LICENSES.md").exists() and (RECORDINGS / "README.md").exists()
    assert (RECORDINGS / "wfdb-samples" / "LICENSE.wfdb-python").exists()


def test_every_shipped_file_matches_its_checksum():
    lines = (RECORDINGS / "SHA256SUMS").read_text().splitlines()
    assert len(lines) > 700
    for line in lines:
        digest, name = line.split(maxsplit=1)
        path = RECORDINGS / name.lstrip("*")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name


def test_challenge2015_lists_sixty_records():
    assert len(challenge2015_records(RECORDINGS)) == 60


@pytest.mark.parametrize("name", ["v140s", "v205l"])
def test_a_record_reads_as_ecg_ppg_and_arterial_pressure_at_250_hz(name):
    recording = load_challenge2015(RECORDINGS, name)
    assert recording.ecg_fs == recording.ppg_fs == 250.0
    assert recording.duration_s in (300.0, 330.0)
    assert not np.isnan(recording.ecg).any() and not np.isnan(recording.ppg).any()
    # An arterial line in an ICU patient: pressures in a physiological range (mmHg).
    assert 20 < np.median(recording.abp) < 200
    assert np.percentile(recording.abp, 99) > np.percentile(recording.abp, 1) + 15


def test_windows_are_back_to_back_and_of_the_asked_length():
    recording = load_challenge2015(RECORDINGS, "v140s")
    windows = list(iter_windows(recording, window_s=30))
    assert len(windows) == 10
    assert [w.start_s for w in windows[:3]] == [0.0, 30.0, 60.0]
    assert all(len(w.ecg) == 7500 and len(w.ppg) == 7500 and len(w.abp) == 7500 for w in windows)
