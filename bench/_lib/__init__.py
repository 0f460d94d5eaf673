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
from ingest import (  # noqa: E402,F401
    PYTHON,
    CpuMeter,
    load_average,
    postgres_processes,
    process_tree,
    production_env,
    run_checked,
    start_gunicorn,
    stop_on_signals,
    wait_healthy,
)

from clinops.localservices import die_with_parent, free_port, start_redis, stop, temporary_postgres  # noqa: E402,F401

# The benchmarks' celery workers and beat log at this level (BENCH_CELERY_LOG_LEVEL=INFO logs every
# task received and its run time: what a soak's backlog is diagnosed from, with --keep).
CELERY_LOG_LEVEL = os.environ.get("BENCH_CELERY_LOG_LEVEL", "WARNING")
CELERY_QUEUE = "celery"  # windows -> estimates, monitoring (the default queue)
THERAPY_QUEUE = "therapy"  # the routine evaluations: daily and on events (clinops/settings/base.py: CELERY_TASK_ROUTES)


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
            [PYTHON, "-m", "celery", "-A", "clinops", "worker", "--loglevel", CELERY_LOG_LEVEL, "--pool", "prefork",
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
                   help="processes of a worker of its own for the therapy queue (the routine evaluations: daily, on events); "
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
# learned model fails its gates, so the carry-forward baseline is active, as in the product: each
# estimate repeats its calibration's cuff reading).
#
# Crisis patients (the indices in "crisis") get a crisis-level calibration cuff reading (186/112,
# so every estimate of theirs is crisis-level), made "crisis_days_before" days before the others'
# calibration: out of the evaluation's 7-day cuff look-back, so that an unrepeated crisis-level cuff
# reading does not escalate on its own and the urgent alert is raised by two crisis-level estimates.
#
# Two ways to make them, the same rows:
# - "services" (each patient through the services, as a clinic would: ~0.1 s a patient, with audit
#   records);
# - "bulk": the first patient through the services, as the template, then every other one copied
#   from it with bulk_create in chunks (patients, wearables with their own hashed API keys - SHA-512,
#   djangorestframework-api-key's hasher, a few microseconds a key -, care-team membership, plans,
#   calibration windows with their analyses, cuff readings, calibrations). No audit records for the
#   copies (nothing in the measured paths reads them). For the 50,000 patients of the soak.
# With "evaluated_spread_s", every patient with a plan gets a LatestEvaluation (a hold) evaluated
# at a time spread evenly over that many seconds before now: the daily evaluations then fall due
# evenly, as in a clinic that has been running, instead of all at once.
# Prints timings to stderr and CLINIC=<json> (the device keys, patient ids, crisis patient ids).
CLINIC_SCRIPT = r"""
import datetime as dt, json, random, sys, time
import django
django.setup()
import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from clinops.base.audit import SYSTEM
from monitoring.bp import cuff_calibration, estimation
from monitoring.ingest import intake
from monitoring.ingest.devicesim import window_payload
from monitoring.models import Calibration, CuffReading, SignalWindow, WindowAnalysis
from monitoring.signals.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed
from monitoring.ingest.serializers import WindowInput
from monitoring.bp.training import bp_model_ensure_active
from patients import services as people
from patients.models import CareTeam, ConsentStatus, Device, DeviceAPIKey, Patient, Profession, Sex

spec = json.loads(sys.argv[1])
tag, count, with_plan, how = spec["tag"], spec["patients"], spec["plan"], spec["how"]
calibrated_at = dt.datetime.fromisoformat(spec["calibrated_at"])
crisis = set(spec["crisis"])
crisis_at = calibrated_at - dt.timedelta(days=spec["crisis_days_before"])
t0 = time.monotonic()
model, why = bp_model_ensure_active(actor=SYSTEM, data_dir=settings.RECORDINGS_DIR / "challenge2015")
window = next(iter_windows(with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, "v140s")), window_s=30))
team = lead = None
if with_plan:
    from therapy.services import plan_create
    lead = people.clinician_create(actor=SYSTEM, username=f"bench-lead-{tag}", password="bench-only-" + tag * 3,
                                   first_name="Bench", last_name="Lead", profession=Profession.PHYSICIAN)
    team = people.care_team_create(actor=SYSTEM, name=f"Bench team {tag}")
    people.care_team_add_clinician(actor=SYSTEM, team=team, clinician=lead)
out = {"model": model.version, "why": why, "keys": [], "patients": [], "crisis": []}
t_model = time.monotonic()


def serial_of(i): return f"BENCH-{tag}-{i:05d}"
def cuff_of(i): return (186.0, 112.0) if i in crisis else (138.0 + i % 20, 84.0 + i % 10)
def calibrated_at_of(i): return crisis_at if i in crisis else calibrated_at


def one_through_services(i):
    serial = serial_of(i)
    patient = people.patient_create(
        actor=SYSTEM, medical_record_number=serial, given_name="Bench", family_name=f"{tag} {i}",
        date_of_birth=dt.date(1950, 1, 1) + dt.timedelta(days=53 * (i % 400)), sex=Sex.FEMALE if i % 2 else Sex.MALE,
        consent_status=ConsentStatus.GIVEN)
    device, key = people.device_register(actor=SYSTEM, patient=patient, make="Acme", model="W1", firmware="1.0", serial=serial)
    if with_plan:
        people.care_team_add_patient(actor=SYSTEM, team=team, patient=patient)
        plan_create(actor=lead.user, patient=patient, template="ace-ccb-thiazide", reason="bench: starting plan")
    at = calibrated_at_of(i)
    body = WindowInput(data=window_payload(window, sequence=0, recorded_at=at), context={"device": device})
    body.is_valid(raise_exception=True)
    v = body.validated_data
    stored, _ = intake.window_receive(device=device, upload=intake.WindowUpload(
        sequence=0, recorded_at=v["recorded_at"], duration_s=v["duration_s"], encoding=v["encoding"], channels=v["channels"]))
    assert intake.window_process(window_id=stored.pk).usable
    sbp, dbp = cuff_of(i)
    cuff_calibration.cuff_reading_record(actor=device, patient=patient, measured_at=at, sbp_mmhg=sbp, dbp_mmhg=dbp, source="device")
    out["keys"].append(key)
    out["patients"].append(patient.pk)
    if i in crisis:
        out["crisis"].append(patient.pk)
    return patient


def copy_of(obj, **changes):
    fields = {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields if not f.primary_key}
    return type(obj)(**{**fields, **changes})


first = one_through_services(0)
if how == "services":
    for i in range(1, count):
        one_through_services(i)
elif count > 1:
    # The template's rows, copied for every other patient.
    device0 = Device.objects.get(patient=first)
    window0 = SignalWindow.objects.get(patient=first)
    analysis0 = WindowAnalysis.objects.get(window=window0)
    cuff0 = CuffReading.objects.get(patient=first)
    calibration0 = Calibration.objects.get(patient=first)
    plan0 = first.plan_versions.get() if with_plan else None
    generator = DeviceAPIKey.objects.key_generator
    key_s = 0.0
    CHUNK = 2000
    for start in range(1, count, CHUNK):
        ids = range(start, min(count, start + CHUNK))
        with transaction.atomic():
            patients = Patient.objects.bulk_create([copy_of(
                first, medical_record_number=serial_of(i), family_name=f"{tag} {i}",
                date_of_birth=dt.date(1950, 1, 1) + dt.timedelta(days=53 * (i % 400)),
                sex=Sex.FEMALE if i % 2 else Sex.MALE) for i in ids])
            devices = Device.objects.bulk_create([copy_of(device0, patient_id=p.pk, serial=serial_of(i), last_seen_at=None)
                                                  for i, p in zip(ids, patients)])
            k0 = time.perf_counter()
            keys, api_keys = [], []
            for device in devices:
                key, prefix, hashed = generator.generate()  # the library's own: prefix, secret, SHA-512
                keys.append(key)
                api_keys.append(DeviceAPIKey(id=f"{prefix}.{hashed}", prefix=prefix, hashed_key=hashed,
                                             name=f"device {device.serial}", device=device))
            key_s += time.perf_counter() - k0
            DeviceAPIKey.objects.bulk_create(api_keys)
            if with_plan:
                CareTeam.patients.through.objects.bulk_create(
                    [CareTeam.patients.through(careteam_id=team.pk, patient_id=p.pk) for p in patients])
                PlanVersion = type(plan0)
                PlanVersion.objects.bulk_create([copy_of(plan0, patient_id=p.pk) for p in patients])
            windows = SignalWindow.objects.bulk_create([copy_of(
                window0, device_id=d.pk, patient_id=p.pk, recorded_at=calibrated_at_of(i))
                for i, p, d in zip(ids, patients, devices)])
            WindowAnalysis.objects.bulk_create([copy_of(analysis0, window_id=w.pk) for w in windows])
            cuffs = CuffReading.objects.bulk_create([copy_of(
                cuff0, patient_id=p.pk, measured_at=calibrated_at_of(i), sbp_mmhg=cuff_of(i)[0], dbp_mmhg=cuff_of(i)[1])
                for i, p in zip(ids, patients)])
            calibrations = Calibration.objects.bulk_create([copy_of(
                calibration0, patient_id=p.pk, cuff_reading_id=c.pk, calibrated_at=c.measured_at)
                for p, c in zip(patients, cuffs)])
            Calibration.windows.through.objects.bulk_create([
                Calibration.windows.through(calibration_id=c.pk, signalwindow_id=w.pk)
                for c, w in zip(calibrations, windows)])
        out["keys"] += keys
        out["patients"] += [p.pk for p in patients]
        out["crisis"] += [p.pk for i, p in zip(ids, patients) if i in crisis]
    print(f"clinic: {count - 1} patients copied in bulk, of which {key_s:.2f} s generating and hashing API keys",
          file=sys.stderr)
# The calibration windows' own estimates, as a running clinic has them (the calibration sends
# estimate_windows for them, and the queues are emptied below). Without them, 10 min after the seed
# the sweep found every seeded window "processed without an estimate" and re-sent 5,000 a minute
# (the 2026-12-05 soak's backlog).
t_patients = t_estimates = time.monotonic()
calibration_windows = list(SignalWindow.objects.filter(patient_id__in=out["patients"]).order_by("id")
                           .values_list("id", flat=True))
for k in range(0, len(calibration_windows), 1000):
    estimation.windows_estimate(window_ids=calibration_windows[k:k + 1000])
print(f"clinic: {len(calibration_windows)} calibration windows estimated in {time.monotonic() - t_estimates:.1f} s",
      file=sys.stderr)
t_evaluations = time.monotonic()
if with_plan and spec.get("evaluated_spread_s"):
    from therapy.evaluation import POLICY_VERSION
    from therapy.models import LatestEvaluation, PlanVersion
    spread = float(spec["evaluated_spread_s"])
    now = timezone.now()
    plans = dict(PlanVersion.objects.filter(patient_id__in=out["patients"]).values_list("patient_id", "id"))
    order = list(out["patients"])
    random.Random(19).shuffle(order)  # due times spread evenly, in no particular patient order
    LatestEvaluation.objects.bulk_create([LatestEvaluation(
        patient_id=p, evaluated_at=now - dt.timedelta(seconds=spread * (k + 0.5) / len(order)), plan_version_id=plans[p],
        outcome="hold", reasons=["bench: seeded, as if evaluated by the daily run"], evidence={},
        policy_version=POLICY_VERSION) for k, p in enumerate(order)], batch_size=5000)
# The calibration windows were processed here: their queued tasks (and the evaluations they
# scheduled) would only be no-ops or evaluate one estimate.
redis.Redis.from_url(settings.REDIS_URL).delete("celery", "therapy")
print(f"clinic: model {t_model - t0:.1f} s, patients {t_patients - t_model:.1f} s, evaluations seeded "
      f"{time.monotonic() - t_evaluations:.1f} s", file=sys.stderr)
print("CLINIC=" + json.dumps(out))
"""


@dataclass
class Clinic:
    model: str
    why: str
    keys: list[str]
    patients: list[int]
    crisis: list[int] = field(default_factory=list)  # patient ids whose estimates are all crisis-level
    calibrated_at: object = None
    timings: str = ""


# A crisis patient's calibration lies this many days before the others': out of the evaluation's
# 7-day cuff look-back (therapy.models.PlanVersion look_back_days and series_days), within the 28
# days after which estimates are flagged.
CRISIS_CALIBRATION_DAYS_BEFORE = 8.0


def crisis_indices(patients: int, share: float) -> list[int]:
    """Every k-th patient (k = 1 / share), never the first (the bulk path's template); at least one
    when share > 0."""
    if share <= 0 or patients < 2:
        return []
    step = max(1, round(1 / share))
    return list(range(max(1, step // 2), patients, step)) or [patients - 1]


def clinic_create(*, env: dict, tag: str, patients: int, plan: bool, calibrated_at, crisis_share: float = 0.0,
                  how: str = "services", evaluated_spread_s: float = 0.0) -> Clinic:
    spec = {"tag": tag, "patients": patients, "plan": plan, "calibrated_at": calibrated_at.isoformat(),
            "crisis": crisis_indices(patients, crisis_share), "crisis_days_before": CRISIS_CALIBRATION_DAYS_BEFORE,
            "how": how, "evaluated_spread_s": evaluated_spread_s}
    done = subprocess.run([PYTHON, "-c", CLINIC_SCRIPT, json.dumps(spec)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=3600, preexec_fn=die_with_parent)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"clinic setup failed with exit status {done.returncode}")
    data = json.loads(next(line[7:] for line in done.stdout.splitlines() if line.startswith("CLINIC=")))
    timings = "; ".join(line[len("clinic: "):] for line in done.stderr.splitlines() if line.startswith("clinic: "))
    return Clinic(calibrated_at=calibrated_at, timings=timings, **data)


# --- real windows as request bodies ----------------------------------------------------------------


@dataclass
class WindowSource:
    """Real 30-s windows of a few challenge2015 records (PLETH latency removed, as a one-clock
    wearable sends them), as upload payloads (compact int16, the simulator's encoding)."""

    records: list[str]
    windows: list = field(default_factory=list)

    @classmethod
    def load(cls, n_records: int = 5) -> WindowSource:
        from monitoring.signals.recordings import (
            challenge2015_records,
            iter_windows,
            load_challenge2015,
            with_pleth_delay_removed,
        )

        recordings = ROOT / "data" / "recordings"
        names = challenge2015_records(recordings)[:n_records]
        windows = []
        for name in names:
            windows += list(iter_windows(with_pleth_delay_removed(load_challenge2015(recordings, name)), window_s=30))
        return cls(records=names, windows=windows)

    def payload(self, k: int, *, sequence: int, recorded_at) -> dict:
        from monitoring.ingest.devicesim import window_payload

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
