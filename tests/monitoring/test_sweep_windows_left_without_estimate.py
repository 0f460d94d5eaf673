"""A worker killed between a window's analysis and its estimate leaves a usable, processed window
without an estimate; the minute sweeper finds it (10 min on) and asks for the estimate again,
once per 10 min, and leaves alone what needs no estimate or has one."""
import datetime as dt

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerOperationalError

from monitoring import tasks
from monitoring.ingest import intake
from monitoring.models import SignalWindow, WindowAnalysis, WindowStatus
from monitoring.signals.pipeline import PIPELINE_VERSION
from tests.therapy.conftest import clinic, store_estimates  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]  # the time arithmetic, on both


def processed_window(patient, device, *, minutes_ago: float, sequence: int) -> SignalWindow:
    at = timezone.now() - dt.timedelta(minutes=minutes_ago)
    window = SignalWindow.objects.create(
        device=device, patient=patient, sequence=sequence, recorded_at=at - dt.timedelta(minutes=1), duration_s=30,
        ecg_fs=250, ppg_fs=250, encoding="compact", raw=b"", raw_sha256="", raw_bytes=0, firmware="1", enqueued_at=at,
        status=WindowStatus.PROCESSED, processed_at=at)
    WindowAnalysis.objects.create(window=window, pipeline_version=PIPELINE_VERSION, usable=True, processing_ms=1.0)
    return window


def test_a_processed_window_left_without_its_estimate_is_estimated_again(clinic, monkeypatch):
    patient, device = clinic["patient"], clinic["device"]
    store_estimates(patient, device, [(30, 140, 88)])  # the patient is calibrated; this window has its estimate
    sent = []
    monkeypatch.setattr(tasks.estimate_windows, "delay", lambda window_ids: sent.extend(window_ids))
    lost = processed_window(patient, device, minutes_ago=11, sequence=900)
    recent = processed_window(patient, device, minutes_ago=2, sequence=901)        # its estimate may be on its way
    old = processed_window(patient, device, minutes_ago=5 * 60, sequence=902)      # left to the broker's redelivery
    assert tasks.sweep_unprocessed_windows() == 1 and sent == [lost.pk]
    assert tasks.sweep_unprocessed_windows() == 0  # claimed: not again within 10 min
    assert recent.pk not in sent and old.pk not in sent


def test_a_window_no_calibration_covers_is_not_swept(clinic, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.estimate_windows, "delay", lambda window_ids: sent.extend(window_ids))
    processed_window(clinic["patient"], clinic["device"], minutes_ago=11, sequence=910)
    assert tasks.sweep_unprocessed_windows() == 0 and sent == []


def received_window(patient, device, *, sent_minutes_ago: float, sequence: int) -> SignalWindow:
    at = timezone.now() - dt.timedelta(minutes=sent_minutes_ago)
    return SignalWindow.objects.create(
        device=device, patient=patient, sequence=sequence, recorded_at=at - dt.timedelta(minutes=1), duration_s=30,
        ecg_fs=250, ppg_fs=250, encoding="compact", raw=b"x", raw_sha256="", raw_bytes=1, firmware="1", enqueued_at=at,
        status=WindowStatus.RECEIVED)


def test_a_large_backlog_is_resent_in_batches_each_window_once(clinic, monkeypatch):
    # 5,000 windows re-sent one task each once held the live uploads behind them for a minute.
    patient, device = clinic["patient"], clinic["device"]
    store_estimates(patient, device, [(30, 140, 88)])
    waiting = [received_window(patient, device, sent_minutes_ago=20, sequence=1000 + k).pk
               for k in range(intake.WINDOWS_PER_TASK + 30)]
    unestimated = [processed_window(patient, device, minutes_ago=11, sequence=2000 + k).pk
                   for k in range(intake.WINDOWS_PER_TASK + 5)]
    processing, estimating = [], []
    monkeypatch.setattr(tasks.process_windows, "delay", lambda window_ids: processing.append(window_ids))
    monkeypatch.setattr(tasks.estimate_windows, "delay", lambda window_ids: estimating.append(window_ids))

    assert tasks.sweep_unprocessed_windows() == len(waiting) + len(unestimated)
    assert [len(batch) for batch in processing] == [intake.WINDOWS_PER_TASK, 30]
    assert [len(batch) for batch in estimating] == [intake.WINDOWS_PER_TASK, 5]
    assert sorted(sum(processing, [])) == sorted(waiting) and sorted(sum(estimating, [])) == sorted(unestimated)
    assert tasks.sweep_unprocessed_windows() == 0  # claimed: not again within 10 min


def test_a_window_is_claimed_once_whoever_asks(clinic):
    patient, device = clinic["patient"], clinic["device"]
    due = received_window(patient, device, sent_minutes_ago=11, sequence=3000)
    sent_lately = received_window(patient, device, sent_minutes_ago=9, sequence=3001)
    processed = processed_window(patient, device, minutes_ago=11, sequence=3002)
    now = timezone.now()
    ids = [processed.pk, sent_lately.pk, due.pk]

    assert intake.windows_claim_for_resend(window_ids=ids, now=now) == [due.pk]
    assert intake.windows_claim_for_resend(window_ids=ids, now=now) == []  # claimed a moment ago (by this or another sweeper)
    assert SignalWindow.objects.get(pk=due.pk).enqueued_at == now
    assert intake.windows_claim_for_resend(window_ids=ids, now=now, status=WindowStatus.PROCESSED) == [processed.pk]
    # Ten minutes on, it may be claimed again.
    assert intake.windows_claim_for_resend(window_ids=ids, now=now + dt.timedelta(minutes=10, seconds=1)) \
        == [sent_lately.pk, due.pk]
    assert intake.windows_claim_for_resend(window_ids=[], now=now) == []


def test_a_batch_the_broker_refuses_is_not_held_back(clinic, monkeypatch):
    # The claim is rolled back with the failed send: the next minute's sweep sends the windows,
    # instead of leaving them 10 min without a message.
    patient, device = clinic["patient"], clinic["device"]
    waiting = [received_window(patient, device, sent_minutes_ago=20, sequence=4000 + k).pk for k in range(3)]

    def broker_down(window_ids):
        raise BrokerOperationalError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(tasks.process_windows, "delay", broker_down)
    with pytest.raises(BrokerOperationalError):
        tasks.sweep_unprocessed_windows()
    sent = []
    monkeypatch.setattr(tasks.process_windows, "delay", lambda window_ids: sent.append(window_ids))
    assert tasks.sweep_unprocessed_windows() == 3 and sent == [waiting]
