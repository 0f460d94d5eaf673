"""The world the fault tests break: calibrated patients whose wearables upload real windows in
batches, the servers of the `faults` pass (tests/run.py) to stop and start, and the counts that
say whether anything was lost or done twice."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from clinops import localservices
from clinops.base.audit import SYSTEM
from monitoring.bp import registry
from monitoring.ingest.devicesim import window_payload
from monitoring.models import BPEstimate, SignalWindow, WindowAnalysis, WindowStatus
from monitoring.signals.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed
from tests.factories import make_device, make_patient, make_team
from tests.monitoring.test_bp_registry import register
from tests.workers import Worker, database_url_of_test_db

BATCH = 100  # windows per request, the batch API's limit


@dataclass
class Wearer:
    patient_id: int
    client: APIClient  # authenticated with the wearable's key
    start: dt.datetime  # recorded_at of the wearable's window 0
    next_sequence: int = 0


def real_windows() -> list:
    recording = with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, "v140s"))
    return list(iter_windows(recording, window_s=30))


def calibrated_wearers(count: int, *, windows_each: int) -> list[Wearer]:
    """`count` consenting patients with a wearable each and a cuff reading at the time of their
    first window, under the active carry-forward model, so that every usable window gets an
    estimate. Windows are recorded 30 s apart, ending about now."""
    if registry.model_active() is None:
        registry.model_version_promote(actor=SYSTEM, model=register("carry-forward", test_mae=5.0, kind="baseline"))
    team = make_team()
    start = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=30 * windows_each + 60)
    wearers = []
    for _ in range(count):
        patient = make_patient(team=team)
        _, key = make_device(patient)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        cuff = {"measured_at": start.isoformat(), "sbp_mmhg": 148, "dbp_mmhg": 92}
        answer = client.post("/api/v1/cuff-readings/", data=json.dumps(cuff), content_type="application/json")
        assert answer.status_code == 201, answer.content
        wearers.append(Wearer(patient_id=patient.pk, client=client, start=start))
    return wearers


def upload_batch(wearer: Wearer, windows: list, count: int) -> list[int]:
    """The wearable sends its next `count` windows (real recording windows, round robin) in one
    request; returns the ids of those the API accepted (202-equivalent in the batch answer)."""
    bodies = []
    for _ in range(count):
        seq = wearer.next_sequence
        bodies.append(window_payload(windows[seq % len(windows)], sequence=seq,
                                     recorded_at=wearer.start + dt.timedelta(seconds=30 * seq)))
        wearer.next_sequence += 1
    answer = wearer.client.post("/api/v1/windows/batch/", data=json.dumps({"windows": bodies}),
                                content_type="application/json")
    assert answer.status_code == 200, answer.content
    results = answer.json()["results"]
    assert [r["result"] for r in results] == ["accepted"] * count, results
    return [r["id"] for r in results]


def upload_backlog(wearers: list[Wearer], windows: list, windows_each: int) -> list[int]:
    """Each wearable sends `windows_each` windows in full batches, the wearables taking turns per
    batch, older windows first (as devices catching up after being offline send them); returns the
    accepted ids."""
    window_ids: list[int] = []
    for _ in range(windows_each // BATCH):
        for wearer in wearers:
            window_ids += upload_batch(wearer, windows, BATCH)
    return window_ids


@dataclass(frozen=True)
class Outcome:
    windows: int
    waiting: int  # stored, not processed yet
    failed: int
    analyses: int
    windows_with_analysis: int
    usable: int
    live_estimates: int
    windows_with_live_estimate: int


def outcome(window_ids: list[int]) -> Outcome:
    windows = SignalWindow.objects.filter(pk__in=window_ids)
    analyses = WindowAnalysis.objects.filter(window_id__in=window_ids)
    live = BPEstimate.objects.filter(window_id__in=window_ids, shadow=False)
    return Outcome(
        windows=windows.count(), waiting=windows.filter(status=WindowStatus.RECEIVED).count(),
        failed=windows.filter(status=WindowStatus.FAILED).count(), analyses=analyses.count(),
        windows_with_analysis=analyses.values("window_id").distinct().count(),
        usable=analyses.filter(usable=True).count(), live_estimates=live.count(),
        windows_with_live_estimate=live.values("window_id").distinct().count(),
    )


def assert_each_processed_exactly_once(window_ids: list[int]) -> Outcome:
    """No loss, no failure, one analysis per window, one live estimate per usable window."""
    seen = outcome(window_ids)
    assert seen.windows == len(window_ids)
    assert seen.waiting == 0 and seen.failed == 0, seen
    assert seen.analyses == seen.windows_with_analysis == len(window_ids), seen
    assert seen.usable > 0, seen
    assert seen.live_estimates == seen.windows_with_live_estimate == seen.usable, seen
    return seen


def wait_until_settled(window_ids: list[int], *, timeout_s: float) -> None:
    """Wait until every window is analysed and every usable one estimated; on time-out, say how far
    it got."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = outcome(window_ids)
        if seen.waiting == 0 and seen.windows_with_analysis == len(window_ids) \
                and seen.windows_with_live_estimate >= seen.usable:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled within {timeout_s:.0f} s: {seen}")
        time.sleep(0.5)


def start_worker(name: str, *, concurrency: int = 1, env: dict[str, str] | None = None) -> Worker:
    worker = Worker(name=name, database_url=database_url_of_test_db(), concurrency=concurrency, env=env,
                    log_path=settings.VAR_DIR / f"test-worker-faults-{name}-{os.getpid()}.log")
    worker.wait_ready()
    return worker


# --- the servers of the faults pass ---------------------------------------------------------------


def faults_redis() -> tuple[int, Path]:
    return int(os.environ["CLINOPS_TEST_REDIS_PORT"]), Path(os.environ["CLINOPS_TEST_REDIS_DIR"])


def redis_stop() -> None:
    """Stop the pass's Redis (it keeps nothing on disk: queued messages are lost with it)."""
    port, _ = faults_redis()
    with contextlib.suppress(redis.ConnectionError):
        redis.Redis(port=port).shutdown(nosave=True)
    deadline = time.monotonic() + 10
    while localservices.port_answers("127.0.0.1", port):
        assert time.monotonic() < deadline, "Redis did not stop"
        time.sleep(0.1)


def redis_start() -> None:
    port, data_dir = faults_redis()
    # Lives until this pytest process ends (the kernel stops it with its parent).
    localservices.start_redis(port=port, data_dir=data_dir)


def postgres_cluster() -> localservices.PostgresCluster:
    return localservices.PostgresCluster(
        url=database_url_of_test_db(), data_dir=Path(os.environ["CLINOPS_TEST_PG_DATA"]),
        options=os.environ["CLINOPS_TEST_PG_OPTIONS"], log_file=Path(os.environ["CLINOPS_TEST_PG_LOG"]),
    )


def postgres_restart(*, down_s: float) -> None:
    """Stop PostgreSQL (open connections are cut), keep it down for `down_s` seconds, start it again;
    this process reconnects on its next query."""
    cluster = postgres_cluster()
    localservices.postgres_stop(cluster)
    time.sleep(down_s)
    localservices.postgres_start(cluster)
    connection.close()
