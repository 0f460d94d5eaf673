"""Benchmark: SQL queries and server time of the clinician app and the portal at clinic volume.

Starts a private Redis and a throwaway PostgreSQL, migrates, and seeds a clinic the size the web
issue asks for: 2,000 patients in ONE care team with one clinician (the worst case for the review
queue and the patient list: every patient is theirs), each with a device, a plan (through
`therapy.services.plan_create`), two cuff readings with their calibrations, 30 days of dose logs,
and 500 live BP estimates over the last 30 days (1,000,000 `BPEstimate` rows, each with its
`SignalWindow` and `WindowAnalysis`, inserted with `INSERT ... SELECT generate_series`; the raw
window bytes are left empty). Then every patient is evaluated by the real engine
(`therapy.evaluation.patient_therapy_evaluate`), which writes their `LatestEvaluation` and, for
the ~15 % whose mean is above target, a pending step-up (those with a confirmed crisis pair: an
urgent escalation with an alert): the review queue is what the engine made, not hand-built rows.

Then, in this process with Django's test client (force_login, DEBUG off), it GETs each page:
warm-up, one request under `CaptureQueriesContext` (query count, SQL time), then the timed runs.
Server time = the whole in-process request (middleware, session, view, template), no network.
"GC max" is the longest pause of Python's cyclic garbage collector inside one timed request: a
page that leaves many reference cycles behind pays a full collection now and then (its p95).

    .venv/bin/python bench/web_pages.py                         # 2,000 patients x 500 estimates, 20 runs
    .venv/bin/python bench/web_pages.py --patients 200 --runs 5 # quick look
    .venv/bin/python bench/web_pages.py --explain 3             # + EXPLAIN ANALYZE of each page's 3 slowest queries

A second clinician whose team holds only 20 of the patients opens the queue and the list too:
their query counts must equal the big clinician's (bounded = independent of volume).

Exit status: 0 when every page answered 200 (whatever its time: figures, not a gate); 1 when a
page answered anything else or query counts differ between 20 and 2,000 patients; 130 when
interrupted.
"""
from __future__ import annotations

import argparse
import gc
import math
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest import stop_on_signals  # noqa: E402

from clinops.localservices import free_port, start_redis, stop, temporary_postgres  # noqa: E402

TARGET_MS = 300.0  # README "Benchmarks": each page renders in under 300 ms (p50, server side)
SMALL_TEAM = 20
GIVEN = ["Ada", "Bea", "Carl", "Dina", "Emil", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lena", "Milo", "Nora",
         "Otto", "Pia", "Quin", "Rosa", "Sven", "Tara", "Uma", "Vik", "Wren", "Xena", "Yuri", "Zoe", "Amir", "Bruno",
         "Chloe", "Dario", "Elif", "Femi", "Greta", "Hugo", "Iris", "Jonas", "Kemal", "Lucia", "Mateo", "Nadia"]
FAMILY = ["Abbott", "Becker", "Castro", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jansen", "Kowalski",
          "Larsen", "Moreau", "Novak", "Okafor", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka", "Ueda", "Varga",
          "Weber", "Xu", "Yilmaz", "Zimmer", "Andersen", "Bauer", "Costa", "Dahl", "Engel", "Ferrari", "Gruber",
          "Horvat", "Ivanova", "Jovanovic", "Keller", "Lindqvist", "Meyer", "Nielsen", "Olsen", "Popescu", "Reyes",
          "Silva", "Takahashi", "Urban", "Vogel", "Walsh", "Young", "Zhang"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=2000, help="patients, all in the measured clinician's care team")
    p.add_argument("--estimates", type=int, default=500, help="live BP estimates per patient, spread over 30 days")
    p.add_argument("--runs", type=int, default=20, help="timed requests per page")
    p.add_argument("--warmup", type=int, default=3, help="untimed requests per page first")
    p.add_argument("--explain", type=int, default=0, metavar="N",
                   help="print EXPLAIN (ANALYZE, BUFFERS) of each page's N slowest queries")
    p.add_argument("--chunk", type=int, default=250, help="patients per INSERT ... SELECT batch when seeding")
    args = p.parse_args(argv)
    if args.patients < SMALL_TEAM or args.estimates < 20 or args.runs < 1 or args.chunk < 1:
        p.error(f"--patients >= {SMALL_TEAM}, --estimates >= 20, --runs and --chunk >= 1")
    return args


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# --- seeding ------------------------------------------------------------------------------------


def group_of(i: int) -> str:
    """The patient's story: uncontrolled (mean above target: the engine proposes a step up),
    crisis (uncontrolled plus a confirmed SBP >= 180 pair: urgent escalation, alert), silent (no
    upload for 3 days), or controlled."""
    if i % 60 == 0:
        return "crisis"
    if i % 20 in (0, 1, 2):
        return "uncontrolled"
    if i % 20 == 3:
        return "silent"
    return "controlled"


BASE_BP = {"crisis": (150.0, 93.0), "uncontrolled": (150.0, 93.0), "silent": (126.0, 79.0), "controlled": (124.0, 78.0)}

WINDOWS_SQL = """
INSERT INTO monitoring_signalwindow (device_id, patient_id, sequence, recorded_at, duration_s, ecg_fs, ppg_fs, encoding,
    raw, raw_sha256, raw_bytes, firmware, received_at, status, enqueued_at, processed_at, failure)
SELECT p.device_id, p.patient_id, k, t.at, 30, 250, 250, 'compact', ''::bytea, md5(p.patient_id::text || ':' || k) ||
       md5(k || ':' || p.patient_id::text), 26112, '2.0.1', t.at + interval '41 s', 'processed', t.at + interval '41 s',
       t.at + interval '44 s', ''
FROM bench_params p CROSS JOIN generate_series(1, %(n)s) AS k
CROSS JOIN LATERAL (SELECT CASE
    WHEN p.crisis AND k = %(n)s - 3 THEN p.last_at - 4 * %(step)s + interval '12 min'
    WHEN p.crisis AND k = %(n)s - 4 THEN p.last_at - 4 * %(step)s
    ELSE p.last_at - (%(n)s - k) * %(step)s - random() * interval '20 min' END AS at) AS t
WHERE p.patient_id BETWEEN %(lo)s AND %(hi)s
"""
ANALYSES_SQL = """
INSERT INTO monitoring_windowanalysis (window_id, pipeline_version, usable, reasons, issues, features, beat_count,
    heart_rate_bpm, pat_foot_ms, processing_ms, created_at)
SELECT w.id, %(pipeline)s, true, '[]', '[]',
       jsonb_build_object('pat_foot_ms', jsonb_build_object('median', 200 + 40 * random(), 'iqr', 8 + 4 * random()),
                          'heart_rate_bpm', jsonb_build_object('median', 60 + 25 * random(), 'iqr', 3 * random()),
                          'beat_count', 36),
       36, 60 + 25 * random(), 200 + 40 * random(), 1.2 + random(), w.processed_at
FROM monitoring_signalwindow w WHERE w.patient_id BETWEEN %(lo)s AND %(hi)s
"""
ESTIMATES_SQL = """
INSERT INTO monitoring_bpestimate (window_id, analysis_id, patient_id, model_version_id, calibration_id, recorded_at,
    sbp_mmhg, dbp_mmhg, sbp_low_mmhg, sbp_high_mmhg, dbp_low_mmhg, dbp_high_mmhg, interval_level, shadow,
    calibration_age_days, flags, created_at)
SELECT v.window_id, v.analysis_id, v.patient_id, %(model)s, v.calibration_id, v.recorded_at, v.sbp, v.dbp,
       v.sbp - 12, v.sbp + 12, v.dbp - 8, v.dbp + 8, 0.9, false,
       extract(epoch FROM v.recorded_at - v.calibrated_at) / 86400, '[]', v.processed_at
FROM (
  SELECT w.id AS window_id, a.id AS analysis_id, w.patient_id, w.recorded_at, w.processed_at,
         CASE WHEN w.recorded_at >= p.cal_new_at THEN p.cal_new_id ELSE p.cal_old_id END AS calibration_id,
         CASE WHEN w.recorded_at >= p.cal_new_at THEN p.cal_new_at ELSE p.cal_old_at END AS calibrated_at,
         round((CASE WHEN p.crisis AND w.sequence IN (%(n)s - 3, %(n)s - 4) THEN 186
               ELSE p.base_sbp + 7 * sin(2 * pi() * extract(hour FROM w.recorded_at) / 24) + 16 * (random() - 0.5)
               END)::numeric, 1)::float8 AS sbp,
         round((CASE WHEN p.crisis AND w.sequence IN (%(n)s - 3, %(n)s - 4) THEN 104
               ELSE p.base_dbp + 4 * sin(2 * pi() * extract(hour FROM w.recorded_at) / 24) + 10 * (random() - 0.5)
               END)::numeric, 1)::float8 AS dbp
  FROM monitoring_signalwindow w
  JOIN monitoring_windowanalysis a ON a.window_id = w.id
  JOIN bench_params p ON p.patient_id = w.patient_id
  WHERE w.patient_id BETWEEN %(lo)s AND %(hi)s
) AS v
"""


def seed(args: argparse.Namespace) -> dict:
    """Build the clinic; returns the people the pages are opened as and the seeding figures."""
    import datetime as dt

    from django.db import connection, transaction
    from django.utils import timezone

    from clinops.base.audit import SYSTEM
    from monitoring.models import BPEstimate, BPModelVersion, Calibration, CuffReading, CuffSource, ModelStatus
    from monitoring.signals.pipeline import PIPELINE_VERSION
    from patients import services as people
    from patients.models import CareTeam, ConsentStatus, Device, Patient, Profession, Sex
    from therapy import services as therapy_services
    from therapy.adherence import scheduled_doses
    from therapy.domain import LADDER_TEMPLATES
    from therapy.evaluation import patient_therapy_evaluate
    from therapy.models import Alert, DoseLog, LatestEvaluation, PlanVersion, Suggestion, SuggestionStatus

    now = timezone.now().replace(microsecond=0)
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def lap(name: str) -> None:
        nonlocal t0
        timings[name] = time.monotonic() - t0
        print(f"  {name}: {timings[name]:.1f} s", flush=True)
        t0 = time.monotonic()

    # People: the clinician of the big team, a clinician of a small team, one patient with a portal account.
    clinician = people.clinician_create(actor=SYSTEM, username="bench-clinician", password=secrets.token_urlsafe(16),
                                        first_name="Bench", last_name="Clinician", profession=Profession.PHYSICIAN)
    small = people.clinician_create(actor=SYSTEM, username="bench-small", password=secrets.token_urlsafe(16),
                                    first_name="Small", last_name="Team", profession=Profession.NURSE)
    team = people.care_team_create(actor=SYSTEM, name="Bench clinic")
    small_team = people.care_team_create(actor=SYSTEM, name="Bench small team")
    people.care_team_add_clinician(actor=SYSTEM, team=team, clinician=clinician)
    people.care_team_add_clinician(actor=SYSTEM, team=small_team, clinician=small)
    portal = people.patient_create(
        actor=SYSTEM, medical_record_number="BENCH-00000", given_name=GIVEN[0], family_name=FAMILY[0],
        date_of_birth=dt.date(1950, 1, 1), sex=Sex.FEMALE, consent_status=ConsentStatus.GIVEN,
        username="bench-patient", password=secrets.token_urlsafe(16))
    rest = Patient.objects.bulk_create([
        Patient(medical_record_number=f"BENCH-{i:05d}", given_name=GIVEN[i % len(GIVEN)],
                family_name=FAMILY[(i * 7) % len(FAMILY)], date_of_birth=dt.date(1940, 1, 1) + dt.timedelta(days=(i * 37) % 14000),
                sex=Sex.FEMALE if i % 2 else Sex.MALE, consent_status=ConsentStatus.GIVEN, consent_changed_at=now)
        for i in range(1, args.patients)
    ], batch_size=1000)
    patients = [portal, *rest]
    through = CareTeam.patients.through
    through.objects.bulk_create([through(careteam_id=team.pk, patient_id=p.pk) for p in patients], batch_size=2000)
    through.objects.bulk_create([through(careteam_id=small_team.pk, patient_id=p.pk) for p in patients[:SMALL_TEAM]])
    groups = {p.pk: group_of(i) for i, p in enumerate(patients)}
    devices = Device.objects.bulk_create([
        Device(patient=p, make="Acme", model="Wrist-2", firmware="2.0.1", serial=f"BENCH-SN-{i:05d}")
        for i, p in enumerate(patients)], batch_size=2000)
    lap(f"{len(patients)} patients, care teams, devices")

    # Plans through the service (audited, numbered), set two months ago; every 10th patient was
    # stepped up to rung 2 forty days ago (a dose change on their chart).
    for i, p in enumerate(patients):
        therapy_services.plan_create(actor=clinician.user, patient=p, template="ace-ccb-thiazide", reason="start of treatment")
        if i % 10 == 5:
            therapy_services.plan_change(actor=clinician.user, patient=p, reason="above target at review", current_rung=1)
    PlanVersion.objects.filter(version=1).update(created_at=now - dt.timedelta(days=60))
    PlanVersion.objects.filter(version=2).update(created_at=now - dt.timedelta(days=40))
    lap(f"{PlanVersion.objects.count()} plan versions (plan_create / plan_change)")

    # The active model (registry rows only; nothing loads its file here) and two calibrations each.
    model = BPModelVersion.objects.create(
        version="bench-ridge-1", status=ModelStatus.ACTIVE, trained_by="bench/web_pages.py", data_fingerprint={},
        features=["pat_foot_ms", "heart_rate_bpm"], metrics={}, interval_sbp_mmhg=12.0, interval_dbp_mmhg=8.0,
        pipeline_version=PIPELINE_VERSION, artifact=b"", artifact_sha256="0" * 64)
    cal_times = (now - dt.timedelta(days=31), now - dt.timedelta(days=8))
    readings = CuffReading.objects.bulk_create([
        CuffReading(patient=p, measured_at=at, sbp_mmhg=BASE_BP[groups[p.pk]][0] + 2, dbp_mmhg=BASE_BP[groups[p.pk]][1] + 1,
                    source=CuffSource.CLINICIAN, entered_by=clinician.user)
        for p in patients for at in cal_times], batch_size=2000)
    calibrations = Calibration.objects.bulk_create([
        Calibration(patient_id=r.patient_id, cuff_reading=r, calibrated_at=r.measured_at,
                    features={"pat_foot_ms": 210.0, "heart_rate_bpm": 68.0}, pipeline_version=PIPELINE_VERSION)
        for r in readings], batch_size=2000)
    cals = {}
    for c in calibrations:
        cals.setdefault(c.patient_id, []).append(c)
    lap(f"{len(readings)} cuff readings and calibrations")

    # Windows, analyses, estimates: one INSERT ... SELECT per table per batch of patients.
    step = dt.timedelta(days=30) / args.estimates
    last_upload = {p.pk: now - dt.timedelta(minutes=2) - (dt.timedelta(days=3) if groups[p.pk] == "silent" else dt.timedelta())
                   for p in patients}
    with connection.cursor() as cur:
        cur.execute("""CREATE TEMP TABLE bench_params (patient_id bigint PRIMARY KEY, device_id bigint, last_at timestamptz,
                       crisis boolean, base_sbp float8, base_dbp float8, cal_old_id bigint, cal_old_at timestamptz,
                       cal_new_id bigint, cal_new_at timestamptz)""")
        rows = []
        for p, d in zip(patients, devices):
            old, new = sorted(cals[p.pk], key=lambda c: c.calibrated_at)
            sbp, dbp = BASE_BP[groups[p.pk]]
            rows.append((p.pk, d.pk, last_upload[p.pk], groups[p.pk] == "crisis", sbp, dbp,
                         old.pk, old.calibrated_at, new.pk, new.calibrated_at))
        cur.executemany("INSERT INTO bench_params VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)
        ids = sorted(p.pk for p in patients)
        params = {"n": args.estimates, "step": step, "pipeline": PIPELINE_VERSION, "model": model.pk}
        done = 0
        for start in range(0, len(ids), args.chunk):
            batch = ids[start:start + args.chunk]
            with transaction.atomic():
                for sql in (WINDOWS_SQL, ANALYSES_SQL, ESTIMATES_SQL):
                    cur.execute(sql, {**params, "lo": batch[0], "hi": batch[-1]})
            done += len(batch)
            print(f"    estimates for {done}/{len(ids)} patients ({time.monotonic() - t0:.0f} s)", flush=True)
        cur.executemany("UPDATE patients_device SET last_seen_at = %s WHERE id = %s",
                        [(last_upload[p.pk], d.pk) for p, d in zip(patients, devices)])
    n_estimates = BPEstimate.objects.count()
    lap(f"{n_estimates} windows + analyses + estimates (INSERT ... SELECT generate_series)")

    # Dose logs: the scheduled doses of each patient's regimen over the last 30 days; 90 % taken
    # (uncontrolled patients 70 %), the portal patient logs their own.
    today = timezone.localdate(now)
    ladder = LADDER_TEMPLATES["ace-ccb-thiazide"]
    logs = []
    for i, p in enumerate(patients):
        rung = ladder.rungs[1 if i % 10 == 5 else 0]
        share = 0.7 if groups[p.pk] in ("uncontrolled", "crisis") else 0.9
        for n in range(1, 31):
            for dose in scheduled_doses(rung, today - dt.timedelta(days=n)):
                logs.append(DoseLog(patient=p, day=dose.day, drug=dose.drug, dose_mg=dose.dose_mg, slot=dose.slot,
                                    taken=(n * 7 + i) % 10 < share * 10,
                                    logged_by=portal.user if i == 0 else clinician.user))
    DoseLog.objects.bulk_create(logs, batch_size=5000)
    lap(f"{len(logs)} dose logs")

    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    lap("ANALYZE")

    # The engine evaluates every patient: LatestEvaluation for all, suggestions and alerts where due.
    for p in patients:
        patient_therapy_evaluate(patient_id=p.pk, now=now)
    pending = Suggestion.objects.filter(status=SuggestionStatus.PENDING_REVIEW)
    lap(f"{LatestEvaluation.objects.count()} evaluations by patient_therapy_evaluate "
        f"({pending.count()} pending, {pending.filter(urgent=True).count()} urgent, "
        f"{Alert.objects.filter(closed_at__isnull=True).count()} open alerts)")
    with connection.cursor() as cur:
        cur.execute("ANALYZE")
    return {"clinician": clinician.user, "small": small.user, "portal": portal, "timings": timings,
            "n_estimates": n_estimates, "group_counts": {g: list(groups.values()).count(g) for g in BASE_BP}}


# --- measuring ----------------------------------------------------------------------------------


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cur.fetchall())


def measure(client, label: str, path: str, *, args: argparse.Namespace) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(args.warmup):
        response = client.get(path)
        if response.status_code != 200:
            return {"label": label, "path": path, "status": response.status_code}
    sql_s: list[float] = []

    def timed(execute, sql, params, many, context):  # finer than the ms the captured queries carry
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_s.append(time.perf_counter() - t0)

    with CaptureQueriesContext(connection) as ctx, connection.execute_wrapper(timed):
        response = client.get(path)
    queries = [{**q, "time": t} for q, t in zip(ctx.captured_queries, sql_s)]
    sql_ms = sum(sql_s) * 1000
    times, gc_ms, gc_started = [], [], []

    def on_gc(phase, info):  # Python's cyclic collector pausing the request
        if phase == "start":
            gc_started.append(time.perf_counter())
        elif gc_started:
            gc_ms[-1] += (time.perf_counter() - gc_started.pop()) * 1000

    gc.callbacks.append(on_gc)
    try:
        for _ in range(args.runs):
            gc_ms.append(0.0)
            t0 = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            if response.status_code != 200:
                break
    finally:
        gc.callbacks.remove(on_gc)
    result = {"label": label, "path": path, "status": response.status_code, "queries": len(queries), "sql_ms": sql_ms,
              "p50": statistics.median(times), "p95": percentile(times, 0.95), "gc_max": max(gc_ms),
              "bytes": len(response.content), "slowest": sorted(queries, key=lambda q: -float(q["time"]))}
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-web-"))
    redis_proc = None
    failed = False
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            os.environ.update({
                "DJANGO_SETTINGS_MODULE": "clinops.settings.test",  # DEBUG off, fast password hasher
                "DEBUG": "0",
                "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
                "DATABASE_URL": database_url,
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "CLINOPS_VAR_DIR": str(work / "var"),
                "CLINOPS_OTP_REQUIRED_FOR_CLINICIANS": "0",
                "LOG_LEVEL": "ERROR",
            })
            import django

            django.setup()
            from django.conf import settings
            from django.core.management import call_command
            from django.db import connections
            from django.test import Client

            assert not settings.DEBUG
            try:
                t_all = time.monotonic()
                call_command("migrate", verbosity=0)
                print(f"bench/web_pages: PostgreSQL + Redis up and migrated ({time.monotonic() - t_all:.1f} s); "
                      f"seeding {args.patients} patients x {args.estimates} estimates; {os.cpu_count()} CPUs", flush=True)
                gc.collect()
                objects_before = len(gc.get_objects())
                t_seed = time.monotonic()
                world = seed(args)
                seed_s = time.monotonic() - t_seed
                gc.collect()
                print(f"bench/web_pages: objects tracked by the gc: {objects_before:,} before seeding, "
                      f"{len(gc.get_objects()):,} after", flush=True)
                from django.db import connection

                with connection.cursor() as cur:
                    cur.execute("SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE n_live_tup > 0 ORDER BY 2 DESC LIMIT 12")
                    counts = cur.fetchall()
                    cur.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
                    db_size = cur.fetchone()[0]
                print(f"bench/web_pages: seeded in {seed_s:.0f} s ({seed_s / 60:.1f} min); database {db_size}; "
                      f"patients by story: {world['group_counts']}")
                print("  rows (pg_stat_user_tables, approximate): " + ", ".join(f"{name} {n:,}" for name, n in counts), flush=True)

                from patients.models import Patient
                from therapy.models import Suggestion, SuggestionStatus

                # The patient page of the portal patient: 500 estimates, an urgent escalation, an alert.
                page_patient = world["portal"]
                clinic = Client()
                clinic.force_login(world["clinician"])
                small = Client()
                small.force_login(world["small"])
                patient_client = Client()
                patient_client.force_login(page_patient.user)
                n_visible = Patient.objects.filter(care_teams__clinicians__user=world["clinician"]).distinct().count()
                n_pending = Suggestion.objects.filter(status=SuggestionStatus.PENDING_REVIEW).count()
                pages = [
                    (clinic, f"review queue ({n_pending} pending, first 100 shown)", "/clinic/"),
                    (clinic, f"patient list ({n_visible} patients)", "/clinic/patients/"),
                    (clinic, f"patient page ({args.estimates} estimates)", f"/clinic/patients/{page_patient.pk}/"),
                    (patient_client, "portal home (patient)", "/portal/"),
                    (small, f"review queue, {SMALL_TEAM}-patient team", "/clinic/"),
                    (small, f"patient list, {SMALL_TEAM}-patient team", "/clinic/patients/"),
                ]
                results = []
                for client, label, path in pages:
                    results.append(measure(client, label, path, args=args))
                    r = results[-1]
                    print(f"  measured {path} ({label}): status {r['status']}", flush=True)
                    if args.explain and "slowest" in r and client is not small:
                        r["explain"] = [(float(q["time"]) * 1000, q["sql"], explain(q["sql"]))
                                        for q in r["slowest"][:args.explain]]
            finally:
                connections.close_all()
    except KeyboardInterrupt:
        print("bench/web_pages: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        stop(redis_proc)
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"Server time of each page, in-process Django test client, PostgreSQL, DEBUG off, {args.runs} timed runs "
          f"after {args.warmup} warm-up; queries and SQL ms: one request (CaptureQueriesContext); GC max: the longest "
          f"total pause of Python's cyclic garbage collector in one timed request (ms)")
    header = (f"{'page':<44} {'path':<22} {'status':>6} {'queries':>7} {'SQL ms':>7} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'GC max':>7} {'KiB':>7}  target")
    print(header)
    print("-" * len(header))
    for r in results:
        if r["status"] != 200 or "p50" not in r:
            failed = True
            print(f"{r['label']:<44} {r['path']:<22} {r['status']:>6}  FAILED")
            continue
        verdict = "ok" if r["p50"] < TARGET_MS else f"SLOW (> {TARGET_MS:.0f} ms)"
        print(f"{r['label']:<44} {r['path'][:22]:<22} {r['status']:>6} {r['queries']:>7} {r['sql_ms']:>7.1f} "
              f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['gc_max']:>7.1f} {r['bytes'] / 1024:>7.1f}  {verdict}")
    by_path = {}
    for r in results:
        by_path.setdefault(r["path"], []).append(r.get("queries"))
    for path in ("/clinic/", "/clinic/patients/"):
        big, small_n = by_path[path][0], by_path[path][-1]
        same = big == small_n
        failed |= not same
        print(f"bounded queries {path}: {big} with {args.patients} patients, {small_n} with {SMALL_TEAM}: "
              f"{'same' if same else 'GROWS WITH VOLUME'}")
    for r in results:
        for ms, sql, plan in r.get("explain", []):
            print(f"\n== {r['path']} ({r['label']}): {ms:.1f} ms\n{sql[:1500]}\n{plan}")
    print(f"Seeding: {sum(world['timings'].values()):.0f} s for {args.patients} patients, {world['n_estimates']:,} estimates")
    if failed:
        print("bench/web_pages: FAILED: a page did not answer 200, or query counts grow with volume", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
