"""Benchmark: end-to-end latency from a device upload to the stored BP estimate and to the therapy
engine's routing decision, at a fixed upload rate, on the real server shape.

Starts a private Redis and a throwaway PostgreSQL, migrates, runs gunicorn (production settings,
sync -w 3) and real `celery -A clinops worker` processes on them, as compose.yaml does: one for
the windows (-Q celery, prefork --concurrency 2) and one for the evaluations (-Q therapy,
--concurrency 1, at a lower CPU priority: nice 10). Per
run: a clinic of calibrated patients with a therapy plan (bench/_lib: consent, wearable, cuff
reading paired with a processed window, the active carry-forward model), then uploads of real
30-s windows at --rate windows/s for --duration s, open loop (request k leaves at k x batch /
rate, whatever the answers), batch API with --batch windows per request (0: one window per
POST /api/v1/windows/). Each accepted window is timed from the moment its request was sent to
its live BPEstimate's created_at, and to the patient's first therapy evaluation started after
that estimate (LatestEvaluation.evaluated_at, polled every 0.25 s: the routing decision, a hold
with its reasons or a suggestion routed to review / released).

The evaluation is debounced (THERAPY_EVALUATION_DEBOUNCE_S, 60 s by default: one evaluation per
patient per burst of estimates), so the upload-to-decision latency is the debounce plus the
estimate latency; one run per --debounce value (default: 60, the product default, and 2).

    .venv/bin/python bench/pipeline.py                              # 250 windows/s, batches of 20, debounce 60 and 2
    .venv/bin/python bench/pipeline.py --rate 80 --batch 0          # one window per request

Prints per run the achieved upload rate, request latency, upload->estimate and upload->decision
p50/p95/p99/max, the Celery queue's largest backlog, CPU per window of every part (robust to other
load on the machine) and the load average, and the target line (p95 upload-to-estimate <= 2 s).
Request bodies are JSON without gzip (built from templates, so the load generator stays light).
Exit status 0; 1 on 5xx/connection errors or windows never estimated; 130 when interrupted.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib import stop_on_signals  # noqa: E402
from _lib import (PYTHON, CpuMeter, WindowSource, add_worker_arguments, clinic_create, free_port,  # noqa: E402
                  load_average, percentile, pg_port_of, postgres_processes, process_tree, production_env,
                  run_checked, start_gunicorn, start_redis, stop, temporary_postgres, wait_healthy, workers_shape,
                  workers_start)

import aiohttp  # noqa: E402

TARGET_P95_S = 2.0
DEFAULT_RATE = 250.0  # 50 % of the ~500 windows/s sustained by bench/ingest.py --batch 100 (489.7-561 on 2026-12-01)


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("non-negative integers, comma-separated")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help="windows/s offered (open loop)")
    p.add_argument("--batch", type=int, default=20, help="windows per request (batch API); 0 = single uploads")
    p.add_argument("--duration", type=float, default=45.0, help="seconds of uploads per run")
    p.add_argument("--patients", type=int, default=100, help="patients (wearables, each with a plan) per run")
    p.add_argument("--debounce", type=int_list, default=[60, 2], help="THERAPY_EVALUATION_DEBOUNCE_S per run")
    add_worker_arguments(p)
    p.add_argument("--gunicorn-workers", type=int, default=3)
    p.add_argument("--max-in-flight", type=int, default=32, help="requests in flight at most (then the schedule slips)")
    p.add_argument("--settle-timeout", type=float, default=300.0, help="seconds to wait for estimates and decisions after the uploads")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.patients < 1 or not 0 <= args.batch <= 100:
        p.error("--rate, --duration, --patients must be positive, --batch 0-100")
    return args


class Bodies:
    """Upload bodies from templates: window k's JSON with its sequence and time spliced in."""

    def __init__(self, source: WindowSource, first_at: dt.datetime) -> None:
        self.first_at = first_at
        self.tails = []
        for k in range(len(source.windows)):
            payload = source.payload(k, sequence=0, recorded_at=first_at)
            tail = {key: payload[key] for key in ("duration_s", "ecg", "ppg")}
            self.tails.append(json.dumps(tail)[1:])  # '"duration_s": 30.0, ...}'

    def window(self, sequence: int) -> str:
        recorded_at = (self.first_at + dt.timedelta(seconds=30 * sequence)).isoformat().replace("+00:00", "Z")
        return f'{{"sequence": {sequence}, "recorded_at": "{recorded_at}", ' + self.tails[sequence % len(self.tails)]

    def body(self, first_sequence: int, count: int, batch: bool) -> bytes:
        if not batch:
            return self.window(first_sequence).encode()
        return ('{"windows": [' + ", ".join(self.window(first_sequence + j) for j in range(count)) + "]}").encode()


class Poller(threading.Thread):
    """Every 0.25 s: the patients' LatestEvaluation times (each new one is an evaluation) and the
    Celery queue's length."""

    def __init__(self, database_url: str, redis_url: str, patients: list[int]) -> None:
        super().__init__(daemon=True)
        self.database_url, self.redis_url, self.patients = database_url, redis_url, patients
        self.evaluations: dict[int, list] = {p: [] for p in patients}
        self.outcomes: Counter = Counter()
        self.max_queue = 0
        self.stopping = threading.Event()
        self.error = None

    def run(self) -> None:
        import psycopg
        import redis

        try:
            rds = redis.Redis.from_url(self.redis_url)
            with psycopg.connect(self.database_url, autocommit=True) as db:
                while not self.stopping.is_set():
                    rows = db.execute("SELECT patient_id, evaluated_at, outcome FROM therapy_latestevaluation "
                                      "WHERE patient_id = ANY(%s)", [self.patients]).fetchall()
                    for patient_id, evaluated_at, outcome in rows:
                        seen = self.evaluations[patient_id]
                        if not seen or seen[-1] != evaluated_at:
                            seen.append(evaluated_at)
                            self.outcomes[outcome] += 1
                    self.max_queue = max(self.max_queue, rds.llen("celery"))
                    self.stopping.wait(0.25)
        except Exception as exc:  # noqa: BLE001 - reported by the run
            self.error = exc


async def offer(*, url: str, keys: list[str], bodies: Bodies, rate: float, batch: int, duration: float,
                max_in_flight: int) -> dict:
    """Open-loop uploads: request k at t0 + k * per_request / rate. Returns what was sent and answered."""
    per_request = max(1, batch)
    interval = per_request / rate
    n_requests = int(duration / interval)
    sequences = [1] * len(keys)  # sequence 0 is the calibration window
    sent_at: dict[int, float] = {}  # window id -> wall time its request left (time.time())
    statuses: Counter = Counter()
    latencies: list[float] = []
    windows = Counter()
    lag = 0.0
    gate = asyncio.Semaphore(max_in_flight)
    path = "/api/v1/windows/batch/" if batch else "/api/v1/windows/"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_in_flight), timeout=timeout) as session:
        async def one(k: int) -> None:
            device = k % len(keys)
            first = sequences[device]
            sequences[device] += per_request
            body = bodies.body(first, per_request, bool(batch))
            headers = {"Authorization": f"Api-Key {keys[device]}", "Content-Type": "application/json"}
            async with gate:
                t_wall, t0 = time.time(), time.perf_counter()
                try:
                    async with session.post(url + path, data=body, headers=headers) as resp:
                        text = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    statuses[f"conn:{exc.__class__.__name__}"] += 1
                    return
            latencies.append(time.perf_counter() - t0)
            statuses[status] += 1
            if batch and status == 200:
                answer = json.loads(text)
                for result in answer["results"]:
                    windows[result["result"]] += 1
                    if result["result"] == "accepted":
                        sent_at[result["id"]] = t_wall
            elif not batch and status == 202:
                windows["accepted"] += 1
                sent_at[json.loads(text)["id"]] = t_wall

        started = time.perf_counter()
        tasks = []
        for k in range(n_requests):
            delay = started + k * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
            tasks.append(asyncio.ensure_future(one(k)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"sent_at": sent_at, "statuses": statuses, "latencies": latencies, "windows": windows,
            "elapsed": elapsed, "lag": lag, "requests": n_requests}


def one_run(*, args, env_base: dict, debounce: int, run: int, database_url: str, redis_proc, gunicorn_url: str,
            gunicorn, source: WindowSource, work: Path) -> bool:
    import psycopg

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    windows_per_device = int(args.rate * args.duration / args.patients) + max(1, args.batch) + 1
    first_at = now - dt.timedelta(seconds=30 * windows_per_device + 600)  # the last window ends ~10 min ago
    calibrated_at = first_at - dt.timedelta(hours=1)  # no benchmark window re-pairs the calibration
    clinic = clinic_create(env=env_base, tag=f"p{run}", patients=args.patients, plan=True, calibrated_at=calibrated_at)
    env = {**env_base, "THERAPY_EVALUATION_DEBOUNCE_S": str(debounce)}
    workers = []
    bodies = Bodies(source, first_at)
    poller = Poller(database_url, env["REDIS_URL"], clinic.patients)
    try:
        workers = workers_start(env=env, name=f"pipeline{run}", args=args, log_dir=work)
        time.sleep(2.0)
        pg_port = pg_port_of(database_url)
        meter = CpuMeter({"gunicorn": lambda: process_tree(gunicorn.pid), "worker": workers[0].processes,
                          "therapy": lambda: [p for w in workers[1:] for p in w.processes()],
                          "postgres": lambda: postgres_processes(pg_port), "redis": lambda: process_tree(redis_proc.pid)})
        load0 = load_average()
        poller.start()
        meter.start()
        offered = asyncio.run(offer(url=gunicorn_url, keys=clinic.keys, bodies=bodies, rate=args.rate, batch=args.batch,
                                    duration=args.duration, max_in_flight=args.max_in_flight))
        cpu_upload = meter.stop()
        ids = list(offered["sent_at"])
        deadline = time.monotonic() + args.settle_timeout
        with psycopg.connect(database_url, autocommit=True) as db:
            # Every accepted window judged, every usable one estimated ...
            while time.monotonic() < deadline:
                waiting, usable, estimated = db.execute(
                    "SELECT count(*) FILTER (WHERE status = 'received'), count(*) FILTER (WHERE status = 'processed'), "
                    "(SELECT count(DISTINCT window_id) FROM monitoring_bpestimate WHERE window_id = ANY(%(ids)s) "
                    "AND NOT shadow) FROM monitoring_signalwindow WHERE id = ANY(%(ids)s)", {"ids": ids}).fetchone()
                if waiting == 0 and estimated >= usable:
                    break
                time.sleep(0.25)
            settled_s = time.monotonic() - (deadline - args.settle_timeout)
            rows = db.execute("SELECT e.window_id, e.patient_id, e.created_at FROM monitoring_bpestimate e "
                              "WHERE e.window_id = ANY(%s) AND NOT e.shadow", [ids]).fetchall()
            # ... then each estimate's patient evaluated after it.
            last_estimate = {}
            for _, patient_id, created_at in rows:
                last_estimate[patient_id] = max(created_at, last_estimate.get(patient_id, created_at))
            while time.monotonic() < deadline:
                if all(poller.evaluations[p] and poller.evaluations[p][-1] >= t for p, t in last_estimate.items()):
                    break
                time.sleep(0.25)
            rejected = db.execute("SELECT count(*) FROM monitoring_signalwindow WHERE id = ANY(%s) AND status = 'rejected'",
                                  [ids]).fetchone()[0]
    finally:
        poller.stopping.set()
        poller.join(timeout=5)
        for worker in workers:
            worker.stop()

    to_estimate, to_decision, undecided = [], [], 0
    for window_id, patient_id, created_at in rows:
        sent = offered["sent_at"][window_id]
        to_estimate.append(created_at.timestamp() - sent)
        decided = next((t for t in poller.evaluations[patient_id] if t >= created_at), None)
        if decided is None:
            undecided += 1
        else:
            to_decision.append(decided.timestamp() - sent)
    accepted = offered["windows"]["accepted"]
    rate = accepted / offered["elapsed"]
    lat = [v * 1000 for v in offered["latencies"]]
    bad = {k: v for k, v in offered["statuses"].items() if k not in (200, 202)}
    mode = f"batches of {args.batch}" if args.batch else "single uploads"

    def dist(values: list[float]) -> str:
        if not values:
            return "none"
        return (f"p50 {percentile(values, .5):.2f} s, p95 {percentile(values, .95):.2f} s, p99 {percentile(values, .99):.2f} s, "
                f"max {max(values):.2f} s")

    print(f"RESULT pipeline, THERAPY_EVALUATION_DEBOUNCE_S={debounce}: offered {args.rate:.0f} windows/s ({mode}) for "
          f"{args.duration:.0f} s -> {rate:.1f} accepted windows/s ({accepted} windows, {offered['requests']} requests, "
          f"request latency p50 {percentile(lat, .5):.0f} ms, p99 {percentile(lat, .99):.0f} ms, schedule slipped at most "
          f"{offered['lag']:.2f} s; errors: {', '.join(f'{k}x{v}' for k, v in bad.items()) or 'none'})")
    print(f"  upload -> stored estimate ({len(to_estimate)} usable windows; {rejected} rejected by the quality gate): "
          f"{dist(to_estimate)}; all settled {settled_s:.1f} s after the last upload; Celery queue at most "
          f"{poller.max_queue} messages")
    print(f"  upload -> routing decision (first evaluation of the patient after the estimate; {len(clinic.patients)} "
          f"patients): {dist(to_decision)}; undecided {undecided}; evaluation outcomes seen: "
          f"{dict(poller.outcomes) or 'none'}")
    if rate > 0:
        per = {k: cpu_upload[k] * offered["elapsed"] * 1000 / accepted
               for k in ("gunicorn", "worker", "therapy", "postgres", "redis")}
        loadgen = cpu_upload["loadgen"] * offered["elapsed"] * 1000 / accepted
        print(f"  CPU per window while uploading: gunicorn {per['gunicorn']:.2f} ms, worker {per['worker']:.2f} ms, "
              f"therapy worker {per['therapy']:.2f} ms, "
              f"postgres {per['postgres']:.2f} ms, redis {per['redis']:.3f} ms = {sum(per.values()):.2f} ms (+ load "
              f"generator {loadgen:.2f} ms); cores busy: gunicorn {cpu_upload['gunicorn']:.2f}, worker "
              f"{cpu_upload['worker']:.2f}, postgres {cpu_upload['postgres']:.2f}, whole machine "
              f"{cpu_upload.get('machine', float('nan')):.2f} of 2 | load average {load0} -> {load_average()}")
    if poller.error:
        print(f"  poller error: {poller.error!r}")
    p95 = percentile(to_estimate, .95) if to_estimate else float("inf")
    print(f"Target: p95 upload-to-estimate <= {TARGET_P95_S:.0f} s at {args.rate:.0f} windows/s -> "
          f"{'MET' if p95 <= TARGET_P95_S else 'NOT MET'} ({p95:.2f} s)", flush=True)
    return not bad and len(to_estimate) > 0 and undecided == 0 and waiting == 0


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    print(f"bench/pipeline: {args.rate:.0f} windows/s offered, {'batch ' + str(args.batch) if args.batch else 'single'}, "
          f"{args.duration:.0f} s per run, {args.patients} patients, debounce {args.debounce}, "
          f"{workers_shape(args)}, gunicorn -w {args.gunicorn_workers}; {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
          f"load average {load_average()}", flush=True)
    source = WindowSource.load()
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-pipeline-"))
    redis_proc = gunicorn = None
    ok = []
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            env = production_env(database_url=database_url, redis_port=redis_port, work=work)
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="manage.py migrate")
            port = free_port()
            gunicorn = start_gunicorn(env=env, port=port, workers=args.gunicorn_workers, worker_class="sync", threads=1,
                                      log_path=work / "gunicorn.log")
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_healthy(url, gunicorn))
            for run, debounce in enumerate(args.debounce, start=1):
                ok.append(one_run(args=args, env_base=env, debounce=debounce, run=run, database_url=database_url,
                                  redis_proc=redis_proc, gunicorn_url=url, gunicorn=gunicorn, source=source, work=work))
    except KeyboardInterrupt:
        print("bench/pipeline: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        stop(gunicorn)
        stop(redis_proc)
        if args.keep:
            print(f"bench/pipeline: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"bench/pipeline: load average at the end {load_average()}")
    return 0 if ok and all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
