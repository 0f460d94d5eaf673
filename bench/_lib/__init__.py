"""Shared parts of the pipeline benchmarks (worker_throughput, pipeline, soak): the servers
(PostgreSQL, Redis, gunicorn, celery workers) in the production shape, a clinic of calibrated
patients under the active BP model, and the per-process CPU and memory accounting.

Not a benchmark itself: `make bench` runs bench/*.py only. Everything runs on 127.0.0.1, and
everything started is stopped by the caller's `finally` (see Servers.close()).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
for path in (str(ROOT), str(BENCH)):
    if path not in sys.path:
        sys.path.insert(0, path)

import psutil  # noqa: E402

from clinops.localservices import die_with_parent, free_port, start_redis, stop, temporary_postgres  # noqa: E402,F401
from ingest import (PYTHON, CpuMeter, load_average, postgres_processes, process_tree, run_checked,  # noqa: E402,F401
                    production_env, start_gunicorn, stop_on_signals, wait_healthy)

CELERY_QUEUE = "celery"  # windows -> estimates, monitoring (the default queue)
THERAPY_QUEUE = "therapy"  # the debounced evaluations (clinops/settings/base.py: CELERY_TASK_ROUTES)


def pg_port_of(database_url: str) -> int:
    return int(database_url.rsplit(":", 1)[1].split("/", 1)[0])


# --- celery workers -----------------------------------------------------------------------------


class Worker:
    """`celery -A clinops worker` (prefork: a main process + `concurrency` children), in a process
    group of its own. Started on an empty queue of its own, so that it can boot (imports, Django
    setup: seconds of CPU) before it is told to consume the real queues (consume()).

    `queues`: the queues it consumes (both by default, as a worker started without -Q). `nice`:
    its CPU priority (os.nice increment), e.g. for a therapy-queue worker sharing the machine with
    the estimate workers, as compose.yaml's cpu_shares does."""

    def __init__(self, *, env: dict, name: str, concurrency: int, log_path: Path, consume_now: bool = False,
                 queues: tuple[str, ...] = (CELERY_QUEUE, THERAPY_QUEUE), nice: int = 0) -> None:
        self.name = f"{name}-{os.getpid()}@127.0.0.1"
        self.idle_queue = f"bench-idle-{name}-{os.getpid()}"
        self.queues = queues
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.log_path = log_path

        def preexec() -> None:
            die_with_parent()
            if nice:
                os.nice(nice)

        self.process = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "clinops", "worker", "--loglevel", "WARNING", "--pool", "prefork",
             "--concurrency", str(concurrency), "-n", self.name,
             "-Q", ",".join(queues) if consume_now else self.idle_queue, "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=preexec,
            process_group=0,
        )
        from celery import Celery

        self.control = Celery(broker=env["REDIS_URL"]).control

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            if self.control.ping(destination=[self.name], timeout=0.5):
                # The pool children are forked once the main process is up; wait for all of them.
                return
        raise SystemExit(f"celery worker {self.name} did not start; its log:\n"
                         + self.log_path.read_text(errors="replace")[-3000:])

    def consume(self) -> None:
        for queue in self.queues:
            reply = self.control.add_consumer(queue, destination=[self.name], reply=True, timeout=5)
            if not reply:
                raise SystemExit(f"celery worker {self.name} did not answer add_consumer {queue}")

    def processes(self) -> list:
        return process_tree(self.process.pid)

    def stop(self, timeout_s: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # warm shutdown: the running task finishes
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # pool children left behind would go on consuming
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        self._log.close()


def add_worker_arguments(p) -> None:
    """The worker shape of the server benchmarks (pipeline, soak): as compose.yaml runs it."""
    p.add_argument("--concurrency", type=int, default=2, help="processes of the celery worker of the windows (queue celery)")
    p.add_argument("--therapy-concurrency", type=int, default=1,
                   help="processes of a worker of its own for the therapy queue (the debounced evaluations); "
                        "0 = one worker consumes both queues")
    p.add_argument("--therapy-nice", type=int, default=10,
                   help="CPU priority of the therapy worker (nice increment; compose.yaml: cpu_shares)")


def workers_start(*, env: dict, name: str, args, log_dir: Path) -> list[Worker]:
    """The estimate worker, then (unless --therapy-concurrency 0) the therapy worker; all ready."""
    separate = args.therapy_concurrency > 0
    workers = [Worker(env=env, name=name, concurrency=args.concurrency, log_path=log_dir / f"{name}.log",
                      consume_now=True, queues=(CELERY_QUEUE,) if separate else (CELERY_QUEUE, THERAPY_QUEUE))]
    if separate:
        workers.append(Worker(env=env, name=f"{name}-therapy", concurrency=args.therapy_concurrency,
                              log_path=log_dir / f"{name}-therapy.log", consume_now=True, queues=(THERAPY_QUEUE,),
                              nice=args.therapy_nice))
    for worker in workers:
        worker.wait_ready()
    return workers


def workers_shape(args) -> str:
    if args.therapy_concurrency == 0:
        return f"celery worker --concurrency {args.concurrency} (both queues)"
    return (f"celery worker -Q celery --concurrency {args.concurrency} + -Q therapy --concurrency "
            f"{args.therapy_concurrency} at nice {args.therapy_nice}")


# --- the clinic -----------------------------------------------------------------------------------

# Run inside Django (a subprocess with the servers' environment): patients who consented, each
# with a wearable, an existing calibration (a cuff reading paired with one processed window 15+
# min before the measured windows, so that the benchmark's windows do not re-pair it), optionally
# a therapy plan, under the active BP model (trained on the shipped recordings on first use; the
# learned model fails its gates, so the carry-forward baseline is active, as in the product).
# Prints CLINIC=<json>: the device keys and patient ids.
CLINIC_SCRIPT = r"""
import datetime as dt, json, sys
import django
django.setup()
import redis
from django.conf import settings
from django.utils import timezone
from clinops.audit import SYSTEM
from monitoring import services
from monitoring.devicesim import window_payload
from monitoring.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed
from monitoring.serializers import WindowInput
from monitoring.training import bp_model_ensure_active
from patients import services as people
from patients.models import ConsentStatus, Profession, Sex

tag, count, with_plan, calibrated_at = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "plan", dt.datetime.fromisoformat(sys.argv[4])
model, why = bp_model_ensure_active(actor=SYSTEM, data_dir=settings.RECORDINGS_DIR / "challenge2015")
window = next(iter_windows(with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, "v140s")), window_s=30))
team = lead = None
if with_plan:
    from therapy.services import plan_create
    lead = people.clinician_create(actor=SYSTEM, username=f"bench-lead-{tag}", password="bench-only-" + tag * 3,
                                   first_name="Bench", last_name="Lead", profession=Profession.PHYSICIAN)
    team = people.care_team_create(actor=SYSTEM, name=f"Bench team {tag}")
    people.care_team_add_clinician(actor=SYSTEM, team=team, clinician=lead)
out = {"model": model.version, "why": why, "keys": [], "patients": []}
for i in range(count):
    serial = f"BENCH-{tag}-{i:05d}"
    patient = people.patient_create(
        actor=SYSTEM, medical_record_number=serial, given_name="Bench", family_name=f"{tag} {i}",
        date_of_birth=dt.date(1950, 1, 1) + dt.timedelta(days=53 * i), sex=Sex.FEMALE if i % 2 else Sex.MALE,
        consent_status=ConsentStatus.GIVEN)
    device, key = people.device_register(actor=SYSTEM, patient=patient, make="Acme", model="W1", firmware="1.0", serial=serial)
    if with_plan:
        people.care_team_add_patient(actor=SYSTEM, team=team, patient=patient)
        plan_create(actor=lead.user, patient=patient, template="ace-ccb-thiazide", reason="bench: starting plan")
    body = WindowInput(data=window_payload(window, sequence=0, recorded_at=calibrated_at), context={"device": device})
    body.is_valid(raise_exception=True)
    v = body.validated_data
    stored, _ = services.window_receive(device=device, upload=services.WindowUpload(
        sequence=0, recorded_at=v["recorded_at"], duration_s=v["duration_s"], encoding=v["encoding"], channels=v["channels"]))
    assert services.window_process(window_id=stored.pk).usable
    services.cuff_reading_record(actor=device, patient=patient, measured_at=calibrated_at, sbp_mmhg=138 + i % 20,
                                 dbp_mmhg=84 + i % 10, source="device")
    out["keys"].append(key)
    out["patients"].append(patient.pk)
# The calibration windows were processed here: their queued tasks (and the evaluations they
# scheduled) would only be no-ops or evaluate one estimate.
redis.Redis.from_url(settings.REDIS_URL).delete("celery", "therapy")
print("CLINIC=" + json.dumps(out))
"""


@dataclass
class Clinic:
    model: str
    why: str
    keys: list[str]
    patients: list[int]
    calibrated_at: object = None


def clinic_create(*, env: dict, tag: str, patients: int, plan: bool, calibrated_at) -> Clinic:
    out = run_checked([PYTHON, "-c", CLINIC_SCRIPT, tag, str(patients), "plan" if plan else "no-plan",
                       calibrated_at.isoformat()], env=env, what="clinic setup", timeout=1200)
    data = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("CLINIC=")))
    return Clinic(calibrated_at=calibrated_at, **data)


# --- real windows as request bodies ----------------------------------------------------------------


@dataclass
class WindowSource:
    """Real 30-s windows of a few challenge2015 records (PLETH latency removed, as a one-clock
    wearable sends them), as upload payloads (compact int16, the simulator's encoding)."""

    records: list[str]
    windows: list = field(default_factory=list)

    @classmethod
    def load(cls, n_records: int = 5) -> WindowSource:
        from monitoring.recordings import challenge2015_records, iter_windows, load_challenge2015, with_pleth_delay_removed

        recordings = ROOT / "data" / "recordings"
        names = challenge2015_records(recordings)[:n_records]
        windows = []
        for name in names:
            windows += list(iter_windows(with_pleth_delay_removed(load_challenge2015(recordings, name)), window_s=30))
        return cls(records=names, windows=windows)

    def payload(self, k: int, *, sequence: int, recorded_at) -> dict:
        from monitoring.devicesim import window_payload

        return window_payload(self.windows[k % len(self.windows)], sequence=sequence, recorded_at=recorded_at)


# --- memory ---------------------------------------------------------------------------------------


def rss_mib(processes) -> float:
    total = 0
    for proc in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total / 2**20


def percentile(values: list[float], q: float) -> float:
    import math

    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
