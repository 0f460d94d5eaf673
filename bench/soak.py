"""Soak: the whole server shape under a fixed upload rate for --duration seconds (default 600,
after a --warmup of 300 s at the same rate), with the memory of every process sampled every
10 s; each process group's growth over the measured part must stay within 10 %. Growth is the
trend: the least-squares line through every measured sample, its value at the end against its
value at the start (the means of the first and last measured minute, and the growth from the very
first minute, warm-up included, are printed beside it). A leak is a trend, and two minute-means
compare noise. PostgreSQL is judged by the private memory of the processes that live for the
whole soak (postmaster, checkpointer, writers, launchers), without the shared buffers they touched
(psutil's USS counts a shared page only one process touched as its own: a backend that read
20 MiB of tables showed 20 MiB more), and by the number of client backends: a backend is replaced
every CONN_MAX_AGE (60 s) and an autovacuum worker ends with its table, so nothing accumulates in
them, while their summed memory swings with how many are alive at a sample (its USS trend read
-16 % and +20 % in two identical runs). The warm-up is 5 min because that
is how long the gunicorn workers take to reach their working set under this load: in two runs
with a 2-min warm-up (2026-12-01) they rose by ~16 MiB each between minutes 4 and 5 and then
stayed flat for the 7 min to the end (+7.7 % and +10.2 % measured from minute 2), while the
Python objects they hold stayed flat (tracemalloc).

Starts a private Redis and a throwaway PostgreSQL, migrates, creates a clinic of calibrated
patients with therapy plans (bench/_lib), and runs gunicorn (production settings, sync -w 3), two
`celery -A clinops worker`s as compose.yaml does (-Q celery prefork --concurrency 2 for the windows,
-Q therapy --concurrency 1 at nice 10 for the evaluations) and `celery -A clinops beat` (the sweepers,
heartbeats and monitoring reports on their real schedule). Uploads real 30-s windows open loop
at --rate windows/s in batches (bench/pipeline.py's load generator). Every 10 s it records the
RSS of each process - gunicorn master and workers, each celery worker's main process and pool
children, beat, the PostgreSQL server processes and its client backends (each summed; also their
private memory without the shared buffers, which a backend's RSS counts), Redis - and the
pipeline's backlog.

    .venv/bin/python bench/soak.py                       # 300 s warm-up + 600 s at 250 windows/s
    .venv/bin/python bench/soak.py --warmup 120          # the 2-min warm-up of the earlier runs
    .venv/bin/python bench/soak.py --duration 120 --rate 200

Prints the samples, then per process group the trend of its RSS with PASS/FAIL against 10 % and
the minute means, the upload->estimate latency over the soak, how long estimates waited for their
routing decision (sampled: the oldest estimate of any patient not evaluated since), CPU per
window, and the load average. Exit status 0 when every group passes and every accepted window was processed.
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

from _lib import stop_on_signals  # noqa: E402
from _lib import (PYTHON, ROOT, CpuMeter, WindowSource, Worker, add_worker_arguments, clinic_create,  # noqa: E402
                  die_with_parent, free_port, load_average, percentile, pg_port_of, postgres_processes,
                  process_tree, production_env, run_checked, start_gunicorn, start_redis, stop, temporary_postgres,
                  wait_healthy, workers_shape, workers_start)
from pipeline import DEFAULT_RATE, Bodies, offer  # noqa: E402

GROWTH_LIMIT = 0.10
SAMPLE_EVERY_S = 10.0
NOT_MEMORY = ("t", "waiting", "queue", "undecided", "undecided_s")
# A client backend's title ("postgres: <user> <database> <host>(<port>) <state>"): the
# production settings' user. With the autovacuum and parallel workers ("... worker") they come and
# go; the other PostgreSQL processes (postmaster, checkpointer, writers, the launchers) live for
# the whole soak.
CLIENT_BACKEND = "postgres: clinops "
# Autovacuum workers (autovacuum_max_workers, 3 by default) may run beside the backends at any
# sample; a connection leak would grow past that without bound.
BACKEND_COUNT_SLACK = 3
# The pipeline report's evaluation figure (monitoring.reports._evaluation_waiting) in SQL, as the
# sampler has no Django: patients under a plan with live estimates newer than their latest
# evaluation, and the age in seconds of the oldest such estimate (the decision still to come).
EVALUATION_WAITING_SQL = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(oldest)), 0)::float FROM (
  SELECT (SELECT min(e.created_at) FROM monitoring_bpestimate e
          WHERE e.patient_id = p.id AND NOT e.shadow
            AND e.created_at > coalesce(le.evaluated_at, '-infinity')) AS oldest
  FROM patients_patient p LEFT JOIN therapy_latestevaluation le ON le.patient_id = p.id
  WHERE EXISTS (SELECT 1 FROM therapy_planversion v WHERE v.patient_id = p.id)
) waiting WHERE oldest IS NOT NULL
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rate", type=float, default=DEFAULT_RATE, help="windows/s offered (open loop)")
    p.add_argument("--batch", type=int, default=20, help="windows per request (batch API); 0 = single uploads")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of uploads that are measured")
    p.add_argument("--warmup", type=float, default=300.0,
                   help="seconds of uploads at the same rate before the measured part (lazy imports, caches, "
                        "connection pools and heaps reaching their working set are not a leak); 0 = none")
    p.add_argument("--patients", type=int, default=200)
    add_worker_arguments(p)
    p.add_argument("--gunicorn-workers", type=int, default=3)
    p.add_argument("--max-in-flight", type=int, default=32)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    if args.duration < 2 * 60 or args.rate <= 0 or args.warmup < 0:
        p.error("--duration must be at least 120 s (first and last minute), --rate positive, --warmup not negative")
    return args


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


class Sampler(threading.Thread):
    def __init__(self, lookup, database_url: str, redis_url: str) -> None:
        super().__init__(daemon=True)
        self.lookup, self.database_url, self.redis_url = lookup, database_url, redis_url
        self.samples: list[dict] = []
        self.stopping = threading.Event()
        self.t0 = time.monotonic()
        self.error = None
        self.own_backend: int | None = None  # the sampler's PostgreSQL backend: the bench's, not the system's

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
        row["queue"] = rds.llen("celery")
        row["undecided"], row["undecided_s"] = db.execute(EVALUATION_WAITING_SQL).fetchone()
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
                        + f" | windows waiting {row['waiting']}, queue {row['queue']} | {row['undecided']} patients "
                        f"wait for an evaluation, oldest estimate {row['undecided_s']:.0f} s", flush=True)
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
    print(f"bench/soak: {args.rate:.0f} windows/s offered for {args.warmup:.0f} s of warm-up + {args.duration:.0f} s "
          f"({'batches of ' + str(args.batch) if args.batch else 'single uploads'}), {args.patients} patients; "
          f"gunicorn sync -w {args.gunicorn_workers}, {workers_shape(args)}, celery beat; "
          f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; load average {load_average()}", flush=True)
    source = WindowSource.load()
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-soak-"))
    redis_proc = gunicorn = beat = sampler = None
    workers: list[Worker] = []
    verdicts = []
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            env = production_env(database_url=database_url, redis_port=redis_port, work=work)
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="manage.py migrate")
            per_device = int(args.rate * (args.warmup + args.duration) / args.patients) + max(1, args.batch) + 1
            now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
            first_at = now - dt.timedelta(seconds=30 * per_device + 600)
            if now - first_at > dt.timedelta(days=29):
                raise SystemExit("too many windows per patient for the 30-day limit: raise --patients")
            t0 = time.monotonic()
            clinic = clinic_create(env=env, tag="soak", patients=args.patients, plan=True,
                                   calibrated_at=first_at - dt.timedelta(hours=1))
            print(f"bench/soak: {len(clinic.patients)} patients with plans and calibrations ({time.monotonic() - t0:.0f} s, "
                  f"model {clinic.model})", flush=True)
            port = free_port()
            gunicorn = start_gunicorn(env=env, port=port, workers=args.gunicorn_workers, worker_class="sync", threads=1,
                                      log_path=work / "gunicorn.log")
            url = f"http://127.0.0.1:{port}"
            asyncio.run(wait_healthy(url, gunicorn))
            workers = workers_start(env=env, name="soak", args=args, log_dir=work)
            with open(work / "beat.log", "ab") as log:
                beat = subprocess.Popen([PYTHON, "-m", "celery", "-A", "clinops", "beat", "--loglevel", "WARNING",
                                         "--schedule", str(work / "celerybeat-schedule")], cwd=ROOT, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, preexec_fn=die_with_parent, process_group=0)
            time.sleep(3.0)
            pg_port = pg_port_of(database_url)
            sampler = Sampler(lambda: groups(gunicorn, workers, beat, pg_port, redis_proc), database_url, env["REDIS_URL"])
            meter = CpuMeter({"gunicorn": lambda: process_tree(gunicorn.pid), "worker": workers[0].processes,
                              "therapy": lambda: [p for w in workers[1:] for p in w.processes()],
                              "beat": lambda: process_tree(beat.pid), "postgres": lambda: postgres_processes(pg_port),
                              "redis": lambda: process_tree(redis_proc.pid)})
            load0 = load_average()
            sampler.start()
            meter.start()
            offered = asyncio.run(offer(url=url, keys=clinic.keys, bodies=Bodies(source, first_at), rate=args.rate,
                                        batch=args.batch, duration=args.warmup + args.duration,
                                        max_in_flight=args.max_in_flight))
            cpu = meter.stop()
            sampler.stopping.set()
            sampler.join(timeout=30)
            ids = list(offered["sent_at"])
            with psycopg.connect(database_url, autocommit=True) as db:
                drain_until = time.monotonic() + 120
                while time.monotonic() < drain_until:
                    waiting = db.execute("SELECT count(*) FROM monitoring_signalwindow WHERE id = ANY(%s) AND "
                                         "status = 'received'", [ids]).fetchone()[0]
                    if waiting == 0:
                        break
                    time.sleep(1)
                rows = db.execute("SELECT window_id, created_at FROM monitoring_bpestimate WHERE window_id = ANY(%s) "
                                  "AND NOT shadow", [ids]).fetchall()
                processed = db.execute("SELECT count(*) FILTER (WHERE status = 'processed'), count(*) FILTER (WHERE "
                                       "status = 'rejected'), count(*) FILTER (WHERE status = 'failed') FROM "
                                       "monitoring_signalwindow WHERE id = ANY(%s)", [ids]).fetchone()
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
    latency = [created_at.timestamp() - offered["sent_at"][window_id] for window_id, created_at in rows]
    print(f"RESULT soak: offered {args.rate:.0f} windows/s for {args.warmup + args.duration:.0f} s -> {accepted / offered['elapsed']:.1f} "
          f"accepted windows/s ({accepted} windows; errors: {', '.join(f'{k}x{v}' for k, v in bad.items()) or 'none'}; "
          f"schedule slipped at most {offered['lag']:.2f} s); processed {processed[0]} usable + {processed[1]} rejected "
          f"+ {processed[2]} failed, {waiting} still waiting 120 s after the last upload; upload -> estimate p50 "
          f"{percentile(latency, .5):.2f} s, p95 {percentile(latency, .95):.2f} s, max {max(latency, default=float('nan')):.2f} s")
    per = {k: cpu[k] * offered["elapsed"] * 1000 / max(1, accepted)
           for k in ("gunicorn", "worker", "therapy", "beat", "postgres", "redis")}
    print("  CPU per window: " + ", ".join(f"{k} {v:.2f} ms" for k, v in per.items()) + f" = {sum(per.values()):.2f} ms; "
          f"whole machine {cpu.get('machine', float('nan')):.2f} of 2 cores busy | load average {load0} -> {load_average()}")
    samples = sampler.samples if sampler else []
    start = args.warmup
    warm = [s for s in samples if s["t"] < 60]
    first = [s for s in samples if start <= s["t"] < start + 60]
    last = [s for s in samples if s["t"] >= samples[-1]["t"] - 60] if samples else []
    names = [k for k in (samples[0] if samples else {}) if k not in NOT_MEMORY and not k.startswith("n ")]
    measured = [s for s in samples if s["t"] >= start]
    undecided = [s["undecided_s"] for s in measured]
    print(f"  estimate -> routing decision, sampled every {SAMPLE_EVERY_S:.0f} s after the warm-up (the oldest estimate "
          f"of any patient not yet evaluated; the debounce, THERAPY_EVALUATION_DEBOUNCE_S, is 60 s): p50 {percentile(undecided, .5):.0f} s, "
          f"p95 {percentile(undecided, .95):.0f} s, max {max(undecided, default=float('nan')):.0f} s; patients waiting at "
          f"most {max((s['undecided'] for s in measured), default=0)} of {args.patients}")
    print(f"Memory over the {args.duration:.0f} s after the {args.warmup:.0f}-s warm-up ({len(measured)} samples), limit "
          f"+{GROWTH_LIMIT:.0%} on the trend: the least-squares line through every sample, its value at the end vs at "
          f"the start (a leak is a trend; PostgreSQL's backends are replaced every CONN_MAX_AGE seconds and their "
          f"private memory swings within a minute, which two minute-means would compare). Beside it: the mean of the "
          f"first measured minute ({len(first)}) vs the last ({len(last)}), and in brackets from the very first "
          f"minute, warm-up included:")
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
        print(f"  {name:26s} trend {fit_start:8.1f} -> {fit_end:8.1f} MiB {growth:+7.1%}  {verdict:4s}  | minute means "
              f"{a:.1f} -> {b:.1f} ({(b - a) / a:+.1%})  [{w:.1f} -> {b:.1f}: {(b - w) / w:+.1%}]"
              + (f"  ({count} processes)" if count not in ("", 1) else "") + (f"  ({note})" if note else ""))
    # The backends' number is what could leak (connections not given back).
    first_most = max(s["n postgres backends"] for s in first)
    last_most = max(s["n postgres backends"] for s in last)
    verdicts.append(last_most <= first_most + BACKEND_COUNT_SLACK)
    print(f"  {'postgres backends':26s} at most {first_most} in the first measured minute, {last_most} in the last "
          f"(limit +{BACKEND_COUNT_SLACK}, autovacuum workers): {'PASS' if last_most <= first_most + BACKEND_COUNT_SLACK else 'FAIL'}"
          f"  | at most {max(s['n postgres backends'] for s in measured)} at a sample")
    if sampler and sampler.error:
        print(f"  sampler error: {sampler.error!r}")
        verdicts.append(False)
    ok = bool(verdicts) and all(verdicts) and not bad and waiting == 0
    print(f"Target: no process group's memory grows more than {GROWTH_LIMIT:.0%} -> {'PASS' if all(verdicts) and verdicts else 'FAIL'}")
    print(f"bench/soak: load average at the end {load_average()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
