"""Benchmark: accepted device uploads/s and latency of POST /api/v1/windows/ (or, with --batch N,
accepted windows/s of POST /api/v1/windows/batch/) on the real server shape.

Starts a private Redis and a throwaway PostgreSQL, migrates, registers devices (one per patient),
then runs gunicorn with the production settings and drives it from this process with aiohttp:
real 30-s 250 Hz challenge2015 windows, as a device sends them (compact base64 int16, gzipped, by
default). Every request carries a fresh (device, sequence), so each one is a real accepted insert
(202). No Celery worker runs: the windows are stored and their task ids queued in Redis, which is
exactly the ingestion path. Traffic goes only to 127.0.0.1; everything started here is stopped at
the end, also on error or Ctrl-C.

    .venv/bin/python bench/ingest.py                        # defaults: gunicorn sync -w 3, 32 clients
    .venv/bin/python bench/ingest.py --workers 2,3,4        # one run (and summary line) per setting
    .venv/bin/python bench/ingest.py --worker-class gthread --threads 4 --workers 2
    .venv/bin/python bench/ingest.py --encoding json --no-gzip
    .venv/bin/python bench/ingest.py --batch 100 --concurrency 4   # N windows per request, as devices buffer

With --batch N every request carries N windows of one device (fresh sequences, so each one is a
real accepted insert) to POST /api/v1/windows/batch/, which answers 200 with a result per window;
the figures are then accepted *windows*/s (the target's unit), with the latency of a whole request.

Per run it prints a RESULT line (accepted uploads/s, or windows/s in batch mode, p50/p95/p99 latency of the 202s, errors by
status, gunicorn setting, concurrency, encoding, body size), the CPU each part used (the load
generator shares the 2 cores), the CPU per accepted upload (comparable across runs even when other
processes load the machine), a check that every 202 is a stored row and a queued task id, and the
Target line (>= 500 accepted 30-s windows/s).

Exit status: 0 when all went well; 1 when any request got a 5xx or a connection error; 3 when an
unexpected non-202 answer (400, 401, 200 duplicate, 429...) or a stored/queued count that does not
match shows the benchmark did not measure what it claims; 130 when interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from clinops.localservices import die_with_parent, free_port, start_redis, stop, temporary_postgres  # noqa: E402
from monitoring.ingest.devicesim import gzip_json, window_payload  # noqa: E402
from monitoring.signals.recordings import challenge2015_records, iter_windows, load_challenge2015  # noqa: E402

try:  # optional: CPU split between load generator, gunicorn, PostgreSQL and Redis
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
RECORDINGS_DIR = ROOT / "data" / "recordings"
TARGET_PER_S = 500.0  # product target: accepted 30-s windows per second on this machine
UPLOAD_PATH = "/api/v1/windows/"
BATCH_PATH = "/api/v1/windows/batch/"

SETUP_SCRIPT = r"""
import datetime as dt, json, sys
import django
django.setup()
from clinops.base.audit import SYSTEM
from patients import services
from patients.models import ConsentStatus, Sex
keys = []
for i in range(int(sys.argv[1])):
    serial = f"BENCH-{i:05d}"
    patient = services.patient_create(
        actor=SYSTEM, medical_record_number=serial, given_name="Bench", family_name=f"Device {i}",
        date_of_birth=dt.date(1950, 1, 1) + dt.timedelta(days=53 * i), sex=Sex.FEMALE,
        consent_status=ConsentStatus.GIVEN,  # no data is accepted without consent
    )
    _, key = services.device_register(actor=SYSTEM, patient=patient, make="Acme", model="W1", firmware="1.0", serial=serial)
    keys.append(key)
print("KEYS=" + json.dumps(keys))
"""


def load_average() -> str:
    """The machine's 1/5/15-min load average, as `uptime` shows it (other agents share the cores)."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


# --- command line -------------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("give positive integers, comma-separated (e.g. 3 or 2,3,4)")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workers", type=int_list, default=[3], help="gunicorn worker processes; a list (2,3,4) makes one run each")
    p.add_argument("--worker-class", default="sync", choices=["sync", "gthread"], help="gunicorn worker class")
    p.add_argument("--threads", type=int, default=1, help="threads per worker (gthread; >1 turns sync into gthread in gunicorn)")
    p.add_argument("--concurrency", type=int_list, default=[32], help="requests in flight (aiohttp clients); a list makes one run each")
    p.add_argument("--duration", type=float, default=20.0, help="timed phase, seconds (upper bound)")
    p.add_argument("--max-requests", type=int, default=None,
                   help="timed phase, request count (upper bound); default 20000 windows' worth (20000 / batch)")
    p.add_argument("--warmup", type=float, default=3.0, help="warm-up phase before each timed phase, seconds")
    p.add_argument("--warmup-max-requests", type=int, default=None,
                   help="warm-up phase, request count (upper bound); default 1000 windows' worth (at least 20)")
    p.add_argument("--devices", type=int, default=200, help="registered devices (one patient each); requests rotate over them")
    p.add_argument("--records", type=int, default=3, help="challenge2015 records the windows come from")
    p.add_argument("--encoding", default="compact", choices=["compact", "json"], help="wire encoding of the samples")
    p.add_argument("--gzip", default=True, action=argparse.BooleanOptionalAction, help="send Content-Encoding: gzip bodies")
    p.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    p.add_argument("--batch", type=int, default=0,
                   help="windows per request to POST /api/v1/windows/batch/ (1-100); 0 = one window per request to /api/v1/windows/")
    p.add_argument("--keep", action="store_true", help="keep the gunicorn log directory (path printed)")
    args = p.parse_args(argv)
    if not 0 <= args.batch <= 100:
        p.error("--batch must be 0 (single uploads) or 1-100 windows per request")
    per = max(1, args.batch)
    if args.max_requests is None:
        args.max_requests = max(100, 20000 // per)
    if args.warmup_max_requests is None:
        args.warmup_max_requests = max(20, 1000 // per)
    if args.duration <= 0 or args.max_requests < 1 or args.warmup_max_requests < 1 or args.devices < 1 or args.records < 1:
        p.error("--duration, --max-requests, --devices and --records must be positive")
    return args


# --- request bodies -----------------------------------------------------------------------------


@dataclass
class Bodies:
    """Pre-built bodies; body k carries sequence k (batch mode: sequences kN..kN+N-1), so
    (device d, body k) is a unique upload."""

    items: list[bytes]
    raw_bytes: int  # mean JSON size before gzip
    wire_bytes: int  # mean size on the wire
    windows: int
    records: list[str]
    per_body: int = 1  # windows per request body


def build_bodies(*, count: int, encoding: str, gzipped: bool, n_records: int, batch: int = 0) -> Bodies:
    names = challenge2015_records(RECORDINGS_DIR)[:n_records]
    payloads = []
    base = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=10)
    for name in names:
        recording = load_challenge2015(RECORDINGS_DIR, name)
        for window in iter_windows(recording, window_s=30):
            payloads.append(window_payload(window, sequence=0, recorded_at=base, encoding=encoding))
    if not payloads:
        raise SystemExit("no 30-s windows found in the challenge2015 recordings")
    def one(k: int) -> dict:
        payload = dict(payloads[k % len(payloads)], sequence=k)
        # 30 s apart going back from a few minutes ago, within the server's 30-day age limit: a
        # device records one window at a time, and a second window starting at the same instant
        # would be answered as a duplicate of the first.
        payload["recorded_at"] = (base - dt.timedelta(seconds=30 * (k % 80_000))).isoformat().replace("+00:00", "Z")
        return payload

    items, raw_total = [], 0
    for k in range(count):
        body = one(k) if batch == 0 else {"windows": [one(k * batch + j) for j in range(batch)]}
        raw = json.dumps(body).encode("utf-8")
        raw_total += len(raw)
        items.append(gzip_json(body) if gzipped else raw)
    return Bodies(items=items, raw_bytes=raw_total // count, wire_bytes=sum(map(len, items)) // count,
                  windows=len(payloads), records=names, per_body=max(1, batch))


# --- servers ------------------------------------------------------------------------------------


def run_checked(cmd: list[str], *, env: dict, what: str, timeout: float = 600) -> str:
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=die_with_parent)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"{what} failed with exit status {done.returncode}")
    return done.stdout


def start_gunicorn(*, env: dict, port: int, workers: int, worker_class: str, threads: int, log_path: Path) -> subprocess.Popen:
    cmd = [
        PYTHON, "-m", "gunicorn", "clinops.wsgi", "-b", f"127.0.0.1:{port}",
        "-w", str(workers), "-k", worker_class, "--threads", str(threads),
        "--timeout", "60", "--graceful-timeout", "5", "--error-logfile", str(log_path), "--log-level", "warning",
    ]
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=die_with_parent, process_group=0)


async def wait_healthy(base_url: str, process: subprocess.Popen, *, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited with status {process.returncode}")
            try:
                async with session.get(base_url + "/healthz", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer /healthz with 200 within {timeout_s:.0f} s")


# --- CPU accounting -----------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by groups of processes (and this process) between start() and stop().

    A process that exits in between (a PostgreSQL backend ends when its client disconnects) is
    still counted: its time moves to its parent's reaped-children times, and each process counts
    its own time plus those. The group's use is the sum at stop() minus the sum at start(), over
    every process seen at either; so the group's root must be in the group."""

    def __init__(self, groups: dict[str, callable]) -> None:
        self.groups = groups  # name -> function returning the group's psutil.Process list

    @staticmethod
    def _cpu(procs) -> dict[int, float]:
        out = {}
        for proc in procs:
            try:
                times = proc.cpu_times()
                out[proc.pid] = times.user + times.system + times.children_user + times.children_system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return out

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.machine0 = psutil.cpu_times() if psutil else None
        self.before = {name: self._cpu(get()) for name, get in self.groups.items()} if psutil else {}

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        used = {"loadgen": (ru.ru_utime - self.self0.ru_utime + ru.ru_stime - self.self0.ru_stime) / wall}
        if psutil:
            for name, get in self.groups.items():
                after, before = self._cpu(get()), self.before[name]
                used[name] = (sum(after.values()) - sum(before.values())) / wall
            m0, m1 = self.machine0, psutil.cpu_times()
            delta = {k: getattr(m1, k) - getattr(m0, k) for k in m1._fields}
            total = sum(delta.values())
            if total > 0:
                cores = psutil.cpu_count()
                idle = delta["idle"] + delta.get("iowait", 0.0)
                used["machine"] = (1 - idle / total) * cores
                used["steal"] = delta.get("steal", 0.0) / total * cores
                used["irq"] = (delta.get("irq", 0.0) + delta.get("softirq", 0.0)) / total * cores
        return used


def process_tree(pid: int) -> list:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def postgres_processes(port: int) -> list:
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and "-p" in " ".join(cmdline) and f"-p {port}" in " ".join(cmdline):
            return process_tree(proc.pid)
    return []


# --- load generator -----------------------------------------------------------------------------


@dataclass
class Phase:
    statuses: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    sample_error: str = ""
    windows: Counter = field(default_factory=Counter)  # batch mode: accepted / duplicates / rejected windows


class Uploads:
    """Hands out unique (device, body) pairs: index i -> device i % D, body i // D."""

    def __init__(self, keys: list[str], bodies: list[bytes], gzipped: bool) -> None:
        extra = {"Content-Encoding": "gzip"} if gzipped else {}
        self.headers = [{"Authorization": f"Api-Key {k}", "Content-Type": "application/json", **extra} for k in keys]
        self.bodies = bodies
        self.next = 0

    @property
    def capacity(self) -> int:
        return len(self.headers) * len(self.bodies)

    def take(self) -> tuple[dict, bytes]:
        i = self.next
        if i >= self.capacity:
            raise RuntimeError("ran out of unique (device, sequence) pairs")
        self.next += 1
        return self.headers[i % len(self.headers)], self.bodies[i // len(self.headers)]


async def drive(session: aiohttp.ClientSession, url: str, uploads: Uploads, *, concurrency: int,
                duration_s: float, max_requests: int, batch: int = 0) -> Phase:
    """Requests in flight until the time or the count runs out. Single uploads: a 202 is one
    accepted window. Batch mode: a 200 whose windows were all accepted counts as status 202 (all
    accepted) and adds its per-window counts; anything else is counted by its status."""
    phase = Phase()
    started = time.perf_counter()
    deadline = started + duration_s
    issued = 0

    async def client() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            headers, body = uploads.take()
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    text = await resp.read()
                    status: object = resp.status
                    if batch and resp.status == 200:
                        answer = json.loads(text)
                        phase.windows.update(accepted=answer["accepted"], duplicates=answer["duplicates"],
                                             rejected=answer["rejected"])
                        status = 202 if answer["accepted"] == batch else "200-not-all-accepted"
                    elif batch and status == 202:
                        status = "202-on-batch"
                    if status != 202 and not phase.sample_error:
                        phase.sample_error = f"{resp.status}: {text[:300]!r}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                status = f"conn:{exc.__class__.__name__}"
                if not phase.sample_error:
                    phase.sample_error = f"{status}: {exc}"
            if status == 202:  # latency of accepted uploads; failures are counted by status instead
                phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
                if not batch:
                    phase.windows["accepted"] += 1
            phase.statuses[status] += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    phase.elapsed_s = time.perf_counter() - started
    return phase


def queued_windows(rds) -> int:
    """Window ids waiting in the Celery queue: 1 per process_window task, len(ids) per process_windows."""
    import base64

    count = 0
    for raw in rds.lrange("celery", 0, -1):
        message = json.loads(raw)
        task = message.get("headers", {}).get("task", "")
        if task == "monitoring.tasks.process_window":
            count += 1
        elif task == "monitoring.tasks.process_windows":
            args = json.loads(base64.b64decode(message["body"]))[0]
            count += len(args[0])
    return count


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


# --- one run ------------------------------------------------------------------------------------


@dataclass
class RunResult:
    line: str
    rate: float
    failed: bool  # 5xx or connection error
    unexpected: bool  # other non-202 answers


async def one_run(*, args, env, workers: int, concurrency: int, uploads: Uploads, bodies: Bodies,
                  redis_proc, redis_port: int, pg_port: int, database_url: str, log_dir: Path) -> RunResult:
    import psycopg
    import redis as redis_lib

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    path = BATCH_PATH if args.batch else UPLOAD_PATH
    log_path = log_dir / f"gunicorn-w{workers}-c{concurrency}.log"
    gunicorn = start_gunicorn(env=env, port=port, workers=workers, worker_class=args.worker_class,
                              threads=args.threads, log_path=log_path)
    try:
        try:
            await wait_healthy(base_url, gunicorn)
        except SystemExit:
            sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
            raise
        rds = redis_lib.Redis(port=redis_port)
        with psycopg.connect(database_url, autocommit=True) as db:
            rows0 = db.execute("SELECT count(*) FROM monitoring_signalwindow").fetchone()[0]
        queued0 = queued_windows(rds)
        connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
        timeout = aiohttp.ClientTimeout(total=args.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            url = base_url + path
            warm = await drive(session, url, uploads, concurrency=concurrency, duration_s=args.warmup,
                               max_requests=args.warmup_max_requests, batch=args.batch) if args.warmup > 0 else Phase()
            meter = CpuMeter({
                "gunicorn": lambda: process_tree(gunicorn.pid),
                "postgres": lambda: postgres_processes(pg_port),
                "redis": lambda: process_tree(redis_proc.pid),
            })
            meter.start()
            timed = await drive(session, url, uploads, concurrency=concurrency, duration_s=args.duration,
                                max_requests=args.max_requests, batch=args.batch)
            cpu = meter.stop()
        with psycopg.connect(database_url, autocommit=True) as db:
            rows1 = db.execute("SELECT count(*) FROM monitoring_signalwindow").fetchone()[0]
        queued1 = queued_windows(rds)
        rds.close()
    finally:
        stop(gunicorn)
        if gunicorn.poll() is None:  # pragma: no cover
            gunicorn.kill()

    accepted = timed.windows.get("accepted", 0)  # windows (= requests for single uploads)
    rate = accepted / timed.elapsed_s if timed.elapsed_s else 0.0
    request_rate = timed.statuses.get(202, 0) / timed.elapsed_s if timed.elapsed_s else 0.0
    lat = sorted(timed.latencies_ms)
    all_statuses = warm.statuses + timed.statuses
    bad = {k: v for k, v in all_statuses.items() if k != 202}
    failed = any((isinstance(k, str) and k.startswith("conn:")) or (isinstance(k, int) and k >= 500) for k in bad)
    errors = ", ".join(f"{k}x{v}" for k, v in sorted(bad.items(), key=lambda kv: str(kv[0]))) or "none"
    kind = args.worker_class if args.threads <= 1 else f"{args.worker_class} --threads {args.threads}"
    enc = f"{args.encoding}{'+gzip' if args.gzip else ''}"
    if args.batch:
        what = (f"RESULT POST {BATCH_PATH} (batch of {args.batch}): {rate:.1f} accepted windows/s "
                f"({request_rate:.1f} requests/s) | latency (whole request, all accepted)")
        unit = f"KiB per request of {args.batch} windows"
    else:
        what = f"RESULT POST {UPLOAD_PATH}: {rate:.1f} accepted uploads/s | latency (202s)"
        unit = "KiB"
    line = (
        f"{what} p50 {percentile(lat, .50):.1f} ms, "
        f"p95 {percentile(lat, .95):.1f} ms, p99 {percentile(lat, .99):.1f} ms | {accepted} windows accepted in "
        f"{timed.elapsed_s:.1f} s | errors (incl. warm-up): {errors} | gunicorn {kind} -w {workers} | "
        f"concurrency {concurrency} | encoding {enc} | body {bodies.wire_bytes / 1024:.1f} {unit} on the wire "
        f"({bodies.raw_bytes / 1024:.1f} KiB JSON)"
    )
    print(line)
    cpu_parts = [f"load generator {cpu['loadgen']:.2f} (getrusage)"]
    for name in ("gunicorn", "postgres", "redis"):
        if name in cpu:
            cpu_parts.append(f"{name} {cpu[name]:.2f}")
    if "machine" in cpu:
        ours = sum(cpu[k] for k in ("loadgen", "gunicorn", "postgres", "redis") if k in cpu)
        cpu_parts.append(f"whole machine {cpu['machine']:.2f} of {psutil.cpu_count()} (irq {cpu['irq']:.2f}, "
                         f"steal {cpu['steal']:.2f}, other processes {max(0.0, cpu['machine'] - ours):.2f})")
    print("  CPU during the timed phase, in cores busy: " + ", ".join(cpu_parts))
    if "gunicorn" in cpu and rate > 0:
        # CPU cost per window does not depend on what else runs on the machine: compare configs by it.
        per = {k: cpu[k] * 1000 / rate for k in ("loadgen", "gunicorn", "postgres", "redis")}
        server_ms = per["gunicorn"] + per["postgres"] + per["redis"]
        print(f"  CPU per accepted window: gunicorn {per['gunicorn']:.2f} ms, postgres {per['postgres']:.2f} ms, "
              f"redis {per['redis']:.3f} ms = {server_ms:.2f} ms server (+ load generator {per['loadgen']:.2f} ms) "
              f"-> ceiling on {os.cpu_count()} idle cores without the load generator "
              f"~{os.cpu_count() * 1000 / server_ms:.0f} windows/s")
    expected = accepted + warm.windows.get("accepted", 0)
    stored, queued = rows1 - rows0, queued1 - queued0
    ok = "ok" if stored == expected and queued == expected else "MISMATCH"
    print(f"  check: {expected} windows accepted (incl. warm-up) -> {stored} rows stored in PostgreSQL, "
          f"{queued} window ids queued in Redis (one process_window task per single upload, one process_windows "
          f"task per batch): {ok}")
    if bad:
        print(f"  first non-202 answer: {warm.sample_error or timed.sample_error}")
    verdict = "MET" if rate >= TARGET_PER_S else "NOT MET"
    print(f"Target: >= {TARGET_PER_S:.0f} accepted 30-s windows/s -> {verdict} "
          f"({rate:.1f}/s = {100 * rate / TARGET_PER_S:.0f}% of target)")
    sys.stdout.flush()
    unexpected = bool(bad) and not failed or ok != "ok"
    return RunResult(line=line, rate=rate, failed=failed, unexpected=unexpected)


# --- main ---------------------------------------------------------------------------------------


def production_env(*, database_url: str, redis_port: int, work: Path, **extra: str) -> dict[str, str]:
    """The environment of every server process: production settings, the private PostgreSQL and
    Redis, no TLS redirect (plain HTTP on 127.0.0.1), warnings-only logs."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "clinops.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": database_url,
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "SECURE_SSL_REDIRECT": "0",
        "DEVICE_UPLOAD_RATE": "1000000/min",
        "LOG_LEVEL": "WARNING",
        "CLINOPS_VAR_DIR": str(work / "var"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP end a benchmark as Ctrl-C does, so that its finally blocks stop every
    server it started."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    runs = [(w, c) for w in args.workers for c in args.concurrency]
    per_run = args.max_requests + (args.warmup_max_requests if args.warmup > 0 else 0) + max(args.concurrency)
    n_bodies = math.ceil(len(runs) * per_run / args.devices)
    if args.batch and n_bodies * args.batch > 40_000:
        raise SystemExit(f"bench/ingest: {n_bodies} bodies of {args.batch} windows would not fit in memory: "
                         "lower --max-requests / --warmup-max-requests or raise --devices")

    if psutil:
        busy = psutil.cpu_percent(interval=1.0) / 100 * psutil.cpu_count()
        if busy > 0.2:
            print(f"bench/ingest: WARNING: {busy:.2f} cores already busy before the benchmark (other processes); "
                  "throughput will be low, compare configurations by CPU per upload", flush=True)
    t0 = time.monotonic()
    bodies = build_bodies(count=n_bodies, encoding=args.encoding, gzipped=args.gzip, n_records=args.records,
                          batch=args.batch)
    print(f"bench/ingest: {len(bodies.items)} bodies{f' of {args.batch} windows' if args.batch else ''} x "
          f"{args.devices} devices from {bodies.windows} real 30-s windows "
          f"of challenge2015 {', '.join(bodies.records)} ({time.monotonic() - t0:.1f} s); "
          f"{os.cpu_count()} CPUs; runs: {', '.join(f'-w {w} c={c}' for w, c in runs)}; "
          f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; load average {load_average()}", flush=True)

    work = Path(tempfile.mkdtemp(prefix="clinops-bench-ingest-"))
    redis_proc = None
    results: list[RunResult] = []
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            pg_port = int(database_url.rsplit(":", 1)[1].split("/", 1)[0])
            env = production_env(database_url=database_url, redis_port=redis_port, work=work)
            t0 = time.monotonic()
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="manage.py migrate")
            out = run_checked([PYTHON, "-c", SETUP_SCRIPT, str(args.devices)], env=env, what="device registration")
            keys = json.loads(next(line[5:] for line in out.splitlines() if line.startswith("KEYS=")))
            print(f"bench/ingest: PostgreSQL + Redis up, migrated, {len(keys)} devices registered "
                  f"({time.monotonic() - t0:.1f} s)", flush=True)
            uploads = Uploads(keys, bodies.items, args.gzip)
            for workers, concurrency in runs:
                results.append(asyncio.run(one_run(
                    args=args, env=env, workers=workers, concurrency=concurrency, uploads=uploads, bodies=bodies,
                    redis_proc=redis_proc, redis_port=redis_port, pg_port=pg_port, database_url=database_url,
                    log_dir=work,
                )))
    except KeyboardInterrupt:
        print("bench/ingest: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        stop(redis_proc)
        if args.keep:
            print(f"bench/ingest: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        best = max(results, key=lambda r: r.rate)
        print("BEST " + best.line)
    print(f"bench/ingest: load average at the end {load_average()}")
    if any(r.failed for r in results):
        print("bench/ingest: FAILED: 5xx answers or connection errors (see above)", file=sys.stderr)
        return 1
    if any(r.unexpected for r in results):
        print("bench/ingest: INVALID: unexpected non-202 answers or stored/queued counts off", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
