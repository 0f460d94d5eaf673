"""Benchmark: processed windows/s of real `celery -A clinops worker` processes, database writes
included, for 1 and 2 worker processes; and how many patients that serves.

Starts a private Redis and a throwaway PostgreSQL, migrates, and per run creates a clinic of
calibrated patients (bench/_lib) and stores K real 30-s windows for them through the service the
API uses (monitoring.ingest.intake.windows_receive: stored, one process_window task each queued in
Redis) with no worker running. Then a prefork worker with --concurrency C boots on an empty queue
of its own (its start-up CPU is not counted), is told to consume the real queue, and the clock
runs until every window is processed and every usable one has its live BP estimate stored. Each
window's task runs the quality gate and beat features, writes the analysis, estimates BP against
the patient's calibration with the active model (the carry-forward baseline, as in the product)
and writes the estimate — the whole per-window work of the pipeline. The patients' therapy
evaluation does not follow each window: it runs once a day per patient and on events (a cuff
reading, a symptom report, a plan change; a crisis- or low-level estimate), measured by
bench/evaluation.py and added to the capacity arithmetic as its share per window
(--evaluation-ms x --evaluations-per-day / 288 windows a day).

    .venv/bin/python bench/worker_throughput.py                      # K = 2000, concurrency 1 then 2
    .venv/bin/python bench/worker_throughput.py --windows 1000 --concurrency 1,2,3

Per run: windows/s (from the database's own timestamps, first analysis to last write, and the
wall clock), CPU milliseconds per window of the worker processes, PostgreSQL and Redis (robust to
other load on the machine), the machine's load average; then the 1 -> 2 scaling and the capacity
arithmetic (one window per patient every 5 min) for one 2-core machine and for N machines on one
PostgreSQL + Redis. Exit status 0; 1 if a run did not settle within --timeout or left failures.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib import (  # noqa: E402
    PYTHON,
    CpuMeter,
    Worker,
    clinic_create,
    free_port,
    load_average,
    pg_port_of,
    postgres_processes,
    process_tree,
    production_env,
    run_checked,
    start_redis,
    stop,
    stop_on_signals,
    temporary_postgres,
)

WINDOW_EVERY_S = 300  # each patient's wearable sends one 30-s window every 5 minutes
# Measured 2026-12-01 14:30-14:40 UTC, after raw windows stopped being deflated, workers kept their
# PostgreSQL session and CpuMeter counted exited backends (the machine ran ~25 % slower than on
# 2026-11-23: bench/signals.py 1.76 vs 1.39 ms per window).
DEFAULT_INGEST_MS = {"web": 0.88, "postgres": 0.34, "redis": 0.002}  # bench/ingest.py --batch 100 --concurrency 4
DEFAULT_EVALUATION_MS = {"worker": 49.15, "postgres": 12.72}  # bench/evaluation.py, 2026-12-05 11:31 UTC (7-day look-back, a step up proposed)

PRELOAD_SCRIPT = r"""
import datetime as dt, json, sys
import django
django.setup()
sys.path.insert(0, "bench")
from _lib import WindowSource
from monitoring.ingest import intake
from monitoring.ingest.serializers import WindowInput
from patients.models import Device

patients, each, first_at = json.loads(sys.argv[1]), int(sys.argv[2]), dt.datetime.fromisoformat(sys.argv[3])
source = WindowSource.load()
ids, k = [], 0
for patient_id in patients:
    device = Device.objects.select_related("patient").get(patient_id=patient_id)
    uploads = []
    for j in range(each):
        body = WindowInput(data=source.payload(k, sequence=1 + j, recorded_at=first_at + dt.timedelta(seconds=300 * j)),
                           context={"device": device})
        body.is_valid(raise_exception=True)
        v = body.validated_data
        uploads.append(intake.WindowUpload(sequence=v["sequence"], recorded_at=v["recorded_at"], duration_s=v["duration_s"],
                                             encoding=v["encoding"], channels=v["channels"]))
        k += 1
    for start in range(0, len(uploads), 100):  # as the batch API stores them
        ids += [w.pk for w, created in intake.windows_receive(device=device, uploads=uploads[start:start + 100]) if created]
print("IDS=" + json.dumps(ids))
"""

PROGRESS_SQL = """
SELECT count(*) FILTER (WHERE w.status = 'received'),
       count(*) FILTER (WHERE w.status = 'processed'),
       count(*) FILTER (WHERE w.status = 'rejected'),
       count(*) FILTER (WHERE w.status = 'failed'),
       (SELECT count(DISTINCT e.window_id) FROM monitoring_bpestimate e WHERE e.window_id = ANY(%(ids)s) AND NOT e.shadow)
FROM monitoring_signalwindow w WHERE w.id = ANY(%(ids)s)
"""
SPAN_SQL = """
SELECT min(a.created_at), greatest(max(a.created_at), (SELECT max(e.created_at) FROM monitoring_bpestimate e
                                                     WHERE e.window_id = ANY(%(ids)s)))
FROM monitoring_windowanalysis a WHERE a.window_id = ANY(%(ids)s)
"""


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("positive integers, comma-separated")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--windows", type=int, default=2000, help="K: windows stored before each run")
    p.add_argument("--patients", type=int, default=100, help="patients (wearables) the K windows belong to, per run")
    p.add_argument("--concurrency", type=int_list, default=[1, 2], help="worker processes (prefork children) per run")
    p.add_argument("--timeout", type=float, default=900.0, help="upper bound of one run, seconds")
    p.add_argument("--ingest-ms", type=float, nargs=3, metavar=("WEB", "POSTGRES", "REDIS"),
                   default=[DEFAULT_INGEST_MS["web"], DEFAULT_INGEST_MS["postgres"], DEFAULT_INGEST_MS["redis"]],
                   help="CPU ms per window of ingestion (bench/ingest.py --batch 100) for the capacity arithmetic")
    p.add_argument("--evaluation-ms", type=float, nargs=2, metavar=("WORKER", "POSTGRES"),
                   default=[DEFAULT_EVALUATION_MS["worker"], DEFAULT_EVALUATION_MS["postgres"]],
                   help="CPU ms of one therapy evaluation (bench/evaluation.py)")
    p.add_argument("--evaluations-per-day", type=float, default=2.0,
                   help="evaluations per patient per day: the daily one plus events (cuff readings of a home "
                        "series, reports, plan changes, crisis-level estimates), averaged")
    p.add_argument("--headroom", type=float, default=0.5, help="share of the CPU planned for steady load")
    p.add_argument("--keep", action="store_true", help="keep the worker logs (path printed)")
    args = p.parse_args(argv)
    if args.windows < 1 or args.patients < 1 or args.windows % args.patients:
        p.error("--windows must be a positive multiple of --patients")
    if args.windows // args.patients > 1000:
        p.error("at most 1000 windows per patient (they must be less than 30 days old)")
    return args


def one_run(*, args, env, concurrency: int, run: int, database_url: str, redis_proc, work: Path) -> dict:
    import psycopg

    each = args.windows // args.patients
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    first_at = now - dt.timedelta(seconds=WINDOW_EVERY_S * each)
    calibrated_at = first_at - dt.timedelta(minutes=15)  # outside the +/-10-min pairing of every window
    t0 = time.monotonic()
    clinic = clinic_create(env=env, tag=f"w{run}", patients=args.patients, plan=False, calibrated_at=calibrated_at)
    out = run_checked([PYTHON, "-c", PRELOAD_SCRIPT, json.dumps(clinic.patients), str(each), first_at.isoformat()],
                      env=env, what="preload", timeout=1800)
    ids = json.loads(next(line[4:] for line in out.splitlines() if line.startswith("IDS=")))
    print(f"  run {run}: {len(ids)} windows of {args.patients} calibrated patients stored and queued, no worker running "
          f"({time.monotonic() - t0:.0f} s; active model {clinic.model})", flush=True)

    worker = Worker(env=env, name=f"throughput{run}", concurrency=concurrency, log_path=work / f"worker{run}.log")
    try:
        worker.wait_ready()
        time.sleep(2.0)  # let the pool children finish importing before the CPU meter starts
        pg_port = pg_port_of(database_url)
        meter = CpuMeter({"worker": worker.processes, "postgres": lambda: postgres_processes(pg_port),
                          "redis": lambda: process_tree(redis_proc.pid)})
        load0 = load_average()
        with psycopg.connect(database_url, autocommit=True) as db:
            meter.start()
            started = time.monotonic()
            worker.consume()
            deadline = started + args.timeout
            while True:
                received, processed, rejected, failed, estimated = db.execute(PROGRESS_SQL, {"ids": ids}).fetchone()
                if received == 0 and estimated >= processed:
                    break
                if time.monotonic() > deadline or worker.process.poll() is not None:
                    cpu = meter.stop()
                    print(f"  run {run}: NOT SETTLED after {time.monotonic() - started:.0f} s: {received} waiting, "
                          f"{processed} processed, {estimated} estimated; worker log {worker.log_path}")
                    return {"ok": False}
                time.sleep(0.2)
            wall = time.monotonic() - started
            cpu = meter.stop()
            first, last = db.execute(SPAN_SQL, {"ids": ids}).fetchone()
    finally:
        worker.stop()
    span = (last - first).total_seconds()
    rate_db, rate_wall = len(ids) / span, len(ids) / wall
    per = {name: cpu[name] * wall * 1000 / len(ids) for name in ("worker", "postgres", "redis")}
    total = sum(per.values())
    print(f"RESULT worker --concurrency {concurrency}: {rate_db:.1f} windows/s processed + estimated "
          f"({len(ids)} in {span:.1f} s, first analysis to last write; wall clock incl. pick-up {rate_wall:.1f}/s in "
          f"{wall:.1f} s) | {processed} usable -> {estimated} live estimates, {rejected} rejected by the quality gate, "
          f"{failed} failed")
    print(f"  CPU per window: worker {per['worker']:.2f} ms, postgres {per['postgres']:.2f} ms, redis {per['redis']:.3f} ms "
          f"= {total:.2f} ms; in cores busy: worker {cpu['worker']:.2f}, postgres {cpu['postgres']:.2f}, redis "
          f"{cpu['redis']:.2f}, whole machine {cpu.get('machine', float('nan')):.2f} of 2 | load average "
          f"{load0} -> {load_average()}", flush=True)
    return {"ok": failed == 0, "rate": rate_db, "per": per, "total": total, "concurrency": concurrency,
            "usable": processed / len(ids)}


def capacity(args, results: list[dict]) -> None:
    import os

    cores = os.cpu_count() or 2
    web, pg_in, redis_in = args.ingest_ms
    ingest_ms = web + pg_in + redis_in
    best = max(results, key=lambda r: r["rate"])
    worker_ms = best["total"]
    h = args.headroom
    print("\nCapacity (one 30-s window per patient every 5 min = 1/300 window/s per patient):")
    print(f"  measured: {best['rate']:.1f} windows/s with {best['concurrency']} worker process(es) on this "
          f"{cores}-core machine -> {best['rate'] * WINDOW_EVERY_S:,.0f} patients if the worker side had the machine "
          f"to itself at 100 % ({best['rate'] * WINDOW_EVERY_S * h:,.0f} at {h:.0%})")
    windows_a_day = 86_400 / WINDOW_EVERY_S
    share = args.evaluations_per_day / windows_a_day
    eval_worker, eval_pg = args.evaluation_ms[0] * share, args.evaluation_ms[1] * share
    eval_ms = eval_worker + eval_pg
    total = ingest_ms + worker_ms + eval_ms
    per_machine_ws = cores * 1000 / total
    print(f"  whole pipeline on one machine, from CPU per window (contention-free): ingestion {ingest_ms:.2f} ms "
          f"(web {web:.2f}, PostgreSQL {pg_in:.2f}, Redis {redis_in:.2f}; bench/ingest.py --batch 100) + worker "
          f"{worker_ms:.2f} ms + its share of the patient's evaluations {eval_ms:.2f} ms ({args.evaluations_per_day:g} "
          f"a day of {sum(args.evaluation_ms):.1f} ms over {windows_a_day:.0f} windows: worker {eval_worker:.2f}, "
          f"PostgreSQL {eval_pg:.2f}; bench/evaluation.py) = {total:.2f} ms -> {cores} cores / {total:.2f} ms = "
          f"{per_machine_ws:.0f} windows/s = {per_machine_ws * WINDOW_EVERY_S:,.0f} patients at 100 % CPU; planned at "
          f"{h:.0%} (bursts after outages, beat reports, web pages): ~{per_machine_ws * WINDOW_EVERY_S * h:,.0f} "
          f"patients per 2-core machine")
    app_ms = web + best["per"]["worker"] + eval_worker
    pg_ms = pg_in + best["per"]["postgres"] + eval_pg
    redis_ms = redis_in + best["per"]["redis"]
    print(f"  N machines (web + worker, stateless) on one PostgreSQL + one Redis: app CPU {app_ms:.2f} ms per window -> "
          f"{cores * 1000 / app_ms * h:.0f} windows/s = {cores * 1000 / app_ms * h * WINDOW_EVERY_S:,.0f} patients per "
          f"2-core app machine at {h:.0%}; PostgreSQL {pg_ms:.2f} ms and Redis {redis_ms:.3f} ms per window")
    for pg_cores in (2, 8, 32):
        pg_ws = pg_cores * 1000 / pg_ms * h
        n = pg_ws / (cores * 1000 / app_ms * h)
        print(f"    a {pg_cores}-core PostgreSQL at {h:.0%} takes {pg_ws:,.0f} windows/s = "
              f"{pg_ws * WINDOW_EVERY_S:,.0f} patients, i.e. ~{n:.0f} app machines before the database is the limit "
              f"(Redis, single-threaded, {1000 / redis_ms * h:,.0f} windows/s on one core at {h:.0%})")
    target_ms = 5.0
    print(f"  target <= {target_ms:.1f} ms per window all-in (>= 50,000 patients at <= 50 % of 2 cores): "
          f"{'met' if total <= target_ms else 'NOT met'} ({total:.2f} ms -> {cores * 1000 / total * h * WINDOW_EVERY_S:,.0f} "
          f"patients at {h:.0%})")
    print("  (CPU only: PostgreSQL also needs disk for ~31 KiB of raw signal + ~3 KiB of rows per window, "
          "~10 MiB per patient per day of windows before retention (bench/retention.py); its I/O is not measured "
          "here: the benchmark cluster runs fsync=off)")


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    print(f"bench/worker_throughput: K = {args.windows} windows of {args.patients} patients per run; concurrency "
          f"{', '.join(map(str, args.concurrency))}; {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
          f"load average {load_average()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-worker-"))
    redis_proc, results = None, []
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            env = production_env(database_url=database_url, redis_port=redis_port, work=work)
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="manage.py migrate")
            for run, concurrency in enumerate(args.concurrency, start=1):
                results.append(one_run(args=args, env=env, concurrency=concurrency, run=run, database_url=database_url,
                                       redis_proc=redis_proc, work=work))
    except KeyboardInterrupt:
        print("bench/worker_throughput: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        stop(redis_proc)
        if args.keep:
            print(f"bench/worker_throughput: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    good = [r for r in results if r.get("ok")]
    by_c = {r["concurrency"]: r for r in good}
    if 1 in by_c and 2 in by_c:
        one, two = by_c[1], by_c[2]
        print(f"\nScaling 1 -> 2 worker processes: {one['rate']:.1f} -> {two['rate']:.1f} windows/s = "
              f"x{two['rate'] / one['rate']:.2f} (CPU per window {one['total']:.2f} -> {two['total']:.2f} ms; on 2 cores "
              "the second process shares them with PostgreSQL, Redis and everything else on the machine)")
    if good:
        capacity(args, good)
    print(f"bench/worker_throughput: load average at the end {load_average()}")
    return 0 if len(good) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
