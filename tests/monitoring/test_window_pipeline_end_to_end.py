"""Device key -> upload -> real Celery worker -> stored verdict and features, exactly once."""
import json

import numpy as np
import pytest
from rest_framework.test import APIClient

from clinops.base.tasks import enqueue_on_commit
from monitoring.ingest.encoding import encode_compact
from monitoring.models import SignalWindow, WindowAnalysis, WindowStatus
from monitoring.signals.pipeline import PIPELINE_VERSION
from monitoring.tasks import process_window
from tests.conftest import wait_for
from tests.factories import make_clinician, make_device, make_patient, make_team

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def device_client():
    patient = make_patient(team=make_team())
    _, key = make_device(patient)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def upload(client, body):
    return client.post("/api/v1/windows/", data=json.dumps(body), content_type="application/json")


def processed(client, status_url):
    body = client.get(status_url).json()
    return body if body["status"] != WindowStatus.RECEIVED else None


@pytest.mark.parametrize("encoding", ["compact", "json"])
def test_an_uploaded_real_window_is_processed_by_the_worker_into_features(celery_worker, device_client, make_payload, encoding):
    response = upload(device_client, make_payload(0, encoding=encoding))
    assert response.status_code == 202
    result = wait_for(lambda: processed(device_client, response.json()["status_url"]), timeout_s=60)
    assert result["status"] == WindowStatus.PROCESSED, result
    analysis = result["analysis"]
    assert analysis["usable"] and analysis["reasons"] == []
    assert analysis["pipeline_version"] == PIPELINE_VERSION
    assert analysis["beat_count"] >= 5
    assert 30 <= analysis["heart_rate_bpm"] <= 220
    assert 100 <= analysis["pat_foot_ms"] <= 400
    assert analysis["processing_ms"] > 0
    for name in ("pat_foot_ms", "pat_upslope_ms", "heart_rate_bpm", "ppg_amplitude", "rise_time_ms", "pulse_width_ms"):
        assert f"{name}_median" in analysis["features"] and f"{name}_iqr" in analysis["features"]


def test_a_duplicate_upload_and_a_rerun_task_are_processed_once(celery_worker, device_client, make_payload):
    first = upload(device_client, make_payload(1, sequence=99))
    window_id = first.json()["id"]
    wait_for(lambda: processed(device_client, first.json()["status_url"]), timeout_s=60)
    again = upload(device_client, make_payload(1, sequence=99))
    assert again.status_code == 200 and again.json()["id"] == window_id
    analysis = WindowAnalysis.objects.get(window_id=window_id)
    processed_at = SignalWindow.objects.get(pk=window_id).processed_at
    # A redelivered or re-sent task for the same window changes nothing.
    enqueue_on_commit(process_window, window_id)
    enqueue_on_commit(process_window, window_id)
    marker = upload(device_client, make_payload(2, sequence=100)).json()
    wait_for(lambda: processed(device_client, marker["status_url"]), timeout_s=60)
    assert list(WindowAnalysis.objects.filter(window_id=window_id)) == [analysis]
    assert WindowAnalysis.objects.get(window_id=window_id).created_at == analysis.created_at
    assert SignalWindow.objects.get(pk=window_id).processed_at == processed_at
    assert SignalWindow.objects.count() == 2


def test_a_flat_ppg_window_is_kept_and_marked_unusable_with_its_reason(celery_worker, device_client, make_payload):
    body = make_payload(3)
    body["ppg"]["data"] = encode_compact(np.full(7500, 1200, dtype=np.int16), "int16")
    response = upload(device_client, body)
    result = wait_for(lambda: processed(device_client, response.json()["status_url"]), timeout_s=60)
    assert result["status"] == WindowStatus.REJECTED
    assert "flatline" in result["analysis"]["reasons"]
    assert any(issue["channel"] in {"ppg", "both"} for issue in result["analysis"]["issues"])
    assert SignalWindow.objects.filter(pk=response.json()["id"]).exists()


def test_the_care_team_reads_the_result(celery_worker, make_payload):
    team = make_team()
    patient = make_patient(team=team)
    _, key = make_device(patient)
    device = APIClient()
    device.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    status_url = upload(device, make_payload(4)).json()["status_url"]
    clinician = APIClient()
    clinician.force_login(make_clinician(team=team).user)
    result = wait_for(lambda: processed(clinician, status_url), timeout_s=60)
    assert result["patient"] == patient.pk and result["analysis"] is not None


def test_a_real_mixed_rate_window_ecg_500_hz_ppg_125_hz_goes_through_api_and_worker(celery_worker, device_client):
    import datetime as dt

    import wfdb
    from django.conf import settings
    from django.utils import timezone

    from monitoring.ingest.devicesim import window_payload
    from monitoring.signals.recordings import RecordingWindow

    record = wfdb.rdrecord(str(settings.RECORDINGS_DIR / "wfdb-samples" / "multi-segment" / "041s" / "041s"), smooth_frames=False)
    rates = [record.fs * spf for spf in record.samps_per_frame]
    ecg_i, ppg_i = record.sig_name.index("III"), record.sig_name.index("PLETH")
    # The two 8-s segments back to back: 16 s, 8000 ECG samples at 500 Hz and 2000 PPG samples at 125 Hz.
    window = RecordingWindow(record="041s", start_s=0, ecg=record.e_p_signal[ecg_i], ecg_fs=rates[ecg_i],
                             ppg=record.e_p_signal[ppg_i], ppg_fs=rates[ppg_i], abp=None)
    body = window_payload(window, sequence=1, recorded_at=timezone.now() - dt.timedelta(minutes=1))
    response = upload(device_client, body)
    assert response.status_code == 202, response.json()
    result = wait_for(lambda: processed(device_client, response.json()["status_url"]), timeout_s=60)
    assert (result["ecg_fs"], result["ppg_fs"], result["duration_s"]) == (500.0, 125.0, 16.0)
    assert result["status"] == WindowStatus.PROCESSED, result["analysis"]
    assert 60 <= result["analysis"]["heart_rate_bpm"] <= 150
    assert 100 <= result["analysis"]["pat_foot_ms"] <= 400


def test_a_window_whose_task_was_lost_is_swept_up_and_processed(celery_worker, device_client, make_payload):
    import datetime as dt

    from django.db import transaction
    from django.utils import timezone

    from monitoring.tasks import sweep_unprocessed_windows

    # Given a window stored while the broker was unreachable: its task never reached the queue.
    with transaction.atomic():
        response = upload(device_client, make_payload(5, sequence=500))
        transaction.get_connection().run_on_commit.clear()
    window_id = response.json()["id"]
    assert sweep_unprocessed_windows() == 0  # sent moments ago: not yet due for a re-send
    SignalWindow.objects.filter(pk=window_id).update(enqueued_at=timezone.now() - dt.timedelta(minutes=11))
    assert SignalWindow.objects.get(pk=window_id).status == WindowStatus.RECEIVED
    # When the periodic sweeper runs, then the real worker processes it, once.
    assert sweep_unprocessed_windows() == 1
    assert sweep_unprocessed_windows() == 0  # claimed: not re-sent again within 10 min
    wait_for(lambda: processed(device_client, response.json()["status_url"]), timeout_s=60)
    assert WindowAnalysis.objects.filter(window_id=window_id).count() == 1


def test_cuff_reading_then_windows_give_calibrated_estimates_in_the_worker(celery_worker, make_payload):
    from clinops.base.audit import SYSTEM
    from monitoring.bp import registry
    from monitoring.models import BPEstimate
    from tests.monitoring.test_bp_registry import register

    registry.model_version_promote(actor=SYSTEM, model=register("carry-forward", test_mae=5.0, kind="baseline"))
    patient = make_patient(team=make_team())
    _, key = make_device(patient)
    device = APIClient()
    device.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    first = make_payload(0, sequence=1)
    cuff = {"measured_at": first["recorded_at"], "sbp_mmhg": 131, "dbp_mmhg": 79}
    assert device.post("/api/v1/cuff-readings/", data=json.dumps(cuff), content_type="application/json").status_code == 201
    uploads = [upload(device, make_payload(i, sequence=i + 1)).json() for i in range(3)]
    for body in uploads:
        wait_for(lambda body=body: processed(device, body["status_url"]), timeout_s=60)
    estimates = wait_for(lambda: list(BPEstimate.objects.filter(patient=patient))
                         if BPEstimate.objects.filter(patient=patient).count() == 3 else None, timeout_s=60)
    assert {(e.sbp_mmhg, e.dbp_mmhg) for e in estimates} == {(131.0, 79.0)}
    assert {e.window_id for e in estimates} == {b["id"] for b in uploads}
    assert all(e.calibration.cuff_reading.source == "device" for e in estimates)
