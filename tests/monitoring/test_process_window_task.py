"""process_window retries transient database errors and gives up on nothing else silently."""
import pytest
from django.db import OperationalError

from monitoring.ingest import intake
from monitoring.models import SignalWindow, WindowStatus
from monitoring.tasks import process_window
from tests.factories import make_device, make_patient

pytestmark = pytest.mark.django_db


def test_a_transient_database_error_is_retried_until_the_window_is_processed(monkeypatch):
    calls = []
    real = intake.window_process

    def flaky(*, window_id):
        calls.append(window_id)
        if len(calls) < 3:
            raise OperationalError("the database went away")
        return real(window_id=window_id)

    monkeypatch.setattr(intake, "window_process", flaky)
    result = process_window.apply(args=[12345])
    assert result.successful(), result.traceback
    assert calls == [12345, 12345, 12345]


def test_the_retry_policy_is_declared_for_transient_errors_only():
    assert OperationalError in process_window.autoretry_for
    assert ValueError not in process_window.autoretry_for
    assert process_window.max_retries >= 5


def test_a_window_whose_bytes_are_corrupt_is_marked_failed_with_the_reason():
    from monitoring.ingest.encoding import sha256_hex

    device, _ = make_device(make_patient())
    window = SignalWindow.objects.create(
        device=device, patient=device.patient, sequence=1, recorded_at="2026-11-23T10:00:00Z", duration_s=30,
        ecg_fs=250, ppg_fs=250, encoding="compact", raw=b"not an npz", raw_sha256=sha256_hex(b"not an npz"),
        raw_bytes=10, firmware="1", enqueued_at="2026-11-23T10:00:00Z",
    )
    assert intake.window_process(window_id=window.pk) is None
    window.refresh_from_db()
    assert window.status == WindowStatus.FAILED and window.failure
    # A second run changes nothing.
    failure = window.failure
    assert intake.window_process(window_id=window.pk) is None
    window.refresh_from_db()
    assert (window.status, window.failure) == (WindowStatus.FAILED, failure)


def test_a_window_that_is_gone_is_ignored():
    assert intake.window_process(window_id=987654) is None


def test_a_broker_error_while_a_crisis_estimate_asks_for_its_evaluation_is_retried_and_spares_the_others(monkeypatch):
    """By then the estimates are stored and the window is processed: only the task's retry (which
    finds the estimates and asks again) gets the evaluation sent. Ordinary estimates ask for none."""
    from types import SimpleNamespace

    from kombu.exceptions import OperationalError as BrokerOperationalError

    from monitoring import tasks
    from monitoring.handoff import new_evidence_handler
    from therapy import tasks as therapy_tasks

    assert BrokerOperationalError in tasks.process_windows.autoretry_for
    assert BrokerOperationalError in tasks.process_window.autoretry_for
    sent = []

    def publish(*, args, queue):  # the broker refuses patient 1 only
        if args == [1]:
            raise BrokerOperationalError("Redis is down")
        sent.append(args)

    monkeypatch.setattr(therapy_tasks.evaluate_patient, "apply_async", publish)
    monkeypatch.setattr(therapy_tasks.cache, "add", lambda *a, **k: True)
    monkeypatch.setattr(therapy_tasks.cache, "delete", lambda *a, **k: None)
    def estimate(patient_id, sbp, dbp=80.0, shadow=False):
        return SimpleNamespace(patient_id=patient_id, sbp_mmhg=sbp, dbp_mmhg=dbp, shadow=shadow)

    estimates = {10: [estimate(1, 185)], 11: [estimate(2, 95)], 12: [estimate(3, 140), estimate(4, 190, shadow=True)],
                 13: [estimate(5, 140, 121)]}
    with pytest.raises(BrokerOperationalError):
        tasks._check_escalations(new_evidence_handler.get(), estimates)
    assert sent == [[2], [5]]  # 1 refused; 3 ordinary; 4 a shadow model's (never acted on)
