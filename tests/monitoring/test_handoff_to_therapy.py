"""Monitoring hands new evidence up to therapy, and asks it which raw windows to keep, through the
handlers therapy registers as it loads (monitoring may not import therapy). Both fail closed: with
no handler, a new estimate or cuff reading is an error, not a skipped escalation, and the purge
drops nothing."""
import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from monitoring import handoff, tasks
from monitoring.bp import cuff_calibration
from monitoring.ingest import retention
from monitoring.models import CuffReading, WindowAnalysis, WindowStatus
from tests.factories import make_patient
from tests.monitoring.test_raw_window_retention import BLOB, window_at
from tests.therapy.conftest import NOW, clinic  # noqa: F401 - fixture
from therapy.receivers import TherapyHearsOfNewEvidence
from therapy.retention import SuggestionsKeepTheirWindows

pytestmark = pytest.mark.django_db


def test_therapy_is_the_registered_handler_and_keeper_once_the_apps_are_loaded():
    assert isinstance(handoff.new_evidence_handler.get(), TherapyHearsOfNewEvidence)
    assert isinstance(retention.raw_window_keeper.get(), SuggestionsKeepTheirWindows)


@pytest.fixture
def nobody_registered(monkeypatch):
    monkeypatch.setattr(handoff.new_evidence_handler, "_handler", None)
    monkeypatch.setattr(retention.raw_window_keeper, "_handler", None)


def test_with_no_handler_the_system_check_fails(nobody_registered):
    ids = {message.id for message in run_checks()}
    assert {"monitoring.E001", "monitoring.E002"} <= ids


def test_with_the_apps_loaded_the_system_check_passes():
    assert not {"monitoring.E001", "monitoring.E002"} & {message.id for message in run_checks()}


def test_a_window_with_no_handler_fails_its_task_before_anything_is_written(clinic, nobody_registered):
    window = window_at(clinic, days_ago=0.01, status=WindowStatus.RECEIVED, analysed=False)
    result = tasks.process_windows.apply(args=[[window.pk]])
    assert isinstance(result.result, ImproperlyConfigured)
    window.refresh_from_db()
    assert window.status == WindowStatus.RECEIVED and not WindowAnalysis.objects.filter(window=window).exists()


def test_a_cuff_reading_with_no_handler_is_refused_and_not_stored(nobody_registered):
    patient = make_patient()
    with pytest.raises(ImproperlyConfigured):
        cuff_calibration.cuff_reading_record(actor="system", patient=patient, measured_at=timezone.now(),
                                             sbp_mmhg=185.0, dbp_mmhg=95.0, source="manual")
    assert not CuffReading.objects.filter(patient=patient).exists()


def test_the_purge_with_no_keeper_drops_no_raw_signal(clinic, nobody_registered):
    window = window_at(clinic, days_ago=90)
    with pytest.raises(ImproperlyConfigured):
        retention.raw_windows_purge(now=NOW, retention_days=30)
    window.refresh_from_db()
    assert bytes(window.raw) == BLOB and window.raw_purged_at is None
