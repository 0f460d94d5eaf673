"""One upload can be followed through the logs: every line written while answering a request carries
its request_id (returned in X-Request-ID), the tasks it sends carry it in a message header, and the
worker's lines for such a task carry it with task_id and the task's name."""
from __future__ import annotations

import base64
import json
import re
import uuid

import pytest
import redis
import structlog
from celery import Celery
from rest_framework.test import APIClient

from monitoring.tasks import process_window
from tests.clinops.test_metrics import (  # noqa: F401 - fixtures
    _spare_redis_db,
    calibrated_wearer,
    estimated,
    machine,
    one_minute_ago_payload,
    upload_window,
)
from tests.conftest import wait_for
from tests.factories import make_device, make_patient, make_team
from tests.monitoring.conftest import make_payload, real_windows  # noqa: F401 - fixtures

NEW_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex


@pytest.fixture
def wearable(db) -> APIClient:
    _, key = make_device(make_patient(team=make_team()))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def upload(client: APIClient, body: dict, **headers: str):
    answer = client.post("/api/v1/windows/", data=json.dumps(body), content_type="application/json", headers=headers)
    assert answer.status_code == 202, answer.content
    return answer


def events(caplog, name: str) -> list[dict]:
    """The structlog event dicts (after the processors that merge the context) logged as `name`."""
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


# --- In one process ---------------------------------------------------------------------------------

def test_each_request_gets_an_id_that_its_log_lines_and_its_answer_carry(wearable, make_payload, caplog):
    caplog.set_level("INFO")
    first = upload(wearable, make_payload(0))
    second = upload(wearable, make_payload(1))
    ids = [first["X-Request-ID"], second["X-Request-ID"]]
    assert all(NEW_ID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    received = events(caplog, "window.received")
    assert [(e["window_id"], e["request_id"]) for e in received] == [(first.json()["id"], ids[0]),
                                                                     (second.json()["id"], ids[1])]
    assert "request_id" not in structlog.contextvars.get_contextvars()  # nothing left for the next request


@pytest.mark.parametrize("given, kept", [
    ("3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b", True),  # a uuid, as proxies send
    ("0123456789abcdef0123456789abcdef", True),  # nginx's $request_id
    ("wearable.fw2.upload_000017", True),
    ("short", False),
    ("x" * 65, False),
    ("id with spaces 12345", False),
    ("forged\nlevel=critical", False),
    ("../../etc/passwd", False),
    ("", False),
])
def test_a_sane_incoming_request_id_is_kept_and_anything_else_replaced(client, db, given, kept):
    answer = client.get("/healthz", headers={"X-Request-ID": given})
    if kept:
        assert answer["X-Request-ID"] == given
    else:
        assert NEW_ID.fullmatch(answer["X-Request-ID"])


def test_a_task_sent_while_answering_a_request_carries_its_id_in_the_message(settings):
    """What the worker receives, read from the broker: the request's id in the message headers."""
    broker_url = settings.REDIS_URL.rsplit("/", 1)[0] + f"/{_spare_redis_db()}"
    broker = redis.Redis.from_url(broker_url)
    broker.delete("celery")
    sender = Celery("sender", broker=broker_url, set_as_current=False)
    rid = f"req-{uuid.uuid4().hex}"
    try:
        with structlog.contextvars.bound_contextvars(request_id=rid):
            sender.send_task("monitoring.tasks.process_window", args=[1], queue="celery")
        sender.send_task("monitoring.tasks.process_window", args=[2], queue="celery")  # outside any request
        messages = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    finally:
        broker.delete("celery")
    headers = {json.loads(base64.b64decode(m["body"]))[0][0]: m["headers"] for m in messages}  # by args[0]
    assert headers[1]["clinops_request_id"] == rid
    assert "clinops_request_id" not in headers[2]


def test_a_task_run_in_the_callers_process_logs_its_ids_and_gives_the_callers_back(wearable, make_payload, caplog):
    caplog.set_level("INFO")
    window_id = upload(wearable, make_payload(0)).json()["id"]  # not sent: the test's transaction never commits
    with structlog.contextvars.bound_contextvars(request_id="caller-request-0001"):
        result = process_window.apply(args=[window_id])
        assert structlog.contextvars.get_contextvars() == {"request_id": "caller-request-0001"}
    (processed,) = events(caplog, "window.processed")
    assert (processed["window_id"], processed["request_id"], processed["task"], processed["task_id"]) == \
        (window_id, "caller-request-0001", "monitoring.tasks.process_window", result.id)


# --- Through gunicorn and a Celery worker --------------------------------------------------------------

def lines_about(log: str, event: str, window_id: int) -> list[str]:
    return [line for line in log.splitlines()
            if f" {event} " in line and re.search(rf"\bwindow_id={window_id}\b", line)]


def worker_log_once_estimated(machine, window_id: int) -> str | None:
    """The worker's log, once it holds the window's estimate line (written just after the row)."""
    log = machine.worker.log_tail(1_000_000)
    return log if lines_about(log, "window.estimated", window_id) else None


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_upload_is_followed_from_the_api_to_the_workers_estimate_by_its_request_id(machine, calibrated_wearer,
                                                                                      make_payload):
    rid = f"wearable-{uuid.uuid4().hex}"
    answer = upload_window(machine, calibrated_wearer, one_minute_ago_payload(make_payload), **{"X-Request-ID": rid})
    assert answer.headers["X-Request-ID"] == rid
    window_id = answer.json()["id"]
    wait_for(lambda: estimated(window_id), timeout_s=90)

    web = lines_about(machine.web_log_text(), "window.received", window_id)
    assert len(web) == 1 and f"request_id={rid}" in web[0], web
    worker_log = wait_for(lambda: worker_log_once_estimated(machine, window_id), timeout_s=10)
    processed = lines_about(worker_log, "window.processed", window_id)
    estimated_lines = lines_about(worker_log, "window.estimated", window_id)
    assert processed and estimated_lines
    for line in processed + estimated_lines:
        assert f"request_id={rid}" in line, line
        assert re.search(r"\btask_id=[0-9a-f-]{36}\b", line), line
        assert re.search(r"\btask=monitoring\.tasks\.(process_windows?|estimate_windows?)\b", line), line
    # Celery's own line for the task names the request too.
    assert any(f"request_id={rid}" in line for line in worker_log.splitlines() if "succeeded in" in line)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_without_a_usable_incoming_id_the_worker_logs_the_one_the_api_gave(machine, calibrated_wearer, make_payload):
    answer = upload_window(machine, calibrated_wearer, one_minute_ago_payload(make_payload),
                           **{"X-Request-ID": "no good"})
    rid = answer.headers["X-Request-ID"]
    assert NEW_ID.fullmatch(rid)
    window_id = answer.json()["id"]
    wait_for(lambda: estimated(window_id), timeout_s=90)
    worker_log = wait_for(lambda: worker_log_once_estimated(machine, window_id), timeout_s=10)
    assert all(f"request_id={rid}" in line for line in lines_about(worker_log, "window.processed", window_id))
    assert lines_about(worker_log, "window.processed", window_id)
    assert "no good" not in worker_log
