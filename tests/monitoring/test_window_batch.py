"""A batch upload is stored and processed in bulk (one duplicate lookup, one insert, one task)
while every window keeps its own answer, its own analysis and its own estimate."""
import datetime as dt
import inspect
import json

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from clinops.base.audit import SYSTEM
from monitoring.bp import cuff_calibration, estimation, registry
from monitoring.ingest import intake
from monitoring.models import BPEstimate, SignalWindow, WindowAnalysis, WindowStatus
from tests.monitoring.test_bp_registry import register

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]
BATCH = "/api/v1/windows/batch/"


@pytest.fixture
def device_client(device_and_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {device_and_key[1]}")
    return client


def send(client, windows):
    return client.post(BATCH, data=json.dumps({"windows": windows}), content_type="application/json")


def test_a_mixed_batch_answers_each_window_in_order_and_queues_one_task_for_the_new_ones(
        device_client, make_payload, django_capture_on_commit_callbacks):
    stored = send(device_client, [make_payload(0, sequence=10)]).json()["results"][0]
    windows = [
        make_payload(1, sequence=11),                 # new
        make_payload(0, sequence=10),                 # stored before: duplicate
        make_payload(2, sequence=12, duration_s=20),  # invalid: rejected, nothing stored
        make_payload(3, sequence=13),                 # new
        make_payload(4, sequence=11),                 # repeats a sequence of this batch: duplicate of it
        "not a window",                               # rejected
    ]
    with django_capture_on_commit_callbacks() as sent:
        response = send(device_client, windows)
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 2)
    results = body["results"]
    assert [(r["index"], r["result"]) for r in results] == [
        (0, "accepted"), (1, "duplicate"), (2, "rejected"), (3, "accepted"), (4, "duplicate"), (5, "rejected")]
    assert results[1]["id"] == stored["id"] and results[4]["id"] == results[0]["id"]
    assert "ecg" in results[2]["errors"] and "non_field_errors" in results[5]["errors"]
    assert {r["idempotency_key"].rsplit(":", 1)[1] for r in results if "id" in r} == {"10", "11", "13"}
    assert sorted(SignalWindow.objects.values_list("sequence", flat=True)) == [10, 11, 13]
    # One task for the batch, carrying the ids of the windows it stored (never the data).
    [callback] = sent
    queued = inspect.getclosurevars(callback).nonlocals  # clinops.base.tasks.enqueue_on_commit's closure
    assert queued["task"].name == "monitoring.tasks.process_windows"
    assert queued["args"] == ([results[0]["id"], results[3]["id"]],)


def test_a_null_item_or_a_lone_surrogate_rejects_only_its_own_window(device_client, make_payload):
    surrogate = make_payload(1, sequence=21)
    surrogate["ecg"]["dtype"] = "\ud800"
    body = json.dumps({"windows": [make_payload(0, sequence=20), None, surrogate, make_payload(3, sequence=23)]})
    answer = device_client.post(BATCH, data=body, content_type="application/json")
    assert answer.status_code == 200, answer.content[:500]
    results = answer.json()["results"]
    assert [r["result"] for r in results] == ["accepted", "rejected", "rejected", "accepted"]
    assert "lone UTF-16 surrogate" in results[2]["errors"]["ecg"][0]
    assert "non_field_errors" in results[1]["errors"]
    assert sorted(SignalWindow.objects.values_list("sequence", flat=True)) == [20, 23]


def test_a_lone_surrogate_in_a_single_upload_or_a_symptom_report_is_a_400_storing_nothing(device_client, make_payload,
                                                                                          client_for):
    from tests.factories import make_patient
    from therapy.models import SymptomReport

    payload = make_payload(0, sequence=30)
    payload["ppg"]["dtype"] = "\ud800"
    answer = device_client.post("/api/v1/windows/", data=json.dumps(payload), content_type="application/json")
    assert answer.status_code == 400 and "ppg" in answer.json()["extra"]["fields"]
    patient = make_patient()
    report = client_for(patient.user).post(
        f"/api/v1/patients/{patient.pk}/symptom-reports/", data=json.dumps({"kind": "symptom", "symptom": "\ud800"}),
        content_type="application/json")
    assert report.status_code == 400 and not SignalWindow.objects.exists() and not SymptomReport.objects.exists()


def test_a_batch_of_only_duplicates_and_rejects_queues_nothing(device_client, make_payload,
                                                              django_capture_on_commit_callbacks):
    send(device_client, [make_payload(0, sequence=1)])
    with django_capture_on_commit_callbacks() as sent:
        body = send(device_client, [make_payload(0, sequence=1), make_payload(1, sequence=2, duration_s=20)]).json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (0, 1, 1)
    assert sent == []


def test_the_rejected_window_of_a_batch_stores_nothing_and_the_same_batch_again_is_all_duplicates(
        device_client, make_payload):
    windows = [make_payload(i, sequence=100 + i) for i in range(4)]
    windows[2]["recorded_at"] = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    first = send(device_client, windows).json()
    assert [r["result"] for r in first["results"]] == ["accepted", "accepted", "rejected", "accepted"]
    again = send(device_client, windows).json()
    assert [r["result"] for r in again["results"]] == ["duplicate", "duplicate", "rejected", "duplicate"]
    assert [r.get("id") for r in again["results"]] == [r.get("id") for r in first["results"]]
    assert SignalWindow.objects.count() == 3 and not SignalWindow.objects.filter(sequence=102).exists()


def test_a_processed_batch_gets_one_analysis_and_one_estimate_per_window_and_a_rerun_changes_nothing(
        device, patient, make_payload, processed_window_at):
    from monitoring.ingest.serializers import WindowInput

    registry.model_version_promote(actor=SYSTEM, model=register("carry-forward", test_mae=5.0, kind="baseline"))
    start = timezone.now().replace(microsecond=0) - dt.timedelta(hours=2)
    processed_window_at(start, 0)
    cuff_calibration.cuff_reading_record(actor=SYSTEM, patient=patient, measured_at=start, sbp_mmhg=142, dbp_mmhg=88,
                                 source="clinician")
    uploads = []
    for i in range(1, 7):
        fields = WindowInput(data=make_payload(i, sequence=i, recorded_at=(start + dt.timedelta(minutes=5 * i)).isoformat()),
                             context={"device": device})
        fields.is_valid(raise_exception=True)
        v = fields.validated_data
        uploads.append(intake.WindowUpload(sequence=v["sequence"], recorded_at=v["recorded_at"],
                                             duration_s=v["duration_s"], encoding=v["encoding"], channels=v["channels"]))
    ids = [w.pk for w, created in intake.windows_receive(device=device, uploads=uploads)]

    analyses = intake.windows_process(window_ids=ids)
    assert sorted(analyses) == sorted(ids)
    usable = [i for i, a in analyses.items() if a.usable]
    assert usable
    estimates = estimation.windows_estimate(window_ids=usable, analyses=analyses)
    assert all(len(estimates[i]) == 1 for i in usable)
    assert {(e.sbp_mmhg, e.dbp_mmhg) for rows in estimates.values() for e in rows} == {(142.0, 88.0)}
    # Windows 5 and 10 min after the reading are part of its calibration; the rest are not.
    own = [i for i in usable if any("part of its own calibration" in f for f in estimates[i][0].flags)]
    assert set(own) == {w.pk for w in SignalWindow.objects.filter(pk__in=usable, sequence__in=[1, 2])}
    for window in SignalWindow.objects.filter(pk__in=ids):
        assert window.status == (WindowStatus.PROCESSED if window.pk in usable else WindowStatus.REJECTED)

    # A redelivered batch (or one window of it alone) changes nothing.
    rows = (WindowAnalysis.objects.count(), BPEstimate.objects.count())
    again = intake.windows_process(window_ids=ids)
    assert {i: a.pk for i, a in again.items()} == {i: a.pk for i, a in analyses.items()}
    assert estimation.windows_estimate(window_ids=usable, analyses=again) == estimates
    assert estimation.window_estimate(window_id=usable[0]) == estimates[usable[0]]
    assert (WindowAnalysis.objects.count(), BPEstimate.objects.count()) == rows
