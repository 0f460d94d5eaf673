"""Soak: the whole server shape at the production cadence of README "Benchmarks" - by default 50,000 patients with
plans, each wearable recording a 30-s window every 5 min (~167 windows/s) - for --duration seconds
(default 600, after a --warmup of 300 s at the same load), with the memory of every process
sampled every 10 s; each process group's growth over the measured part must stay within 10 %.
Growth is the trend: the least-squares line through every measured sample, its value at the end
against its value at the start (the means of the first and last measured minute, and the growth
from the very first minute, warm-up included, are printed beside it). A leak is a trend, and two
minute-means compare noise. PostgreSQL is judged by the private memory of the processes that live
for the whole soak (postmaster, checkpointer, writers, launchers), without the shared buffers they
touched (psutil's USS counts a shared page only one process touched as its own: a backend that read
20 MiB of tables showed 20 MiB more), and by the number of client backends: a backend is replaced
every CONN_MAX_AGE (60 s) and an autovacuum worker ends with its table, so nothing accumulates in
them, while their summed memory swings with how many are alive at a sample (its USS trend read
-16 % and +20 % in two identical runs). The warm-up is 5 min because that is how long the gunicorn
workers take to reach their working set under load: in two runs with a 2-min warm-up (2026-12-01)
they rose by ~16 MiB each between minutes 4 and 5 and then stayed flat for the 7 min to the end
(+7.7 % and +10.2 % measured from minute 2), while the Python objects they hold stayed flat
(tracemalloc).

Starts a private Redis and a throwaway PostgreSQL, migrates, seeds the clinic (bench/_lib, bulk
path: the first patient through the services, the others copied with bulk_create - patients,
wearables with their own hashed API keys, care team, plans, calibration windows, cuff readings,
calibrations - timed and printed), and runs gunicorn (production settings, sync -w 3), two
`celery -A clinops worker`s as compose.yaml does (-Q celery prefork --concurrency 2 for the windows
and the urgent evaluations, -Q therapy --concurrency 1 at nice 10 for the routine ones) and
`celery -A clinops beat` (the daily-evaluation due sweep every minute, the other sweepers,
heartbeats and monitoring reports, on their real schedule). Every patient's LatestEvaluation is
seeded at a time spread evenly over the evaluation interval before the start (a clinic that has
been running), so the daily evaluations fall due evenly: ~35 a minute at 50,000 patients.

The load: every device sends its own patient's windows. A device records a window every
--patients / --rate seconds (300 s at the defaults: the product's cadence) and uploads what it has
buffered, --windows-per-upload windows at a time (default 6: a wearable uploading every 30 min, so
~28 batch requests/s at 50,000 patients; 1 = a request per window to POST /api/v1/windows/, ~167
requests/s at ~10.6 ms of CPU each, bench/ingest.py, which would fill the 2 cores). Devices are
spread evenly over the upload cycle, and their windows carry their real recording times (when a
device's windows come faster than one per 30 s, as in short validation runs, they are contiguous
30-s windows ending before the upload instead). --crisis-share of the patients (1 %) are calibrated
at 186/112 mmHg (8 days before the others, out of the evaluation's 7-day cuff look-back): all their
estimates are crisis-level, and two within 30 min raise the urgent alert.

Every 10 s it records the RSS of each process - gunicorn master and workers, each celery worker's
main process and pool children, beat, the PostgreSQL server processes and its client backends
(each summed; also their private memory without the shared buffers, which a backend's RSS counts),
Redis - the pipeline's backlog (and, once over QUEUE_LOOK_FROM tasks, which tasks fill the
queue), the daily evaluations overdue (the pipeline report's evaluation.patients_overdue and
oldest_overdue_minutes, therapy/reports.py, in SQL), the
patients evaluated since the last sample, and the crisis patients confirmed by two crisis-level
estimates but not alerted yet (and the oldest such wait).

    .venv/bin/python bench/soak.py                                    # 50,000 patients, 300 s warm-up + 600 s
    .venv/bin/python bench/soak.py --windows-per-upload 1             # single uploads, ~167 requests/s
    .venv/bin/python bench/soak.py --patients 500 --warmup 20 --duration 40 --rate 50 --evaluation-interval 3600

Prints the seeding time, the samples, then per process group the trend of its RSS with PASS/FAIL
against 10 % and the minute means, upload->estimate latency over the soak and over the measured
part, crisis estimate->urgent alert latency, the evaluations run in the measured part and the
overdue counts, CPU per window, and the load average. Exit status 0 when every group passes, every
accepted window was processed, every confirmed crisis was alerted and no daily evaluation was
overdue by more than OVERDUE_GRACE_S at a measured sample.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import psutil  # noqa: E402
from _lib import (  # noqa: E402
    CELERY_LOG_LEVEL,
    PYTHON,
    ROOT,
    CpuMeter,
    WindowSource,
    Worker,
    add_worker_arguments,
    clinic_create,
    die_with_parent,
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
from pipeline import (  # noqa: E402
    CRISIS_CONFIRMATION,
    CRISIS_DBP_MMHG,
    CRISIS_SBP_MMHG,
    TARGET_ALERT_P95_S,
    TARGET_P95_S,
    Bodies,
    Upload,
    crisis_confirmations,
    dist,
    offer,
)

GROWTH_LIMIT = 0.10
SAMPLE_EVERY_S = 10.0
WINDOW_EVERY_S = 300.0  # a patient's wearable records a 30-s window every 5 min (the product's cadence)
DEFAULT_PATIENTS = 50_000  # README "Benchmarks": one 2-core machine's target
DEFAULT_CRISIS_SHARE = 0.01
PRODUCT_EVALUATION_INTERVAL_S = 86_400  # clinops/settings/base.py THERAPY_EVALUATION_INTERVAL_S
# The due sweep runs every minute and sends the patients due by then: a patient falls due between
# two sweeps and waits for the next one, and then for the therapy worker. Overdue by more than
# this at a sample means the daily evaluations are not keeping up.
OVERDUE_GRACE_S = 120.0
NOT_MEMORY = ("t", "waiting", "queue", "therapy queue", "queued tasks", "overdue", "overdue_min", "overdue_late",
              "evaluated", "alerts", "unalerted", "unalerted_s")
# A client backend's title ("postgres: <user> <database> <host>(<port>) <state>"): the
# production settings' user. With the autovacuum and parallel workers ("... worker") they come and
# go; the other PostgreSQL processes (postmaster, checkpointer, writers, the launchers) live for
# the whole soak.
CLIENT_BACKEND = "postgres: clinops "
# Autovacuum workers (autovacuum_max_workers, 3 by default) may run beside the backends at any
# sample; a connection leak would grow past that without bound.
BACKEND_COUNT_SLACK = 3
# The pipeline report's evaluation figure (therapy.reports._evaluations_overdue) in SQL, as the
# sampler has no Django: patients whose latest evaluation is older than the interval, plus patients
# never evaluated whose first plan was set before now; the minutes since the oldest fell due; and
# (ours) how many are overdue by more than OVERDUE_GRACE_S.
EVALUATIONS_OVERDUE_SQL = """
WITH stale AS (SELECT count(*) AS n, min(evaluated_at) + make_interval(secs => %(interval)s) AS due,
                      count(*) FILTER (WHERE evaluated_at < now() - make_interval(secs => %(interval)s + %(grace)s)) AS late
               FROM therapy_latestevaluation WHERE evaluated_at < now() - make_interval(secs => %(interval)s)),
     never AS (SELECT count(*) AS n, min(planned_at) AS due,
                      count(*) FILTER (WHERE planned_at < now() - make_interval(secs => %(grace)s)) AS late
               FROM (SELECT p.id, (SELECT min(v.created_at) FROM therapy_planversion v WHERE v.patient_id = p.id) AS planned_at
                     FROM patients_patient p
                     WHERE NOT EXISTS (SELECT 1 FROM therapy_latestevaluation le WHERE le.patient_id = p.id)) never_evaluated
               WHERE planned_at < now())
SELECT stale.n + never.n,
       coalesce(extract(epoch FROM now() - least(stale.due, never.due)) / 60, 0)::float,
       stale.late + never.late
FROM stale, never
"""
# Crisis patients with two live crisis-level estimates recorded within 30 min of each other and no
# crisis alert yet: how many, and the seconds since the oldest such pair was complete.
CRISIS_UNALERTED_SQL = f"""
SELECT count(*), coalesce(extract(epoch FROM now() - min(confirmed_at)), 0)::float FROM (
  SELECT b.patient_id, min(greatest(a.created_at, b.created_at)) AS confirmed_at
  FROM monitoring_bpestimate a JOIN monitoring_bpestimate b ON b.patient_id = a.patient_id AND b.id > a.id
       AND abs(extract(epoch FROM b.recorded_at - a.recorded_at)) <= {CRISIS_CONFIRMATION.total_seconds():.0f}
  WHERE a.patient_id = ANY(%(crisis)s) AND NOT a.shadow AND NOT b.shadow
    AND (a.sbp_mmhg >= {CRISIS_SBP_MMHG} OR a.dbp_mmhg >= {CRISIS_DBP_MMHG})
    AND (b.sbp_mmhg >= {CRISIS_SBP_MMHG} OR b.dbp_mmhg >= {CRISIS_DBP_MMHG})
    AND NOT EXISTS (SELECT 1 FROM therapy_alert al WHERE al.patient_id = a.patient_id AND al.cause = 'crisis')
  GROUP BY b.patient_id) confirmed
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                   help="patients with plans, each with a wearable and a calibration")
    p.add_argument("--rate", type=float, default=None,
                   help=f"windows/s offered (open loop); default: --patients / {WINDOW_EVERY_S:.0f} s, the product's "
                        "cadence (a device then records a window every --patients / --rate s)")
    p.add_argument("--windows-per-upload", type=int, default=6,
                   help="windows a device buffers and sends in one request (batch API); 1 = one request per window "
                        "(POST /api/v1/windows/)")
    p.add_argument("--crisis-share", type=float, default=DEFAULT_CRISIS_SHARE,
                   help="share of the patients whose estimates are all crisis-level")
    p.add_argument("--evaluation-interval", type=int, default=None,
                   help=f"THERAPY_EVALUATION_INTERVAL_S for every process (default: the product's, "
                        f"{PRODUCT_EVALUATION_INTERVAL_S} s); the seeded evaluations are spread over it")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of uploads that are measured")
    p.add_argument("--warmup", type=float, default=300.0,
                   help="seconds of uploads at the same rate before the measured part (lazy imports, caches, "
                        "connection pools and heaps reaching their working set are not a leak); 0 = none")
    add_worker_arguments(p)
    p.add_argument("--gunicorn-workers", type=int, default=3)
    p.add_argument("--max-in-flight", type=int, default=32)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.rate is None:
        args.rate = args.patients / WINDOW_EVERY_S
    if args.duration < 3 * SAMPLE_EVERY_S or args.rate <= 0 or args.warmup < 0 or args.patients < 2 \
            or not 1 <= args.windows_per_upload <= 100 or not 0 <= args.crisis_share <= 1:
        p.error("--duration at least 30 s, --rate positive, --warmup not negative, --patients at least 2, "
                "--windows-per-upload 1-100, --crisis-share 0-1")
    return args


def cadence_schedule(*, devices: int, rate: float, per_upload: int, duration: float) -> tuple[list[Upload], dict]:
    """Every device records a window every devices / rate s and uploads them per_upload at a time;
    the devices' upload times are spread evenly over the cycle (per_upload windows' time). Device
    d's k-th window (sequence k; 0 is the calibration) is stamped at its recording time before the
    upload that carries it (offsets from the start), or, when windows come faster than one per 30 s,
    30 s after the one before, all shifted back so that none is stamped after its upload."""
    interval = devices / rate
    spacing = max(interval, 30.0)
    cycle = per_upload * interval
    k_max = int(duration / interval) + per_upload + 1
    shift = k_max * (spacing - interval) + 30.0 + cycle
    out = []
    for device in range(devices):
        phase = (device + 0.5) / devices * cycle
        m = 0
        while phase + m * cycle < duration:
            first = m * per_upload + 1
            out.append(Upload(phase + m * cycle, device, tuple(
                (k, phase + (k - 1) * spacing - shift) for k in range(first, first + per_upload))))
            m += 1
    out.sort(key=lambda upload: upload.at)
    return out, {"interval": interval, "spacing": spacing, "cycle": cycle, "earliest": -shift,
                 "requests_per_s": devices / cycle}


# PostgreSQL's shared buffers and other shared segments: mapped by every process, but a page only
# one process has touched counts as its "private" (USS) memory, so a backend that read 20 MiB of
# tables showed 20 MiB more USS and the checkpointer grew by what it wrote.
SHARED_SEGMENTS = ("/dev/zero", "/SYSV", "/dev/shm/")


def private_memory(proc) -> int:
    """Bytes of a PostgreSQL process's own memory (heap, stacks, its code's data), without the
    pages of the shared segments it touched."""
    return sum(m.private_clean + m.private_dirty for m in proc.memory_maps(grouped=True)
               if not m.path.startswith(SHARED_SEGMENTS))


NOT_JUDGED = {
    "postgres server": "RSS counts the shared buffers it touched; judged by its private memory",
    "postgres backends": "RSS counts the shared buffers each backend touched",
    "postgres backends private": "backends are replaced within CONN_MAX_AGE, 60 s, autovacuum workers end with their "
                             "table: nothing accumulates, the sum swings with how many live; judged by their number",
}


def groups(gunicorn, workers: list[Worker], beat, pg_port: int, redis_proc) -> dict[str, list]:
    """Process group name -> psutil processes, looked up afresh at each sample."""
    out: dict[str, list] = {}
    with contextlib.suppress(psutil.NoSuchProcess):
        master = psutil.Process(gunicorn.pid)
        out["gunicorn master"] = [master]
        out["gunicorn workers"] = master.children()
    for worker, label in zip(workers, ("celery", "therapy")):
        with contextlib.suppress(psutil.NoSuchProcess):
            main = psutil.Process(worker.process.pid)
            out[f"{label} worker main"] = [main]
            out[f"{label} pool children"] = main.children(recursive=True)
    out["celery beat"] = process_tree(beat.pid)
    server, backends = [], []
    for proc in postgres_processes(pg_port):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            title = (proc.cmdline() or [""])[0]
            (backends if title.startswith(CLIENT_BACKEND) or "worker" in title else server).append(proc)
    out["postgres server"] = server
    out["postgres backends"] = backends
    out["redis"] = process_tree(redis_proc.pid)
    return out


QUEUE_LOOK_FROM = 200  # messages in the celery queue from which the sampler says which tasks wait
QUEUE_LOOK = 1000  # messages read from the head of the queue to name its tasks


def queued_tasks(rds, queue: str) -> dict[str, int]:
    """Task name -> count among the first QUEUE_LOOK messages of a celery queue in Redis."""
    import collections
    import json

    return dict(collections.Counter(json.loads(raw)["headers"]["task"] for raw in rds.lrange(queue, 0, QUEUE_LOOK - 1))
                .most_common())


class Sampler(threading.Thread):
    def __init__(self, lookup, database_url: str, redis_url: str, *, crisis: list[int], interval_s: int) -> None:
        super().__init__(daemon=True)
        self.lookup, self.database_url, self.redis_url = lookup, database_url, redis_url
        self.crisis, self.interval_s = crisis, interval_s
        self.samples: list[dict] = []
        self.stopping = threading.Event()
        self.t0 = time.monotonic()
        self.error = None
        self.own_backend: int | None = None  # the sampler's PostgreSQL backend: the bench's, not the system's
        self.since = None  # the database's time at the previous sample

    def sample(self, db, rds) -> dict:
        row = {"t": time.monotonic() - self.t0}
        for name, procs in self.lookup().items():
            rss = private = 0
            procs = [proc for proc in procs if proc.pid != self.own_backend]
            for proc in procs:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    if name.startswith("postgres"):
                        rss, private = rss + proc.memory_info().rss, private + private_memory(proc)
                    else:
                        rss += proc.memory_info().rss
            row[name] = rss / 2**20
            if name.startswith("postgres"):
                row[f"{name} private"] = private / 2**20
            row[f"n {name}"] = len(procs)
        row["waiting"] = db.execute("SELECT count(*) FROM monitoring_signalwindow WHERE status = 'received'").fetchone()[0]
        row["queue"], row["therapy queue"] = rds.llen("celery"), rds.llen("therapy")
        # What a backlog is made of (the first QUEUE_LOOK messages): the 2026-12-05 one was the sweep's
        # re-sent estimates, which the queue's length alone did not say.
        row["queued tasks"] = queued_tasks(rds, "celery") if row["queue"] > QUEUE_LOOK_FROM else {}
        row["overdue"], row["overdue_min"], row["overdue_late"] = db.execute(
            EVALUATIONS_OVERDUE_SQL, {"interval": self.interval_s, "grace": OVERDUE_GRACE_S}).fetchone()
        now = db.execute("SELECT now()").fetchone()[0]
        # Patients evaluated since the last sample (one evaluated twice in between counts once).
        row["evaluated"] = db.execute("SELECT count(*) FROM therapy_latestevaluation WHERE evaluated_at > %s AND "
                                      "evaluated_at <= %s", [self.since or now, now]).fetchone()[0]
        self.since = now
        row["alerts"] = db.execute("SELECT count(*) FROM therapy_alert WHERE cause = 'crisis'").fetchone()[0]
        row["unalerted"], row["unalerted_s"] = db.execute(CRISIS_UNALERTED_SQL, {"crisis": self.crisis}).fetchone()
        return row

    def run(self) -> None:
        import psycopg
        import redis

        try:
            rds = redis.Redis.from_url(self.redis_url)
            with psycopg.connect(self.database_url, autocommit=True) as db:
                self.own_backend = db.info.backend_pid
                while True:
                    row = self.sample(db, rds)
                    self.samples.append(row)
                    print(f"  t={row['t']:5.0f} s  RSS MiB: " + ", ".join(
                        f"{k} {v:.0f}" for k, v in row.items() if k not in NOT_MEMORY and not k.startswith("n "))
                        + f" | windows waiting {row['waiting']}, queues celery {row['queue']} therapy "
                        f"{row['therapy queue']} | evaluations: {row['evaluated']} patients since the last sample, "
                        f"{row['overdue']} overdue (oldest {row['overdue_min']:.1f} min, {row['overdue_late']} by over "
                        f"{OVERDUE_GRACE_S:.0f} s) | crisis alerts {row['alerts']}, {row['unalerted']} confirmed not "
                        f"yet alerted (oldest {row['unalerted_s']:.0f} s)"
                        + (f" | queued: {row['queued tasks']}" if row["queued tasks"] else ""), flush=True)
                    if self.stopping.wait(SAMPLE_EVERY_S):
                        self.samples.append(self.sample(db, rds))
                        return
        except Exception as exc:  # noqa: BLE001
            self.error = exc


def trend(samples: list[dict], name: str) -> tuple[float, float]:
    """Least-squares line of `name` (MiB) over time (s): its value at the first and at the last
    sample's time."""
    ts = [s["t"] for s in samples]
    ys = [s[name] for s in samples]
    n = len(ts)
    mean_t, mean_y = sum(ts) / n, sum(ys) / n
    spread = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (y - mean_y) for t, y in zip(ts, ys)) / spread if spread else 0.0
    return mean_y + slope * (ts[0] - mean_t), mean_y + slope * (ts[-1] - mean_t)


def main(argv=None) -> int:
    import psycopg

    args = parse_args(argv)
    stop_on_signals()
    total = args.warmup + args.duration
    per_upload = args.windows_per_upload
    single = per_upload == 1
    schedule, shape = cadence_schedule(devices=args.patients, rate=args.rate, per_upload=per_upload, duration=total)
    interval_s = args.evaluation_interval or PRODUCT_EVALUATION_INTERVAL_S
    print(f"bench/soak: {args.patients} patients with plans ({args.crisis_share:.0%} crisis-level), {args.rate:.1f} "
          f"windows/s offered for {args.warmup:.0f} s of warm-up + {args.duration:.0f} s: each device records a window "
          f"every {shape['interval']:.1f} s and uploads {per_upload} at a time every {shape['cycle']:.0f} s -> "
          f"{shape['requests_per_s']:.1f} requests/s ({'single uploads' if single else 'batch API'}; {len(schedule)} "
          f"requests in all); daily evaluations every {interval_s} s; gunicorn sync -w {args.gunicorn_workers}, "
          f"{workers_shape(args)}, celery beat; {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
          f"load average {load_average()}", flush=True)
    if -shape["earliest"] > 29 * 86400:
        raise SystemExit("windows would be stamped more than 29 days back (the 30-day limit): raise --patients or lower --rate")
    source = WindowSource.load()
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-soak-"))
    redis_proc = gunicorn = beat = sampler = None
    workers: list[Worker] = []
    verdicts = []
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            extra = {"THERAPY_EVALUATION_INTERVAL_S": str(args.evaluation_interval)} if args.evaluation_interval else {}
            env = production_env(database_url=database_url, redis_port=redis_port, work=work, **extra)
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="manage.py migrate")
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            t0 = time.monotonic()
            # No window is stamped earlier than the schedule's earliest offset from the start (later
            # than now): an hour before it, no benchmark window re-pairs a calibration.
            clinic = clinic_create(env=env, tag="soak", patients=args.patients, plan=True, how="bulk",
                                   calibrated_at=now + dt.timedelta(seconds=shape["earliest"]) - dt.timedelta(hours=1),
                                   crisis_share=args.crisis_share, evaluated_spread_s=interval_s)
            print(f"bench/soak: seeded {len(clinic.patients)} patients with plans, wearables, API keys and calibrations "
                  f"({len(clinic.crisis)} crisis-level) and their latest evaluations in {time.monotonic() - t0:.0f} s "
                  f"({clinic.timings}; model {clinic.model})", flush=True)
            port = free_port()
            gunicorn = start_gunicorn(env=env, port=port, workers=args.gunicorn_workers, worker_class="sync", threads=1,
                                      log_path=work / "gunicorn.log")
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_healthy(url, gunicorn))
            workers = workers_start(env=env, name="soak", args=args, log_dir=work)
            with open(work / "beat.log", "ab") as log:
                beat = subprocess.Popen([PYTHON, "-m", "celery", "-A", "clinops", "beat", "--loglevel", CELERY_LOG_LEVEL,
                                         "--schedule", str(work / "celerybeat-schedule")], cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, preexec_fn=die_with_parent, process_group=0)
            time.sleep(3.0)
            pg_port = pg_port_of(database_url)
            sampler = Sampler(lambda: groups(gunicorn, workers, beat, pg_port, redis_proc), database_url, env["REDIS_URL"],
                              crisis=clinic.crisis, interval_s=interval_s)
            meter = CpuMeter({"gunicorn": lambda: process_tree(gunicorn.pid), "worker": workers[0].processes,
                              "therapy": lambda: [p for w in workers[1:] for p in w.processes()],
                              "beat": lambda: process_tree(beat.pid), "postgres": lambda: postgres_processes(pg_port),
                              "redis": lambda: process_tree(redis_proc.pid)})
            load0 = load_average()
            sampler.start()
            meter.start()
            offered = asyncio.run(offer(url=url, keys=clinic.keys, bodies=Bodies(source), schedule=schedule,
                                        single=single, max_in_flight=args.max_in_flight))
            cpu = meter.stop()
            sampler.stopping.set()
            sampler.join(timeout=60)
            ids = list(offered["sent_at"])
            with psycopg.connect(database_url, autocommit=True) as db:
                drain_until = time.monotonic() + 120
                while time.monotonic() < drain_until:
                    waiting = db.execute("SELECT count(*) FROM monitoring_signalwindow WHERE id = ANY(%s) AND "
                                         "status = 'received'", [ids]).fetchone()[0]
                    confirmed, alerts = crisis_confirmations(db, clinic.crisis)
                    if waiting == 0 and set(confirmed) <= set(alerts):
                        break
                    time.sleep(1)
                rows = db.execute("SELECT window_id, created_at FROM monitoring_bpestimate WHERE window_id = ANY(%s) "
                                  "AND NOT shadow", [ids]).fetchall()
                processed = db.execute("SELECT count(*) FILTER (WHERE status = 'processed'), count(*) FILTER (WHERE "
                                       "status = 'rejected'), count(*) FILTER (WHERE status = 'failed') FROM "
                                       "monitoring_signalwindow WHERE id = ANY(%s)", [ids]).fetchone()
                unestimated = db.execute("SELECT count(*) FROM monitoring_signalwindow w WHERE w.id = ANY(%s) AND "
                                         "w.status = 'processed' AND NOT EXISTS (SELECT 1 FROM monitoring_bpestimate e "
                                         "WHERE e.window_id = w.id AND NOT e.shadow)", [ids]).fetchone()[0]
    except KeyboardInterrupt:
        print("bench/soak: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        if sampler is not None:
            sampler.stopping.set()
        for worker in workers:
            worker.stop()
        stop(beat)
        stop(gunicorn)
        stop(redis_proc)
        if args.keep:
            print(f"bench/soak: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    accepted = offered["windows"]["accepted"]
    bad = {k: v for k, v in offered["statuses"].items() if k not in (200, 202)}
    measured_from = offered["started_wall"] + args.warmup
    latency = [created_at.timestamp() - offered["sent_at"][window_id] for window_id, created_at in rows]
    latency_measured = [created_at.timestamp() - offered["sent_at"][window_id] for window_id, created_at in rows
                        if offered["sent_at"][window_id] >= measured_from]
    lat = [v * 1000 for v in offered["latencies"]]
    print(f"RESULT soak: {args.patients} patients, offered {args.rate:.1f} windows/s for {total:.0f} s -> "
          f"{accepted / offered['elapsed']:.1f} accepted windows/s, {offered['requests'] / offered['elapsed']:.1f} "
          f"requests/s of {per_upload} window{'s' if per_upload > 1 else ''} ({accepted} windows; errors: "
          f"{', '.join(f'{k}x{v}' for k, v in bad.items()) or 'none'}; request latency p50 {percentile(lat, .5):.0f} ms, "
          f"p99 {percentile(lat, .99):.0f} ms; schedule slipped at most {offered['lag']:.2f} s); processed "
          f"{processed[0]} usable + {processed[1]} rejected + {processed[2]} failed, {waiting} still waiting and "
          f"{unestimated} usable without an estimate after the drain")
    print(f"  upload -> estimate: over the soak {dist(latency)}; measured part ({len(latency_measured)} estimates) "
          f"{dist(latency_measured)}")
    to_alert, upload_to_alert = [], []
    for patient_id, (window_id, created_at) in confirmed.items():
        if patient_id in alerts:
            to_alert.append((alerts[patient_id] - created_at).total_seconds())
            if window_id in offered["sent_at"]:
                upload_to_alert.append(alerts[patient_id].timestamp() - offered["sent_at"][window_id])
    unalerted = sorted(set(confirmed) - set(alerts))
    print(f"  crisis estimate -> urgent alert ({len(clinic.crisis)} crisis patients, {len(confirmed)} confirmed by two "
          f"crisis-level estimates during the soak, {len(alerts)} alerted): from the confirming estimate's storing "
          f"{dist(to_alert)}; from its window's upload {dist(upload_to_alert)}; confirmed but not alerted {len(unalerted)}")
    per = {k: cpu[k] * offered["elapsed"] * 1000 / max(1, accepted)
           for k in ("gunicorn", "worker", "therapy", "beat", "postgres", "redis")}
    print("  CPU per window: " + ", ".join(f"{k} {v:.2f} ms" for k, v in per.items()) + f" = {sum(per.values()):.2f} ms; "
          f"cores busy: gunicorn {cpu['gunicorn']:.2f}, worker {cpu['worker']:.2f}, therapy {cpu['therapy']:.2f}, "
          f"postgres {cpu['postgres']:.2f}; whole machine {cpu.get('machine', float('nan')):.2f} of 2 cores busy | load "
          f"average {load0} -> {load_average()}")
    samples = sampler.samples if sampler else []
    start = args.warmup
    minute = min(60.0, args.duration / 3)  # the first and last measured "minute" of a short run
    warm = [s for s in samples if s["t"] < minute]
    measured = [s for s in samples if s["t"] >= start]
    first = [s for s in measured if s["t"] < start + minute]
    last = [s for s in measured if s["t"] >= samples[-1]["t"] - minute] if samples else []
    names = [k for k in (samples[0] if samples else {}) if k not in NOT_MEMORY and not k.startswith("n ")]
    evaluated = sum(s["evaluated"] for s in measured[1:])  # each counts the 10 s before it
    span = measured[-1]["t"] - measured[0]["t"] if len(measured) > 1 else 0.0
    late = max((s["overdue_late"] for s in measured), default=0)
    print(f"  daily evaluations (every {interval_s} s per patient; the due sweep every minute): {evaluated} patients "
          f"evaluated in the measured {span:.0f} s (their due share: {args.patients * span / interval_s:.0f}; plus the "
          f"crisis patients' urgent ones); overdue at each sample: "
          f"{[s['overdue'] for s in measured]}; oldest overdue at most {max((s['overdue_min'] for s in measured), default=0):.1f} "
          f"min; overdue by over {OVERDUE_GRACE_S:.0f} s at most {late} (target 0)")
    print(f"Memory over the {args.duration:.0f} s after the {args.warmup:.0f}-s warm-up ({len(measured)} samples), limit "
          f"+{GROWTH_LIMIT:.0%} on the trend: the least-squares line through every sample, its value at the end vs at "
          f"the start (a leak is a trend; PostgreSQL's backends are replaced every CONN_MAX_AGE seconds and their "
          f"private memory swings within a minute, which two minute-means would compare). Beside it: the mean of the "
          f"first measured {minute:.0f} s ({len(first)}) vs the last ({len(last)}), and in brackets from the very first "
          f"{minute:.0f} s, warm-up included:")
    for name in names:
        a = sum(s[name] for s in first) / len(first)
        b = sum(s[name] for s in last) / len(last)
        w = sum(s[name] for s in warm) / len(warm)
        fit_start, fit_end = trend(measured, name)
        growth = (fit_end - fit_start) / fit_start if fit_start else float("inf")
        verdict = "PASS" if growth <= GROWTH_LIMIT else "FAIL"
        note = NOT_JUDGED.get(name)
        if note:
            verdict = "info"
        else:
            verdicts.append(verdict == "PASS")
        count = samples[-1].get(f"n {name}", "")
        print(f"  {name:26s} trend {fit_start:8.1f} -> {fit_end:8.1f} MiB {growth:+7.1%}  {verdict:4s}  | means "
              f"{a:.1f} -> {b:.1f} ({(b - a) / a:+.1%})  [{w:.1f} -> {b:.1f}: {(b - w) / w:+.1%}]"
              + (f"  ({count} processes)" if count not in ("", 1) else "") + (f"  ({note})" if note else ""))
    # The backends' number is what could leak (connections not given back).
    first_most = max(s["n postgres backends"] for s in first)
    last_most = max(s["n postgres backends"] for s in last)
    verdicts.append(last_most <= first_most + BACKEND_COUNT_SLACK)
    print(f"  {'postgres backends':26s} at most {first_most} in the first measured {minute:.0f} s, {last_most} in the "
          f"last (limit +{BACKEND_COUNT_SLACK}, autovacuum workers): "
          f"{'PASS' if last_most <= first_most + BACKEND_COUNT_SLACK else 'FAIL'}"
          f"  | at most {max(s['n postgres backends'] for s in measured)} at a sample")
    if sampler and sampler.error:
        print(f"  sampler error: {sampler.error!r}")
        verdicts.append(False)
    memory_ok = bool(verdicts) and all(verdicts)
    p95 = percentile(latency_measured, .95) if latency_measured else float("inf")
    p95_alert = percentile(to_alert, .95) if to_alert else float("nan")
    lost = bool(bad) or waiting > 0 or unestimated > 0 or processed[2] > 0
    print(f"Target: upload -> estimate p95 <= {TARGET_P95_S:.0f} s over the measured part -> "
          f"{'MET' if p95 <= TARGET_P95_S else 'NOT MET'} ({p95:.2f} s)")
    print(f"Target: crisis estimate -> urgent alert p95 <= {TARGET_ALERT_P95_S:.0f} s, every confirmed crisis alerted -> "
          f"{'MET' if (not to_alert or p95_alert <= TARGET_ALERT_P95_S) and not unalerted else 'NOT MET'} "
          f"({p95_alert:.2f} s over {len(to_alert)} alerts, {len(unalerted)} not alerted)")
    print(f"Target: daily evaluations keeping up (none overdue by over {OVERDUE_GRACE_S:.0f} s at a measured sample) -> "
          f"{'MET' if late == 0 else 'NOT MET'} ({late})")
    print(f"Target: no process group's memory grows more than {GROWTH_LIMIT:.0%} -> {'PASS' if memory_ok else 'FAIL'}")
    print(f"Target: nothing lost (no error answer, every accepted window processed and every usable one estimated, none "
          f"failed) -> {'MET' if not lost else 'NOT MET'}")
    print(f"bench/soak: load average at the end {load_average()}")
    ok = memory_ok and not lost and not unalerted and late == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
