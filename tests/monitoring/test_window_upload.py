"""POST /api/v1/windows/: authenticated, validated field by field, idempotent, size-capped, throttled."""
import base64
import datetime as dt
import gzip
import io
import json
import zipfile

import numpy as np
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from clinops.base.audit import SYSTEM
from monitoring.ingest.apis import DeviceUploadThrottle
from monitoring.ingest.encoding import unpack_window
from monitoring.models import SignalWindow, WindowStatus
from patients import services
from tests.factories import make_clinician, make_device, make_patient, make_team

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_cache")]
UPLOAD, BATCH = "/api/v1/windows/", "/api/v1/windows/batch/"


@pytest.fixture
def device_client(device_and_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {device_and_key[1]}")
    return client


def post(client, body, **headers):
    return client.post(UPLOAD, data=json.dumps(body), content_type="application/json", **headers)


def test_a_compact_window_is_accepted_with_202_and_a_status_url(device_client, make_payload, device_and_key):
    response = post(device_client, make_payload(0, sequence=7))
    assert response.status_code == 202, response.json()
    body = response.json()
    window = SignalWindow.objects.get(pk=body["id"])
    assert body["idempotency_key"] == f"{device_and_key[0].serial}:7"
    assert body["status"] == WindowStatus.RECEIVED
    assert body["status_url"].endswith(f"/api/v1/windows/{window.pk}/")
    assert (window.device, window.patient, window.ecg_fs, window.ppg_fs, window.duration_s) == (
        device_and_key[0], device_and_key[0].patient, 250.0, 250.0, 30.0)


def test_the_raw_window_is_stored_as_received_and_recoverable(device_client, make_payload, real_windows):
    body = make_payload(0)
    window = SignalWindow.objects.get(pk=post(device_client, body).json()["id"])
    channels = unpack_window(bytes(window.raw))
    assert channels["ecg"].raw.dtype == np.int16 and len(channels["ecg"].raw) == 7500
    # int16 at 1 µV: the stored ECG is the real one within half a count.
    assert np.max(np.abs(channels["ecg"].physical() - real_windows[0].ecg)) <= 0.0005 + 1e-9
    # Not deflated (it cost 40 % of an upload's CPU for -23 %): the samples plus the .npz headers.
    with zipfile.ZipFile(io.BytesIO(bytes(window.raw))) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    assert 2 * 2 * 7500 < window.raw_bytes < 2 * 2 * 7500 + 2048


def test_a_window_stored_deflated_before_reads_the_same(device_client, make_payload):
    window = SignalWindow.objects.get(pk=post(device_client, make_payload(0)).json()["id"])
    channels = unpack_window(bytes(window.raw))
    arrays = {}
    for name, channel in channels.items():  # how pack_window wrote windows until 2026-12-01
        arrays[f"{name}_raw"] = channel.raw
        arrays[f"{name}_meta"] = np.array([channel.fs, channel.scale, channel.offset], dtype=np.float64)
    deflated = io.BytesIO()
    np.savez_compressed(deflated, **arrays)
    older = unpack_window(deflated.getvalue())
    assert set(older) == set(channels) == {"ecg", "ppg"}
    for name in channels:
        assert np.array_equal(older[name].raw, channels[name].raw) and older[name].fs == channels[name].fs


def test_a_json_window_is_accepted(device_client, make_payload, real_windows):
    response = post(device_client, make_payload(1, encoding="json"))
    assert response.status_code == 202, response.json()
    window = SignalWindow.objects.get(pk=response.json()["id"])
    assert window.encoding == "json"
    stored = unpack_window(bytes(window.raw))["ppg"].physical()
    assert np.allclose(stored, real_windows[1].ppg, atol=1e-4)


def test_a_gzip_body_is_accepted(device_client, make_payload):
    raw = gzip.compress(json.dumps(make_payload(2)).encode())
    response = device_client.post(UPLOAD, data=raw, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 202, response.content


def test_the_same_idempotency_key_returns_the_original_window(device_client, make_payload):
    first = post(device_client, make_payload(0, sequence=42))
    again = post(device_client, make_payload(3, sequence=42))
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert SignalWindow.objects.count() == 1


def test_the_same_sequence_from_another_device_is_a_different_window(device_client, make_payload, patient):
    _, other_key = make_device(patient)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    assert post(device_client, make_payload(0, sequence=1)).status_code == 202
    assert post(other, make_payload(0, sequence=1)).status_code == 202


def test_unknown_key_gets_401_and_revoked_device_gets_403(make_payload, device_and_key):
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Api-Key abcdefgh.nope")
    assert post(stranger, make_payload()).status_code == 401
    device, key = device_and_key
    services.device_revoke(actor=SYSTEM, device=device, reason="lost")
    revoked = APIClient()
    revoked.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert post(revoked, make_payload()).status_code == 403
    assert SignalWindow.objects.count() == 0


def test_a_clinician_session_cannot_upload(make_payload, team):
    client = APIClient()
    client.force_login(make_clinician(team=team).user)
    assert post(client, make_payload()).status_code in {401, 403}


def _shorten(body, seconds):
    for name in ("ecg", "ppg"):
        raw = base64.b64decode(body[name]["data"])
        body[name]["data"] = base64.b64encode(raw[: int(seconds * body[name]["fs"]) * 2]).decode()
    body["duration_s"] = seconds
    return body


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda b: _shorten(b, 5), "duration_s", "greater than or equal to 8"),
        (lambda b: {**b, "duration_s": 150}, "duration_s", "less than or equal to 120"),
        (lambda b: {**b, "ecg": {**b["ecg"], "fs": 100}}, "ecg", "greater than or equal to 125"),
        (lambda b: {**b, "ppg": {**b["ppg"], "fs": 2000}}, "ppg", "less than or equal to 1000"),
        (lambda b: {**b, "duration_s": 20}, "ecg", "needs 5000"),
        (lambda b: {**b, "recorded_at": (timezone.now() + dt.timedelta(minutes=10)).isoformat()}, "recorded_at", "in the future"),
        (lambda b: {**b, "recorded_at": (timezone.now() - dt.timedelta(days=31)).isoformat()}, "recorded_at", "older than 30 days"),
        (lambda b: {**b, "recorded_at": "yesterday"}, "recorded_at", "format"),
        (lambda b: {**b, "recorded_at": timezone.now().replace(tzinfo=None).isoformat()}, "recorded_at", "time zone"),
        (lambda b: {**b, "ecg": {"fs": 250, "samples": [0.1] * 7499 + ["NaN"]}}, "ecg", "numbers"),
        (lambda b: {**b, "ecg": {"fs": 250, "samples": [0.1] * 7499 + [True]}}, "ecg", "numbers"),
        (lambda b: {**b, "ecg": {"fs": 250, "samples": [0.1] * 7499 + [10**400]}}, "ecg", "float32 range"),
        (lambda b: {**b, "ecg": {"fs": "fast", "samples": [0.1] * 7500}}, "ecg", "valid number"),
        (lambda b: {**b, "ecg": [1, 2, 3]}, "ecg", "dictionary"),
        (lambda b: {**b, "duration_s": "NaN"}, "duration_s", "valid number"),
        (lambda b: {**b, "sequence": 2**64}, "sequence", "less than or equal to"),
        (lambda b: {**b, "ecg": {"fs": 250, "samples": [0.1] * 7499 + [1e300]}}, "ecg", "float32 range"),
        (lambda b: {**b, "ecg": {"fs": 250, "samples": [0.1] * 7499 + ["x"]}}, "ecg", "numbers"),
        (lambda b: {**b, "ppg": {**b["ppg"], "data": "!!!"}}, "ppg", "base64"),
        (lambda b: {**b, "ppg": {**b["ppg"], "dtype": "int64"}}, "ppg", "valid choice"),
        (lambda b: {**b, "ppg": {"fs": 250, "dtype": "float32",
                                 "data": base64.b64encode(np.full(7500, np.nan, "<f4").tobytes()).decode()}}, "ppg", "NaN or infinite"),
        (lambda b: {**b, "ppg": {"fs": 250}}, "ppg", "Send samples"),
        (lambda b: {**b, "ecg": {**b["ecg"], "scale": 0}}, "ecg", "must not be zero"),
        (lambda b: {k: v for k, v in b.items() if k != "sequence"}, "sequence", "required"),
        (lambda b: {**b, "sequence": -1}, "sequence", "greater than or equal to 0"),
        (lambda b: {**b, "serial": "SOMEONE-ELSE"}, "serial", "does not match"),
    ],
)
def test_bad_windows_get_field_level_400_and_nothing_is_stored(device_client, make_payload, mutate, field, words):
    response = post(device_client, mutate(make_payload(0)))
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body, body
    assert words in json.dumps(body[field]), body[field]
    assert body["message"] == "Validation failed."
    assert SignalWindow.objects.count() == 0


def test_a_nan_literal_in_json_is_refused(device_client, make_payload):
    text = json.dumps(make_payload(0, encoding="json")).replace("[", "[NaN, ", 1)
    response = device_client.post(UPLOAD, data=text, content_type="application/json")
    assert response.status_code == 400 and "NaN" in response.json()["message"]


def test_missing_samples_marked_null_are_accepted_for_the_quality_gate(device_client, make_payload):
    body = make_payload(0, encoding="json")
    body["ppg"]["samples"][100:120] = [None] * 20
    response = post(device_client, body)
    assert response.status_code == 202
    stored = unpack_window(bytes(SignalWindow.objects.get().raw))["ppg"].physical()
    assert np.isnan(stored[100:120]).all() and not np.isnan(stored[:100]).any()


def test_a_body_over_the_size_limit_gets_413(device_client, make_payload, settings):
    settings.WINDOW_UPLOAD_MAX_BYTES = 10_000
    response = post(device_client, make_payload(0))
    assert response.status_code == 413
    assert SignalWindow.objects.count() == 0


def test_a_gzip_bomb_gets_413(device_client, settings):
    settings.WINDOW_UPLOAD_MAX_BYTES = 100_000
    bomb = gzip.compress(b'{"sequence": 1, "pad": "' + b"0" * 5_000_000 + b'"}')
    assert len(bomb) < 100_000
    response = device_client.post(UPLOAD, data=bomb, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413


def test_invalid_gzip_gets_400(device_client):
    response = device_client.post(UPLOAD, data=b"not gzip", content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 400


def test_uploads_beyond_the_device_rate_get_429(device_client, make_payload, monkeypatch):
    monkeypatch.setattr(DeviceUploadThrottle, "rate", "3/min", raising=False)
    codes = [post(device_client, make_payload(n, sequence=n)).status_code for n in range(5)]
    assert codes == [202, 202, 202, 429, 429]
    assert SignalWindow.objects.count() == 3


def test_a_batch_accepts_and_rejects_each_window_on_its_own(device_client, make_payload):
    good, dup = make_payload(0, sequence=1), make_payload(1, sequence=2)
    post(device_client, dup)
    bad = make_payload(2, sequence=3, duration_s=20)
    response = device_client.post(BATCH, data=json.dumps({"windows": [good, dup, bad]}), content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (1, 1, 1)
    assert [r["result"] for r in body["results"]] == ["accepted", "duplicate", "rejected"]
    assert "ecg" in body["results"][2]["errors"]
    assert SignalWindow.objects.count() == 2


def test_a_batch_of_more_than_100_windows_is_refused(device_client, make_payload):
    one = make_payload(0)
    response = device_client.post(BATCH, data=json.dumps({"windows": [one] * 101}), content_type="application/json")
    assert response.status_code == 400 and "windows" in response.json()
    assert SignalWindow.objects.count() == 0


def test_the_window_is_readable_by_its_device_and_the_care_team_only(device_client, make_payload, team, patient):
    window_id = post(device_client, make_payload(0)).json()["id"]
    url = f"/api/v1/windows/{window_id}/"
    assert device_client.get(url).status_code == 200
    member = APIClient()
    member.force_login(make_clinician(team=team).user)
    assert member.get(url).json()["status"] == "received"
    outsider = APIClient()
    outsider.force_login(make_clinician(team=make_team()).user)
    assert outsider.get(url).status_code == 404
    _, other_key = make_device(make_patient())
    other_device = APIClient()
    other_device.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    assert other_device.get(url).status_code == 404
    assert APIClient().get(url).status_code in {401, 403}


def test_the_openapi_schema_documents_both_encodings_and_the_docs_work_offline(client):
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    assert "/api/v1/windows/" in schema["paths"] and "/api/v1/windows/batch/" in schema["paths"]
    channel = schema["components"]["schemas"]["ChannelInput"]["properties"]
    assert {"samples", "data", "dtype", "fs", "scale", "offset"} <= set(channel)
    page = client.get("/api/v1/docs/").content.decode()
    assert "cdn" not in page.lower() and "/static/drf_spectacular_sidecar/" in page


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,  # nested deeper than any parser should follow
        b'{"sequence": ' + b"9" * 5000 + b"}",  # an integer of more digits than Python converts
        b"[1, 2, 3]",  # a list, not a window
        b'"just a string"',
        b"\xff\xfe not utf-8",
    ],
)
@pytest.mark.parametrize("route", [UPLOAD, BATCH])
def test_malformed_bodies_get_400_never_500(device_client, raw, route):
    response = device_client.post(route, data=raw, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["message"]
    assert SignalWindow.objects.count() == 0


def test_one_malformed_item_in_a_batch_rejects_only_itself(device_client, make_payload):
    overflowing = make_payload(1, sequence=2, encoding="json")
    overflowing["ecg"]["samples"][0] = 10**400
    items = [make_payload(0, sequence=1), overflowing, 5, "x", [1], make_payload(2, sequence=3)]
    response = device_client.post(BATCH, data=json.dumps({"windows": items}), content_type="application/json")
    assert response.status_code == 200, response.content[:500]
    assert [r["result"] for r in response.json()["results"]] == ["accepted", "rejected", "rejected", "rejected", "rejected", "accepted"]
    assert SignalWindow.objects.count() == 2


def test_a_duplicate_upload_queues_no_second_task(device_client, make_payload, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as first:
        post(device_client, make_payload(0, sequence=5))
    with django_capture_on_commit_callbacks() as again:
        assert post(device_client, make_payload(0, sequence=5)).status_code == 200
    assert (len(first), len(again)) == (1, 0)


@pytest.mark.parametrize("status", ["pending", "withdrawn"])
def test_no_data_is_accepted_for_a_patient_without_consent(device_client, make_payload, patient, status):
    services.patient_consent_record(actor=SYSTEM, patient=patient, status=status)
    response = post(device_client, make_payload(0))
    assert response.status_code == 403
    assert "consent" in response.json()["message"] and response.json()["extra"]["consent_status"] == status
    batch = device_client.post(BATCH, data=json.dumps({"windows": [make_payload(1)]}), content_type="application/json")
    assert batch.status_code == 403
    assert SignalWindow.objects.count() == 0


def test_a_patient_cannot_read_raw_windows_and_an_admin_can(device_client, make_payload, patient):
    from tests.factories import make_admin

    url = f"/api/v1/windows/{post(device_client, make_payload(0)).json()['id']}/"
    as_patient = APIClient()
    as_patient.force_login(patient.user)
    assert as_patient.get(url).status_code == 404
    as_admin = APIClient()
    as_admin.force_login(make_admin())
    assert as_admin.get(url).status_code == 200


def test_with_the_redis_cache_down_an_upload_is_still_stored_not_refused(device_client, make_payload, settings):
    from clinops import localservices

    dead = f"redis://127.0.0.1:{localservices.free_port()}/1"
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": dead}}
    response = post(device_client, make_payload(0, sequence=4242))
    assert response.status_code == 202, response.content
    assert SignalWindow.objects.filter(sequence=4242, status=WindowStatus.RECEIVED).exists()


def test_the_same_window_under_a_new_sequence_is_a_duplicate_and_never_counted_twice(device_client, make_payload):
    first = post(device_client, make_payload(0, sequence=7))
    # The wearable lost its counter (reset, reinstall) and sends the window again as number 1.
    again = post(device_client, make_payload(0, sequence=1))
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["idempotency_key"].endswith(":7")
    in_batch = device_client.post(BATCH, data=json.dumps({"windows": [make_payload(1, sequence=8), make_payload(1, sequence=9)]}),
                                  content_type="application/json").json()
    assert [r["result"] for r in in_batch["results"]] == ["accepted", "duplicate"]
    assert in_batch["results"][1]["id"] == in_batch["results"][0]["id"]
    assert sorted(SignalWindow.objects.values_list("sequence", flat=True)) == [7, 8]


@pytest.mark.postgres
def test_postgresql_stores_the_raw_window_without_trying_to_compress_it():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")
    with connection.cursor() as cursor:
        cursor.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'monitoring_signalwindow'::regclass "
                       "AND attname = 'raw'")
        assert cursor.fetchone() == ("e",)  # EXTERNAL: out of line, never pglz
