"""Benchmark: the therapy engine's evaluation of one patient, on a real `celery -A clinops worker`
(prefork, --concurrency 1) against PostgreSQL, and what it adds to every window.

An evaluation reads the plan's look-back (7 days by default: 2,016 estimates at one window every 5
minutes) - its whole quiet days as their day totals (monitoring.models.EstimateDayTotals, kept as
the estimates are stored), the part-days at both ends estimate by estimate - proposes a step, routes
it and stores the outcome. It runs once a day per
patient and on events (therapy/tasks.py), not after every window, so a window carries a share of
it: bench/worker_throughput.py's arithmetic (--evaluation-ms, --evaluations-per-day).

Starts a private Redis and a throwaway PostgreSQL, migrates, creates a clinic of calibrated
patients with the default plan (bench/_lib), stores for each a full look-back of 5-min estimates
(SBP around 146 mmHg, above the 135 target: the engine proposes a step up and routes it to the
review queue, the steady state of a patient not at target), then sends --rounds evaluate_patient
tasks per patient through Redis and times them until every patient's LatestEvaluation is newer
than the round.

    .venv/bin/python bench/evaluation.py                       # 20 patients x 5 rounds, 7-day look-back
    .venv/bin/python bench/evaluation.py --look-back-days 14
    .venv/bin/python bench/evaluation.py --no-day-totals      # every estimate read one by one, as before

Prints the evaluations/s of one worker process, CPU ms per evaluation of the worker and of
PostgreSQL, and the per-evaluation total for bench/worker_throughput.py's capacity arithmetic
(--evaluation-ms there). Exit status 0; 1 if a round did not settle within --timeout.
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

# Run inside Django: a full look-back of the patient's estimates, as the pipeline stores them (one
# window, its analysis and its live estimate every 5 min), in bulk; the windows' signal bytes are
# not read by an evaluation and are left empty.
HISTORY_SCRIPT = r"""
import datetime as dt, json, random, sys
import django
django.setup()
from django.utils import timezone
from django.db import transaction
from monitoring.models import BPEstimate, BPModelVersion, Calibration, SignalWindow, WindowAnalysis, WindowStatus
from monitoring.bp.estimation import estimate_day_totals_add
from patients.models import Device
from therapy.models import PlanVersion

patients, days, every_s = json.loads(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
day_totals = sys.argv[4] == "1"
model = BPModelVersion.objects.get(status="active", shadow=False)
now = timezone.now().replace(microsecond=0)
rng = random.Random(7)
n = int(days * 86400 // every_s)
for patient_id in patients:
    device = Device.objects.get(patient_id=patient_id)
    calibration = Calibration.objects.get(patient_id=patient_id)
    times = [now - dt.timedelta(seconds=every_s * k + 30) for k in range(n)]
    windows = SignalWindow.objects.bulk_create([SignalWindow(
        device=device, patient_id=patient_id, sequence=1 + k, recorded_at=at, duration_s=30, ecg_fs=250, ppg_fs=125,
        encoding="compact", raw=b"", raw_sha256="", raw_bytes=0, firmware="1.0", enqueued_at=at,
        status=WindowStatus.PROCESSED, processed_at=at) for k, at in enumerate(times)])
    analyses = WindowAnalysis.objects.bulk_create([WindowAnalysis(
        window=w, pipeline_version=calibration.pipeline_version, usable=True, processing_ms=4.0) for w in windows])
    estimates = []
    for w, a in zip(windows, analyses):
        sbp, dbp = rng.gauss(146, 6), rng.gauss(90, 4)
        estimates.append(BPEstimate(
            window=w, analysis=a, patient_id=patient_id, model_version=model, calibration=calibration,
            recorded_at=w.recorded_at, sbp_mmhg=sbp, dbp_mmhg=dbp, sbp_low_mmhg=sbp - 9, sbp_high_mmhg=sbp + 9,
            dbp_low_mmhg=dbp - 6, dbp_high_mmhg=dbp + 6, interval_level=0.9,
            calibration_age_days=(w.recorded_at - calibration.calibrated_at).total_seconds() / 86400, flags=[]))
    with transaction.atomic():
        BPEstimate.objects.bulk_create(estimates, batch_size=1000)
        if day_totals:  # as the pipeline keeps them (monitoring.bp.estimation.estimate_day_totals_add)
            estimate_day_totals_add(estimates)
    # On the regimen for two months: the minimum interval between changes is over, so the engine
    # proposes a step up (and finds it waiting for review), not a hold - the costlier path.
    PlanVersion.objects.filter(patient_id=patient_id).update(created_at=now - dt.timedelta(days=60))
print("ESTIMATES=" + json.dumps(n))
"""

SETTLED_SQL = """
SELECT count(*) FROM therapy_latestevaluation WHERE patient_id = ANY(%(patients)s) AND evaluated_at >= %(since)s
"""
OUTCOMES_SQL = "SELECT outcome, count(*) FROM therapy_latestevaluation WHERE patient_id = ANY(%(patients)s) GROUP BY 1"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5, help="evaluations per patient (the first one, warm-up, is not counted)")
    p.add_argument("--look-back-days", type=float, default=7.0,
                   help="days of 5-min estimates stored per patient (the default plan looks back 7 days)")
    p.add_argument("--timeout", type=float, default=600.0, help="upper bound of one round, seconds")
    p.add_argument("--day-totals", default=True, action=argparse.BooleanOptionalAction,
                   help="keep the estimates' day totals as the pipeline does (--no-day-totals: every estimate read one by one)")
    p.add_argument("--keep", action="store_true", help="keep the worker log (path printed)")
    args = p.parse_args(argv)
    if args.patients < 1 or args.rounds < 2 or not 0 < args.look_back_days <= 28:
        p.error("--patients >= 1, --rounds >= 2, 0 < --look-back-days <= 28")
    return args


def rounds(*, args, clinic, database_url: str, redis_url: str, worker: Worker, meter: CpuMeter) -> dict | None:
    """Round 0 warms the worker up (imports, the model's first load); rounds 1.. are measured."""
    import psycopg
    from celery import Celery

    sender = Celery(broker=redis_url)
    measured = {}
    with psycopg.connect(database_url, autocommit=True) as db:
        for n in range(args.rounds):
            if n == 1:
                meter.start()
                started = time.monotonic()
            since = db.execute("SELECT now()").fetchone()[0]
            for patient_id in clinic.patients:
                sender.send_task("therapy.tasks.evaluate_patient", args=[patient_id])
            deadline = time.monotonic() + args.timeout
            while db.execute(SETTLED_SQL, {"patients": clinic.patients, "since": since}).fetchone()[0] < len(clinic.patients):
                if time.monotonic() > deadline or worker.process.poll() is not None:
                    print(f"  round {n}: NOT SETTLED after {args.timeout:.0f} s; worker log {worker.log_path}")
                    return None
                time.sleep(0.05)
        measured["wall"] = time.monotonic() - started
        measured["cpu"] = meter.stop()
        measured["outcomes"] = dict(db.execute(OUTCOMES_SQL, {"patients": clinic.patients}).fetchall())
    return measured


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    print(f"bench/evaluation: {args.patients} patients x {args.rounds} evaluations, {args.look_back_days:g} days of "
          f"5-min estimates each, {'with' if args.day_totals else 'WITHOUT'} day totals; celery worker --concurrency 1; "
          f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
          f"load average {load_average()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-evaluation-"))
    redis_proc = worker = None
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            env = production_env(database_url=database_url, redis_port=redis_port, work=work)
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="manage.py migrate")
            t0 = time.monotonic()
            calibrated_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=args.look_back_days + 1)
            clinic = clinic_create(env=env, tag="eval", patients=args.patients, plan=True, calibrated_at=calibrated_at)
            out = run_checked([PYTHON, "-c", HISTORY_SCRIPT, json.dumps(clinic.patients), str(args.look_back_days),
                               str(WINDOW_EVERY_S), "1" if args.day_totals else "0"], env=env, what="history", timeout=1800)
            per_patient = json.loads(next(line[10:] for line in out.splitlines() if line.startswith("ESTIMATES=")))
            print(f"bench/evaluation: {len(clinic.patients)} patients with plans, {per_patient} estimates each "
                  f"({time.monotonic() - t0:.0f} s; model {clinic.model})", flush=True)
            worker = Worker(env=env, name="evaluation", concurrency=1, log_path=work / "worker.log", consume_now=True)
            worker.wait_ready()
            time.sleep(2.0)
            pg_port = pg_port_of(database_url)
            meter = CpuMeter({"worker": worker.processes, "postgres": lambda: postgres_processes(pg_port),
                              "redis": lambda: process_tree(redis_proc.pid)})
            load0 = load_average()
            measured = rounds(args=args, clinic=clinic, database_url=database_url, redis_url=env["REDIS_URL"],
                              worker=worker, meter=meter)
    except KeyboardInterrupt:
        print("bench/evaluation: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        if worker is not None:
            worker.stop()
        stop(redis_proc)
        if args.keep:
            print(f"bench/evaluation: logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if measured is None:
        return 1
    n = len(clinic.patients) * (args.rounds - 1)
    cpu, wall = measured["cpu"], measured["wall"]
    per = {name: cpu[name] * wall * 1000 / n for name in ("worker", "postgres", "redis")}
    total = sum(per.values())
    print(f"RESULT evaluation: {n / wall:.1f} evaluations/s on one worker process ({n} evaluations over {per_patient} "
          f"estimates each in {wall:.1f} s; outcomes {measured['outcomes']})")
    print(f"  CPU per evaluation: worker {per['worker']:.2f} ms, postgres {per['postgres']:.2f} ms, redis {per['redis']:.3f} ms "
          f"= {total:.2f} ms; cores busy: worker {cpu['worker']:.2f}, postgres {cpu['postgres']:.2f}, whole machine "
          f"{cpu.get('machine', float('nan')):.2f} of 2 | load average {load0} -> {load_average()}")
    windows_a_day = 86_400 // WINDOW_EVERY_S
    print(f"  once a day per patient plus events, e.g. 2 a day over {windows_a_day} windows: "
          f"{total * 2 / windows_a_day:.2f} ms per window (it was {total:.2f} ms when every window was followed by one) "
          f"-> bench/worker_throughput.py --evaluation-ms {per['worker']:.2f} {per['postgres']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
