"""Benchmark: end-to-end latency from a device upload to the stored BP estimate, and from a
crisis-level estimate to the urgent alert it raises, at a fixed upload rate, on the real server
shape.

Starts a private Redis and a throwaway PostgreSQL, migrates, runs gunicorn (production settings,
sync -w 3) and real `celery -A clinops worker` processes on them, as compose.yaml does: one for
the windows and the urgent evaluations (-Q celery, prefork --concurrency 2) and one for the
routine evaluations (-Q therapy, --concurrency 1, at a lower CPU priority: nice 10). A clinic of
calibrated patients with a therapy plan (bench/_lib: consent, wearable, cuff reading paired with a
processed window, the active carry-forward model, whose estimate repeats the calibration cuff
reading), then uploads of real 30-s windows at --rate windows/s for --duration s, open loop
(request k leaves at k x batch / rate, whatever the answers), batch API with --batch windows per
request (0: one window per POST /api/v1/windows/).

Therapy evaluation is daily per patient (a beat sweep, not run here: no patient falls due in a
run) and on events; each new live estimate gets an O(1) escalation check, and a crisis-level one
(SBP >= 180 or DBP >= 120 mmHg) asks for its patient's evaluation at once on the celery queue,
which raises an urgent Alert (cause "crisis") once two crisis-level estimates within 30 min
confirm it. --crisis-share of the patients are calibrated at 186/112 mmHg (8 days earlier than
the others, out of the evaluation's 7-day cuff look-back, so that the cuff reading does not
escalate on its own): all their estimates are crisis-level.

Measured: each accepted window from the moment its request was sent to its live BPEstimate's
created_at (upload -> estimate); per crisis patient, from the estimate that confirmed the crisis
(the first, in order of storing, with another crisis-level estimate within 30 min of it) to the
Alert's raised_at, and from the upload of that estimate's window to it (crisis estimate -> urgent
alert); and the evaluations run (changes of the patients' LatestEvaluation.evaluated_at, polled
every 0.25 s: two evaluations of a patient within 0.25 s count once).

    .venv/bin/python bench/pipeline.py                              # 250 windows/s, batches of 20, 100 patients
    .venv/bin/python bench/pipeline.py --rate 80 --batch 0          # one window per request

Prints the achieved upload rate, request latency, upload->estimate p50/p95/p99/max, crisis
estimate->alert, the evaluations run, the Celery queue's largest backlog, CPU per window of every
part (robust to other load on the machine) and the load average, and the target lines (p95
upload-to-estimate <= 2 s, p95 crisis estimate-to-alert <= 60 s). Request bodies are JSON without
gzip (built from templates, so the load generator stays light). Exit status 0; 1 on 5xx/connection
errors, windows never estimated or a confirmed crisis without its alert; 130 when interrupted.
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
from _lib import (  # noqa: E402
    PYTHON,
    CpuMeter,
    WindowSource,
    add_worker_arguments,
    clinic_create,
    free_port,
    load_average,
    percentile,
    pg_port_of,
    postgres_processes,
    process_tree,
    production_env,
    run_checked,
    start_gunicorn,
    start_redis,
    stop,
    stop_on_signals,
    temporary_postgres,
    wait_healthy,
    workers_shape,
    workers_start,
)

TARGET_P95_S = 2.0
TARGET_ALERT_P95_S = 60.0  # README "Benchmarks": crisis estimate -> urgent alert
DEFAULT_RATE = 250.0  # 50 % of the ~500 windows/s sustained by bench/ingest.py --batch 100 (489.7-561 on 2026-12-01)
DEFAULT_CRISIS_SHARE = 0.05
# therapy.escalation: a crisis-level reading, and two of them within this long confirm a crisis.
CRISIS_SBP_MMHG, CRISIS_DBP_MMHG = 180.0, 120.0
CRISIS_CONFIRMATION = dt.timedelta(minutes=30)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help="windows/s offered (open loop)")
    p.add_argument("--batch", type=int, default=20, help="windows per request (batch API); 0 = single uploads")
    p.add_argument("--duration", type=float, default=45.0, help="seconds of uploads")
    p.add_argument("--patients", type=int, default=100, help="patients (wearables, each with a plan)")
    p.add_argument("--crisis-share", type=float, default=DEFAULT_CRISIS_SHARE,
                   help="share of the patients whose estimates are all crisis-level (at least one when > 0)")
    add_worker_arguments(p)
    p.add_argument("--gunicorn-workers", type=int, default=3)
    p.add_argument("--max-in-flight", type=int, default=32, help="requests in flight at most (then the schedule slips)")
    p.add_argument("--settle-timeout", type=float, default=300.0,
                   help="seconds to wait for estimates and alerts after the uploads")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.patients < 1 or not 0 <= args.batch <= 100 \
            or not 0 <= args.crisis_share <= 1:
        p.error("--rate, --duration, --patients must be positive, --batch 0-100, --crisis-share 0-1")
    return args


class Bodies:
    """Upload bodies from templates: window k's JSON with its sequence and time spliced in."""

    def __init__(self, source: WindowSource) -> None:
        self.tails = []
        for k in range(len(source.windows)):
            payload = source.payload(k, sequence=0, recorded_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
            tail = {key: payload[key] for key in ("duration_s", "ecg", "ppg")}
            self.tails.append(json.dumps(tail)[1:])  # '"duration_s": 30.0, ...}'

    def window(self, sequence: int, recorded_at: dt.datetime, variant: int = 0) -> str:
        """`variant` (e.g. the device) shifts which real window a sequence gets, so that devices at
        the same sequence do not all send the same one."""
        stamp = recorded_at.isoformat().replace("+00:00", "Z")
        return (f'{{"sequence": {sequence}, "recorded_at": "{stamp}", '
                + self.tails[(sequence + 7 * variant) % len(self.tails)])

    def body(self, windows: list[tuple[int, dt.datetime]], *, variant: int = 0, batch: bool) -> bytes:
        if not batch:
            (sequence, at), = windows
            return self.window(sequence, at, variant).encode()
        return ('{"windows": [' + ", ".join(self.window(s, at, variant) for s, at in windows) + "]}").encode()


@dataclass(frozen=True)
class Upload:
    """One request of the schedule: at `at` s after the start, device `device` sends `windows`,
    each (sequence, recorded_at as seconds after the schedule's origin)."""

    at: float
    device: int
    windows: tuple[tuple[int, float], ...]


def uniform_schedule(*, devices: int, rate: float, batch: int, duration: float) -> list[Upload]:
    """Request k at k x per_request / rate, from device k mod devices; each device's windows are
    contiguous 30-s windows from the origin (sequence 0 is the calibration window)."""
    per_request = max(1, batch)
    interval = per_request / rate
    sequences = [1] * devices
    out = []
    for k in range(int(duration / interval)):
        device = k % devices
        first = sequences[device]
        sequences[device] += per_request
        out.append(Upload(k * interval, device, tuple((s, 30.0 * s) for s in range(first, first + per_request))))
    return out


async def offer(*, url: str, keys: list[str], bodies: Bodies, schedule: list[Upload], single: bool,
                max_in_flight: int, origin: dt.datetime | None = None) -> dict:
    """Open loop: each upload of the schedule leaves at its time, whatever the answers. The
    windows' recorded_at are origin + their offsets (origin: the wall time at the start when None).
    Returns what was sent and answered; `started_wall`: the wall time of the start."""
    sent_at: dict[int, float] = {}  # window id -> wall time its request left (time.time())
    statuses: Counter = Counter()
    latencies: list[float] = []
    windows = Counter()
    lag = 0.0
    gate = asyncio.Semaphore(max_in_flight)
    path = "/api/v1/windows/" if single else "/api/v1/windows/batch/"
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_in_flight), timeout=timeout) as session:
        async def one(upload: Upload) -> None:
            body = bodies.body([(s, origin + dt.timedelta(seconds=off)) for s, off in upload.windows],
                               variant=upload.device, batch=not single)
            headers = {"Authorization": f"Api-Key {keys[upload.device]}", "Content-Type": "application/json"}
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
            if not single and status == 200:
                for result in json.loads(text)["results"]:
                    windows[result["result"]] += 1
                    if result["result"] == "accepted":
                        sent_at[result["id"]] = t_wall
            elif single and status == 202:
                windows["accepted"] += 1
                sent_at[json.loads(text)["id"]] = t_wall

        started, started_wall = time.perf_counter(), time.time()
        if origin is None:
            origin = dt.datetime.fromtimestamp(started_wall, dt.timezone.utc)
        tasks = []
        for upload in schedule:
            delay = started + upload.at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
            tasks.append(asyncio.ensure_future(one(upload)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"sent_at": sent_at, "statuses": statuses, "latencies": latencies, "windows": windows,
            "elapsed": elapsed, "lag": lag, "requests": len(schedule), "started_wall": started_wall}


class Poller(threading.Thread):
    """Every 0.25 s: the patients' LatestEvaluation times (each change is an evaluation) and the
    Celery queues' length."""

    def __init__(self, database_url: str, redis_url: str, patients: list[int]) -> None:
        super().__init__(daemon=True)
        self.database_url, self.redis_url, self.patients = database_url, redis_url, patients
        self.last: dict[int, dt.datetime] = {}
        self.evaluations = 0
        self.outcomes: Counter = Counter()
        self.max_queue = {"celery": 0, "therapy": 0}
        self.stopping = threading.Event()
        self.error = None

    def run(self) -> None:
        import psycopg
        import redis

        try:
            rds = redis.Redis.from_url(self.redis_url)
            with psycopg.connect(self.database_url, autocommit=True) as db:
                self.last = dict(db.execute("SELECT patient_id, evaluated_at FROM therapy_latestevaluation "
                                            "WHERE patient_id = ANY(%s)", [self.patients]).fetchall())
                while not self.stopping.is_set():
                    rows = db.execute("SELECT patient_id, evaluated_at, outcome FROM therapy_latestevaluation "
                                      "WHERE patient_id = ANY(%s)", [self.patients]).fetchall()
                    for patient_id, evaluated_at, outcome in rows:
                        if self.last.get(patient_id) != evaluated_at:
                            self.last[patient_id] = evaluated_at
                            self.evaluations += 1
                            self.outcomes[outcome] += 1
                    for queue in self.max_queue:
                        self.max_queue[queue] = max(self.max_queue[queue], rds.llen(queue))
                    self.stopping.wait(0.25)
        except Exception as exc:  # noqa: BLE001 - reported by the run
            self.error = exc


def crisis_confirmations(db, crisis: list[int]) -> tuple[dict[int, tuple[int, dt.datetime]], dict[int, dt.datetime]]:
    """Per crisis patient, the live estimate that confirmed the crisis: the first, in the order they
    were stored, with an earlier-stored (or same-batch) crisis-level estimate recorded within 30 min
    of it: (window id, created_at); and the time each patient's first crisis Alert was raised."""
    rows = db.execute("SELECT patient_id, window_id, recorded_at, created_at, sbp_mmhg, dbp_mmhg FROM monitoring_bpestimate "
                      "WHERE NOT shadow AND patient_id = ANY(%s) ORDER BY created_at, id", [crisis]).fetchall()
    alerts = dict(db.execute("SELECT patient_id, min(raised_at) FROM therapy_alert WHERE cause = 'crisis' AND "
                             "patient_id = ANY(%s) GROUP BY patient_id", [crisis]).fetchall())
    confirmed: dict[int, tuple[int, dt.datetime]] = {}
    seen: dict[int, list[dt.datetime]] = {}
    for patient_id, window_id, recorded_at, created_at, sbp, dbp in rows:
        if patient_id in confirmed or not (sbp >= CRISIS_SBP_MMHG or dbp >= CRISIS_DBP_MMHG):
            continue
        earlier = seen.setdefault(patient_id, [])
        if any(abs(recorded_at - at) <= CRISIS_CONFIRMATION for at in earlier):
            confirmed[patient_id] = (window_id, created_at)
        earlier.append(recorded_at)
    return confirmed, alerts


def dist(values: list[float], unit: str = "s") -> str:
    if not values:
        return "none"
    return (f"p50 {percentile(values, .5):.2f} {unit}, p95 {percentile(values, .95):.2f} {unit}, "
            f"p99 {percentile(values, .99):.2f} {unit}, max {max(values):.2f} {unit}")


def one_run(*, args, env: dict, database_url: str, redis_proc, gunicorn_url: str, gunicorn, source: WindowSource,
            work: Path) -> bool:
    import psycopg

    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    schedule = uniform_schedule(devices=args.patients, rate=args.rate, batch=args.batch, duration=args.duration)
    last_offset = max((off for up in schedule for _, off in up.windows), default=0.0)
    first_at = now - dt.timedelta(seconds=last_offset + 600)  # the last window starts ~10 min ago
    calibrated_at = first_at - dt.timedelta(hours=1)  # no benchmark window re-pairs the calibration
    clinic = clinic_create(env=env, tag="p1", patients=args.patients, plan=True, calibrated_at=calibrated_at,
                           crisis_share=args.crisis_share)
    workers = []
    poller = Poller(database_url, env["REDIS_URL"], clinic.patients)
    try:
        workers = workers_start(env=env, name="pipeline", args=args, log_dir=work)
        time.sleep(2.0)
        pg_port = pg_port_of(database_url)
        meter = CpuMeter({"gunicorn": lambda: process_tree(gunicorn.pid), "worker": workers[0].processes,
                          "therapy": lambda: [p for w in workers[1:] for p in w.processes()],
                          "postgres": lambda: postgres_processes(pg_port), "redis": lambda: process_tree(redis_proc.pid)})
        load0 = load_average()
        poller.start()
        meter.start()
        offered = asyncio.run(offer(url=gunicorn_url, keys=clinic.keys, bodies=Bodies(source), schedule=schedule,
                                    single=args.batch == 0, max_in_flight=args.max_in_flight, origin=first_at))
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
            rows = db.execute("SELECT e.window_id, e.created_at FROM monitoring_bpestimate e "
                              "WHERE e.window_id = ANY(%s) AND NOT e.shadow", [ids]).fetchall()
            # ... then every confirmed crisis alerted.
            while True:
                confirmed, alerts = crisis_confirmations(db, clinic.crisis)
                if set(confirmed) <= set(alerts) or time.monotonic() >= deadline:
                    break
                time.sleep(0.25)
            rejected = db.execute("SELECT count(*) FROM monitoring_signalwindow WHERE id = ANY(%s) AND status = 'rejected'",
                                  [ids]).fetchone()[0]
        time.sleep(0.5)  # the poller's last look
    finally:
        poller.stopping.set()
        poller.join(timeout=5)
        for worker in workers:
            worker.stop()

    to_estimate = [created_at.timestamp() - offered["sent_at"][window_id] for window_id, created_at in rows]
    to_alert, upload_to_alert = [], []
    for patient_id, (window_id, created_at) in confirmed.items():
        if patient_id in alerts:
            to_alert.append((alerts[patient_id] - created_at).total_seconds())
            if window_id in offered["sent_at"]:
                upload_to_alert.append(alerts[patient_id].timestamp() - offered["sent_at"][window_id])
    unalerted = sorted(set(confirmed) - set(alerts))
    unconfirmed_alerts = sorted(set(alerts) - set(confirmed))
    accepted = offered["windows"]["accepted"]
    rate = accepted / offered["elapsed"]
    lat = [v * 1000 for v in offered["latencies"]]
    bad = {k: v for k, v in offered["statuses"].items() if k not in (200, 202)}
    mode = f"batches of {args.batch}" if args.batch else "single uploads"

    print(f"RESULT pipeline: offered {args.rate:.0f} windows/s ({mode}) for "
          f"{args.duration:.0f} s -> {rate:.1f} accepted windows/s ({accepted} windows, {offered['requests']} requests, "
          f"request latency p50 {percentile(lat, .5):.0f} ms, p99 {percentile(lat, .99):.0f} ms, schedule slipped at most "
          f"{offered['lag']:.2f} s; errors: {', '.join(f'{k}x{v}' for k, v in bad.items()) or 'none'})")
    print(f"  upload -> stored estimate ({len(to_estimate)} usable windows; {rejected} rejected by the quality gate): "
          f"{dist(to_estimate)}; all settled {settled_s:.1f} s after the last upload; queues at most "
          f"celery {poller.max_queue['celery']}, therapy {poller.max_queue['therapy']} messages")
    print(f"  crisis estimate -> urgent alert ({len(clinic.crisis)} crisis patients of {len(clinic.patients)}; "
          f"{len(confirmed)} confirmed by two crisis-level estimates, {len(alerts)} alerted): from the confirming "
          f"estimate's storing {dist(to_alert)}; from its window's upload {dist(upload_to_alert)}; confirmed but not "
          f"alerted {len(unalerted)}{' ' + str(unalerted[:10]) if unalerted else ''}; alerted without a confirming pair "
          f"{len(unconfirmed_alerts)}")
    print(f"  evaluations run: {poller.evaluations} (LatestEvaluation changes, polled every 0.25 s: the urgent ones of the "
          f"crisis patients; no daily one falls due in a run); outcomes: {dict(poller.outcomes) or 'none'}")
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
          f"{'MET' if p95 <= TARGET_P95_S else 'NOT MET'} ({p95:.2f} s)")
    if clinic.crisis:
        p95_alert = percentile(to_alert, .95) if to_alert else float("inf")
        print(f"Target: p95 crisis estimate-to-alert <= {TARGET_ALERT_P95_S:.0f} s, every confirmed crisis alerted -> "
              f"{'MET' if p95_alert <= TARGET_ALERT_P95_S and not unalerted else 'NOT MET'} ({p95_alert:.2f} s, "
              f"{len(unalerted)} not alerted)", flush=True)
    return not bad and len(to_estimate) > 0 and waiting == 0 and not unalerted


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    print(f"bench/pipeline: {args.rate:.0f} windows/s offered, {'batch ' + str(args.batch) if args.batch else 'single'}, "
          f"{args.duration:.0f} s, {args.patients} patients ({args.crisis_share:.0%} crisis-level), "
          f"{workers_shape(args)}, gunicorn -w {args.gunicorn_workers}; {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
          f"load average {load_average()}", flush=True)
    source = WindowSource.load()
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-pipeline-"))
    redis_proc = gunicorn = None
    ok = False
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
            ok = one_run(args=args, env=env, database_url=database_url, redis_proc=redis_proc, gunicorn_url=url,
                         gunicorn=gunicorn, source=source, work=work)
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
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
