"""/metrics: only for a scraper with the token; request latency by route name, windows processed,
upload -> estimate latency, therapy evaluations, escalations and queue depths; no patient data; and
in the production shape (gunicorn workers and a prefork Celery worker sharing
PROMETHEUS_MULTIPROC_DIR) the counters of the worker's pool processes reach the web's scrape."""
from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import redis
import requests
from celery import Celery
from django.conf import settings
from django.utils import timezone
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from clinops.base.audit import SYSTEM
from monitoring.bp import registry
from monitoring.models import BPEstimate, SignalWindow
from tests.clinops.test_production_settings import manage
from tests.conftest import wait_for
from tests.factories import make_device, make_patient, make_team
from tests.monitoring.conftest import make_payload, real_windows  # noqa: F401 - fixtures
from tests.monitoring.test_bp_registry import register
from tests.therapy.conftest import NOW, clinic, estimates, plan, week_of  # noqa: F401 - fixtures
from tests.workers import Worker, database_url_of_test_db
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion

ROOT = Path(__file__).resolve().parents[2]
TOKEN = secrets.token_urlsafe(32)
Scrape = dict[tuple[str, frozenset], float]


def parse(text: str) -> Scrape:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: Scrape, name: str, **labels: str) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def clinops_label_values(scrape: Scrape) -> set[str]:
    """The label values of ClinOps' own metrics, but a histogram's bucket bounds (`le`)."""
    return {v for name, labels in scrape if name.startswith("clinops_") for k, v in labels if k != "le"}


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, token: str = TOKEN) -> Scrape:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


# --- Who may scrape ---------------------------------------------------------------------------------

def test_without_a_configured_token_there_is_nothing_at_metrics(client, settings, db):
    settings.METRICS_TOKEN = None
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    assert client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer   ", f"Basic {TOKEN}", TOKEN])
def test_a_scraper_without_a_bearer_token_is_asked_for_one(client, token, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"clinops_" not in response.content


@pytest.mark.parametrize("wrong", ["not-the-token", TOKEN[:-1], TOKEN + "x", TOKEN.upper() + "!", "tökén\u2028"])
def test_a_wrong_token_is_refused(client, token, wrong):
    response = client.get("/metrics", headers={"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 403
    assert b"clinops_" not in response.content


def test_the_right_token_gets_every_metric_and_the_queue_depths(client, token, db):
    got = scrape(client)
    names = {name for name, _ in got}
    assert {"clinops_windows_processed_total", "clinops_therapy_evaluations_total", "clinops_escalations_raised_total",
            "clinops_upload_to_estimate_seconds_count", "clinops_celery_queue_tasks_waiting",
            "clinops_broker_up"} <= names
    assert value(got, "clinops_broker_up") == 1
    queues = {dict(labels)["queue"] for name, labels in got if name == "clinops_celery_queue_tasks_waiting"}
    assert queues == {queue.name for queue in settings.CELERY_TASK_QUEUES}
    # Every outcome and cause is there from the start, at its count so far.
    for outcome in ("usable", "rejected", "failed"):
        assert ("clinops_windows_processed_total", frozenset({("outcome", outcome)})) in got
    assert ("clinops_escalations_raised_total", frozenset({("cause", "crisis")})) in got
    assert client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405


def test_queue_depth_is_what_waits_in_redis_at_the_scrape(client, token, db, settings):
    # A broker database of its own, so the count is exactly what this test put there.
    settings.CELERY_BROKER_URL = settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + f"/{_spare_redis_db()}"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("celery", "therapy")
    broker.rpush("therapy", "a", "b", "c")
    try:
        got = scrape(client)
    finally:
        broker.delete("therapy")
    assert value(got, "clinops_celery_queue_tasks_waiting", queue="therapy") == 3
    assert value(got, "clinops_celery_queue_tasks_waiting", queue="celery") == 0


def test_an_unreachable_broker_is_a_zero_not_a_failed_scrape(client, token, db, settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{port}/0"
    got = scrape(client)
    assert value(got, "clinops_broker_up") == 0
    assert not any(name == "clinops_celery_queue_tasks_waiting" for name, _ in got)


# --- What is counted, in one process ----------------------------------------------------------------

def test_requests_are_timed_by_route_name_never_by_a_path_that_holds_ids(client, token, db, make_payload):
    patient = make_patient(team=make_team())
    device, key = make_device(patient)
    wearable = APIClient()
    wearable.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    upload = {"route": "monitoring:window-upload", "method": "POST", "status": "2xx"}
    detail = {"route": "monitoring:window-detail", "method": "GET", "status": "2xx"}
    before = scrape(client)
    answer = wearable.post("/api/v1/windows/", data=json.dumps(make_payload(0)), content_type="application/json")
    assert answer.status_code == 202
    assert wearable.get(answer.json()["status_url"]).status_code == 200
    assert client.get("/no/such/page/12345").status_code == 404
    got = scrape(client)
    assert value(got, "clinops_http_request_duration_seconds_count", **upload) == \
        value(before, "clinops_http_request_duration_seconds_count", **upload) + 1
    assert value(got, "clinops_http_request_duration_seconds_sum", **upload) > \
        value(before, "clinops_http_request_duration_seconds_sum", **upload)
    assert value(got, "clinops_http_request_duration_seconds_count", **detail) >= 1
    assert value(got, "clinops_http_request_duration_seconds_count", route="unmatched", method="GET", status="4xx") >= 1
    # No label value of ours names a patient, a device, a window or an address.
    window_id = answer.json()["id"]
    ours = clinops_label_values(got)
    assert not ours & {str(patient.pk), str(device.pk), device.serial, str(window_id)}
    assert not any("/" in v or v.isdigit() for v in ours)


def test_therapy_evaluations_and_the_escalations_they_raise_are_counted(client, token, db, clinic, plan, estimates,
                                                                         django_capture_on_commit_callbacks):
    """A crisis in a patient's week is one escalation raised; an evaluation that a broken plan field
    makes fail is counted as failed (and still raises what the escalation checks found)."""
    before = scrape(client)
    current = plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(150, 95) + [(0.6, 192, 124), (0.4, 188, 121)])
    with django_capture_on_commit_callbacks(execute=True):
        patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    after_one = scrape(client)
    assert value(after_one, "clinops_therapy_evaluations_total", outcome="completed") == \
        value(before, "clinops_therapy_evaluations_total", outcome="completed") + 1
    assert value(after_one, "clinops_escalations_raised_total", cause="crisis") == \
        value(before, "clinops_escalations_raised_total", cause="crisis") + 1

    # Stored as an API once let it through: a list where a text belongs.
    PlanVersion.objects.filter(pk=current.pk).update(exclusions=[{"kind": "pregnancy", "detail": ["week 20"]}])
    with django_capture_on_commit_callbacks(execute=True):
        patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW + dt.timedelta(minutes=5))
    after_two = scrape(client)
    assert value(after_two, "clinops_therapy_evaluations_total", outcome="failed") == \
        value(before, "clinops_therapy_evaluations_total", outcome="failed") + 1
    assert value(after_two, "clinops_escalations_raised_total", cause="evaluation failing") == \
        value(before, "clinops_escalations_raised_total", cause="evaluation failing") + 1
    # The crisis alert is still open: its new episode updates it and is not counted again.
    assert value(after_two, "clinops_escalations_raised_total", cause="crisis") == \
        value(after_one, "clinops_escalations_raised_total", cause="crisis")


# --- Settings ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, complaint", [
    ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN is too weak"),
    ({"METRICS_TOKEN": "a" * 40}, "METRICS_TOKEN is too weak"),
    ({"PROMETHEUS_MULTIPROC_DIR": "/nonexistent/clinops-metrics"},
     "PROMETHEUS_MULTIPROC_DIR='/nonexistent/clinops-metrics' is not a directory"),
])
def test_production_refuses_a_weak_token_or_a_missing_metrics_directory(overrides, complaint):
    result = manage("check", **overrides)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_production_starts_with_a_strong_token_and_a_metrics_directory(tmp_path):
    result = manage("check", METRICS_TOKEN=secrets.token_urlsafe(32), PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr


# --- The production shape: several processes, one scrape --------------------------------------------

def _spare_redis_db() -> int:
    """A Redis database of this run's own for a broker that the session's worker does not read: the
    run's database number + 8 (the test runner's default, 0, gives 8; tests usually run on 3 -> 11)."""
    return (int(settings.REDIS_URL.rsplit("/", 1)[1] or 0) + 8) % 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Machine:
    """gunicorn (2 workers) and a Celery worker (2 pool processes) as compose.yaml runs them on one
    machine: one PROMETHEUS_MULTIPROC_DIR, the test database and a broker database of their own."""

    url: str
    metrics_dir: Path
    worker: Worker
    web: subprocess.Popen
    web_log: Path

    def scrape(self) -> Scrape:
        answer = requests.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        return parse(answer.text)

    def web_log_text(self) -> str:
        return self.web_log.read_text(errors="replace")


@pytest.fixture
def machine(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    broker = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{_spare_redis_db()}"
    redis.Redis.from_url(broker).flushdb()
    env = {"REDIS_URL": broker, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "METRICS_TOKEN": TOKEN}
    database_url = database_url_of_test_db()
    worker = Worker(name="metrics", database_url=database_url, concurrency=2, env=env, log_path=tmp_path / "worker.log")
    port = _free_port()
    web_log = tmp_path / "web.log"
    with open(web_log, "ab") as log:
        web = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "clinops.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, process_group=0,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "clinops.settings.test", "DATABASE_URL": database_url, **env},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        worker.wait_ready(app=Celery("sender", broker=broker, set_as_current=False))

        def web_answers() -> bool:
            assert web.poll() is None, web_log.read_text(errors="replace")
            try:
                return requests.get(f"{url}/metrics", timeout=10).status_code == 401
            except (requests.ConnectionError, requests.Timeout):
                return False

        wait_for(web_answers, timeout_s=60, interval_s=0.2)
        yield Machine(url=url, metrics_dir=metrics_dir, worker=worker, web=web, web_log=web_log)
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            try:
                web.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(web.pid, signal.SIGKILL)
                web.wait()
        worker.stop()


@dataclass
class Wearer:
    patient_id: int
    key: str


@pytest.fixture
def calibrated_wearer(machine) -> Wearer:
    """A patient whose wearable's windows get an estimate: the carry-forward model in use and a cuff
    reading 2 min ago, sent through the machine's API."""
    if registry.model_active() is None:
        registry.model_version_promote(actor=SYSTEM, model=register("carry-forward", test_mae=5.0, kind="baseline"))
    patient = make_patient(team=make_team())
    _, key = make_device(patient)
    reading = {"measured_at": (timezone.now().replace(microsecond=0) - dt.timedelta(minutes=2)).isoformat(),
               "sbp_mmhg": 148, "dbp_mmhg": 92}
    answer = requests.post(f"{machine.url}/api/v1/cuff-readings/", json=reading, timeout=30,
                           headers={"Authorization": f"Api-Key {key}"})
    assert answer.status_code == 201, answer.text
    return Wearer(patient_id=patient.pk, key=key)


def upload_window(machine: Machine, wearer: Wearer, body: dict, **headers: str) -> requests.Response:
    answer = requests.post(f"{machine.url}/api/v1/windows/", data=json.dumps(body), timeout=30,
                           headers={"Authorization": f"Api-Key {wearer.key}", "Content-Type": "application/json",
                                    **headers})
    assert answer.status_code == 202, answer.text
    return answer


def estimated(window_id: int) -> BPEstimate | None:
    return BPEstimate.objects.filter(window_id=window_id, shadow=False).first()


def one_minute_ago_payload(make_payload, index: int = 0) -> dict:
    at = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=1)
    return make_payload(index, sequence=index + 1, recorded_at=at.isoformat())


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_upload_through_gunicorn_and_the_worker_shows_in_the_web_scrape(machine, calibrated_wearer, make_payload):
    answer = upload_window(machine, calibrated_wearer, one_minute_ago_payload(make_payload))
    window_id = answer.json()["id"]
    estimate = wait_for(lambda: estimated(window_id), timeout_s=90)
    window = SignalWindow.objects.get(pk=window_id)
    got = machine.scrape()

    # The worker's pool processes counted the verdict and the latency; a gunicorn worker timed the upload.
    assert value(got, "clinops_windows_processed_total", outcome="usable") == 1
    assert value(got, "clinops_windows_processed_total", outcome="rejected") == 0
    assert value(got, "clinops_upload_to_estimate_seconds_count") == 1
    latency = value(got, "clinops_upload_to_estimate_seconds_sum")
    assert 0 < latency <= (estimate.created_at - window.received_at).total_seconds() + 1.0
    assert value(got, "clinops_http_request_duration_seconds_count",
                 route="monitoring:window-upload", method="POST", status="2xx") == 1
    assert value(got, "clinops_http_request_duration_seconds_count",
                 route="monitoring:device-cuff-readings", method="POST", status="2xx") == 1
    assert value(got, "clinops_broker_up") == 1
    assert ("clinops_celery_queue_tasks_waiting", frozenset({("queue", "therapy")})) in got
    # The cuff reading asked for an evaluation, which the worker ran (its therapy queue too).
    def evaluated() -> Scrape | None:
        latest = machine.scrape()
        return latest if value(latest, "clinops_therapy_evaluations_total", outcome="completed") >= 1 else None

    got = wait_for(evaluated, timeout_s=30)

    # The verdict was counted in a pool process of the Celery worker (not its main process, not the
    # web's), in a file of its own, named after the host and its pid.
    pool = {f"-{child.pid}.db" for child in psutil.Process(machine.worker.process.pid).children(recursive=True)}
    counted_in = []
    for path in sorted(machine.metrics_dir.glob("counter_*.db")):
        family = {m.name: m for m in MultiProcessCollector.merge([str(path)])}.get("clinops_windows_processed")
        usable = sum(s.value for s in family.samples if s.labels.get("outcome") == "usable") if family else 0
        if usable:
            counted_in.append(path.name)
    assert counted_in and all(name.endswith(tuple(pool)) for name in counted_in), \
        (counted_in, pool, sorted(p.name for p in machine.metrics_dir.iterdir()))
    # Nothing in the scrape names the patient, the window or the device key.
    assert not clinops_label_values(got) & {str(calibrated_wearer.patient_id), str(window_id), calibrated_wearer.key}
