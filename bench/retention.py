"""Benchmark: raw-window retention on PostgreSQL — what a window costs at rest before and after its
raw bytes are purged, that purging does not bloat the windows table, and ingest latency while a
purge runs.

Starts a private Redis and a throwaway PostgreSQL (Debian's postgresql 15, `initdb` as the
postgres user: clinops.localservices), migrates, creates a clinic of calibrated patients with the
default plan (bench/_lib), then, in one Django process:

1. Cycles: each cycle is one day of every patient's wearable (288 real 30-s windows a patient,
   one every 5 min, recorded from 28 days ago on, after the patients' calibration) stored through
   the service the API uses (monitoring.ingest.intake.windows_receive, batches of --batch), analysed
   and estimated through the pipeline's services (real features and estimates); then the purge
   (monitoring.ingest.retention.raw_windows_purge, with its clock moved so that the retention ends
   --keep-days cycles back: the days before are purged, the last --keep-days keep their raw
   signal, as a rolling 30-day retention does) and a VACUUM (what autovacuum does in production).
   Sizes (pg_relation_size, pg_indexes_size, pg_total_relation_size of the windows table, its
   TOAST table, the analyses and the estimates) are taken after ingest and after purge + VACUUM.
   Once purging runs, the TOAST table should stay flat at about --keep-days + 1 cycles' worth (raw
   bytes freed in the middle of the table reused by the next cycle's windows) while the rows grow
   by their at-rest cost only.
2. Ingest latency: a backlog of --backlog old processed windows (31 KiB each, inserted in SQL) is
   purged by a separate process while this one stores batches of --batch windows through
   windows_receive; the time per batch is compared with batches stored with no purge running.

    .venv/bin/python bench/retention.py                          # 4 patients x 8 days (2 kept), 20,000-window backlog
    .venv/bin/python bench/retention.py --patients 8 --days 12 --keep-days 3 --backlog 40000

Prints per cycle the sizes, then: bytes per window and per patient-day (x 288) before the purge
and at rest after it, the TOAST table over the cycles (flat = no bloat), the purge's rate, the plan
of the purge's candidate query (it must walk window_raw_to_examine), ingest p50/p95/max per batch
with and without a purge running, and the time to read --suggestions suggestions of a full 7-day
look-back (2,016 estimate ids each) when finding the windows to keep. Exit status 0; 1 if the TOAST
table held more than --keep-days + 1 cycles of raw signal once purging ran, or the candidate query
did not use its index.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _lib import (  # noqa: E402
    PYTHON,
    clinic_create,
    free_port,
    load_average,
    production_env,
    run_checked,
    start_redis,
    stop,
    stop_on_signals,
    temporary_postgres,
)

WINDOWS_A_DAY = 288  # one 30-s window every 5 minutes
MiB = 2**20

# Run inside Django (production settings on the bench's PostgreSQL and Redis). Prints CYCLE=,
# PLAN=, LATENCY= lines as JSON.
MEASURE_SCRIPT = r"""
import dataclasses, datetime as dt, json, os, subprocess, sys, time
import django
django.setup()
from django.conf import settings
from django.db import connection
from django.utils import timezone
from monitoring.ingest import retention
from therapy.retention import SuggestionsKeepTheirWindows
from monitoring.bp import estimation
from monitoring.ingest import intake
from monitoring.ingest.devicesim import window_payload
from monitoring.ingest.encoding import pack_window, sha256_hex
from monitoring.models import SignalWindow
from monitoring.signals.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed
from monitoring.ingest.serializers import WindowInput
from patients.models import Device

WINDOWS_A_DAY = 288
spec = json.loads(sys.argv[1])
patients, days, keep, batch, backlog = spec["patients"], spec["days"], spec["keep_days"], spec["batch"], spec["backlog"]
devices = {d.patient_id: d for d in Device.objects.select_related("patient").filter(patient_id__in=patients).order_by("-pk")}
now0 = timezone.now().replace(microsecond=0)

real = list(iter_windows(with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, "v140s")), window_s=30))[:24]
any_device = devices[patients[0]]
templates = []
for k, window in enumerate(real):
    fields = WindowInput(data=window_payload(window, sequence=k, recorded_at=now0 - dt.timedelta(minutes=5)),
                         context={"device": any_device})
    fields.is_valid(raise_exception=True)
    v = fields.validated_data
    templates.append(intake.WindowUpload(sequence=v["sequence"], recorded_at=v["recorded_at"], duration_s=v["duration_s"],
                                           encoding=v["encoding"], channels=v["channels"]))


def uploads(start, n, seq0, every_s):
    return [dataclasses.replace(templates[k % len(templates)], sequence=seq0 + k,
                                recorded_at=start + dt.timedelta(seconds=every_s * k)) for k in range(n)]


SIZES = '''
SELECT pg_relation_size(c.oid), pg_total_relation_size(c.reltoastrelid), pg_indexes_size(c.oid),
       pg_total_relation_size(c.oid),
       pg_total_relation_size('monitoring_windowanalysis'), pg_total_relation_size('monitoring_bpestimate')
FROM pg_class c WHERE c.relname = 'monitoring_signalwindow'
'''


def sizes():
    with connection.cursor() as cursor:
        cursor.execute(SIZES)
        heap, toast, indexes, windows, analyses, estimates = cursor.fetchone()
    return {"heap": heap, "toast": toast, "indexes": indexes, "windows": windows, "analyses": analyses,
            "estimates": estimates, "all": windows + analyses + estimates}


def vacuum():
    with connection.cursor() as cursor:
        cursor.execute("VACUUM (ANALYZE) monitoring_signalwindow, monitoring_windowanalysis, monitoring_bpestimate")


print("START=" + json.dumps(sizes()), flush=True)
base = now0 - dt.timedelta(days=28)
# The purge runs "30 days on": every cycle's windows are past the 30-day retention by then, and
# their processing has settled (retention.PROCESSING_SETTLED). Uploads are refused older than 30
# days (and calibrations are made from uploads), so the history cannot be stored 30 days back.
PURGE_AHEAD = dt.timedelta(days=30)
for c in range(days):
    t = time.monotonic()
    ids = []
    for i, patient_id in enumerate(patients):
        day = uploads(base + dt.timedelta(days=c, seconds=i), WINDOWS_A_DAY, 1_000_000 + c * WINDOWS_A_DAY, 300)
        for s in range(0, len(day), batch):
            ids += [w.pk for w, created in intake.windows_receive(device=devices[patient_id], uploads=day[s:s + batch]) if created]
    ingest_s = time.monotonic() - t
    t = time.monotonic()
    usable = 0
    for s in range(0, len(ids), 50):
        analyses = intake.windows_process(window_ids=ids[s:s + 50])
        ok = [k for k, a in analyses.items() if a.usable]
        usable += len(ok)
        if ok:
            estimation.windows_estimate(window_ids=ok, analyses=analyses)
    process_s = time.monotonic() - t
    before = sizes()
    t = time.monotonic()
    # The clock at which a 30-day retention ends where cycle c - keep + 1 begins: the cycles
    # before are purged, the last `keep` keep their raw signal (their processing has long settled).
    at = base + dt.timedelta(days=c - keep + 1 + 30)
    result = retention.raw_windows_purge(now=at, retention_days=30)
    purge_s = time.monotonic() - t
    vacuum()
    print("CYCLE=" + json.dumps({"cycle": c, "windows": len(ids), "usable": usable, "ingest_s": ingest_s,
                                 "process_s": process_s, "purge_s": purge_s, "purged": result.purged,
                                 "bytes_freed": result.bytes_freed, "before": before, "after": sizes()}), flush=True)

# Backlog for the concurrent purge: old processed windows of one wearable, 31 KiB of real signal each.
blob = pack_window(templates[0].channels)
owner = devices[patients[0]]
t = time.monotonic()
with connection.cursor() as cursor:
    for start in range(0, backlog, 5000):
        cursor.execute('''
            INSERT INTO monitoring_signalwindow (device_id, patient_id, sequence, recorded_at, duration_s, ecg_fs, ppg_fs,
                encoding, raw, raw_sha256, raw_bytes, firmware, received_at, status, enqueued_at, processed_at, failure)
            SELECT %s, %s, 5000000 + g, %s + g * interval '300 seconds', 30, 250, 250, 'compact', %s, %s, %s, '1',
                   now(), 'processed', now(), now() - interval '3 days', ''
            FROM generate_series(%s, %s) g''',
            [owner.pk, owner.patient_id, now0 - dt.timedelta(days=400), blob, sha256_hex(blob), len(blob),
             start, min(start + 5000, backlog) - 1])
vacuum()
backlog_s = time.monotonic() - t

# Ingest: batches of one wearable's windows (recorded over the last day; stored, not yet processed,
# so never eligible for purging).
latency_device = devices[patients[-1]]
state = {"seq": 9_000_000}


def ingest_batch():
    seq = state["seq"]
    state["seq"] += batch
    chunk = uploads(now0 - dt.timedelta(days=1) + dt.timedelta(seconds=30 * (seq - 9_000_000)), batch, seq, 30)
    t = time.perf_counter()
    stored = intake.windows_receive(device=latency_device, uploads=chunk)
    assert all(created for _, created in stored)
    return time.perf_counter() - t


for _ in range(3):  # warm-up
    ingest_batch()
quiet = [ingest_batch() for _ in range(spec["quiet_batches"])]
purger = subprocess.Popen([sys.executable, "-c", spec["purge_script"]], env=os.environ, stdout=subprocess.PIPE, text=True)
assert purger.stdout.readline().strip() == "STARTED"
during = []
while purger.poll() is None:
    during.append(ingest_batch())
purge = json.loads(next(line[6:] for line in purger.stdout.read().splitlines() if line.startswith("PURGE=")))
after_quiet = [ingest_batch() for _ in range(spec["quiet_batches"])]
# The purge's candidate query must walk the partial index, not the purged history: asked once most
# rows are purged (the backlog too), as in production, with fresh statistics.
vacuum()
purge_now = timezone.now() + PURGE_AHEAD
query = (SignalWindow.objects.filter(retention.TO_EXAMINE, recorded_at__lt=purge_now - dt.timedelta(days=30),
                                     processed_at__lt=purge_now - retention.PROCESSING_SETTLED)
         .order_by("recorded_at", "id").values_list("id", "recorded_at", "received_at")[:retention.DEFAULT_PAGE_SIZE])
print("PLAN=" + json.dumps(query.explain()), flush=True)

# What finding the windows a suggestion rests on costs: N suggestions of a full 7-day look-back of
# 5-min estimates (2,016 ids each), read and scanned against a page of windows with estimates.
from therapy.models import PlanVersion, Suggestion
plan_version = PlanVersion.objects.filter(patient_id=patients[0]).order_by("-version").first()
made = Suggestion.objects.bulk_create([Suggestion(
    patient_id=patients[0], plan_version=plan_version, kind="step_up", from_rung=0, to_rung=1, from_regimen="-",
    to_regimen="-", evidence={}, estimate_ids=list(range(10**8 + 2016 * k, 10**8 + 2016 * (k + 1))), model_versions=[],
    policy_version="bench", auto_release=False, status="rejected") for k in range(spec["suggestions"])], batch_size=200)
Suggestion.objects.filter(pk__in=[m.pk for m in made]).update(created_at=now0 - dt.timedelta(days=3))
page = list(SignalWindow.objects.filter(estimates__isnull=False).values_list("id", flat=True)[:retention.DEFAULT_BATCH_SIZE])
t = time.monotonic()
behind = SuggestionsKeepTheirWindows().windows_behind_suggestions(window_ids=page, created_from=now0 - dt.timedelta(days=9), created_to=now0)
keep_read = {"suggestions": len(made), "ids_each": 2016, "seconds": time.monotonic() - t, "windows": len(page),
             "behind": len(behind)}
print("LATENCY=" + json.dumps({"quiet": quiet + after_quiet, "during": during, "purge": purge, "backlog": backlog,
                               "backlog_s": backlog_s, "keep_read": keep_read}), flush=True)
"""

# The purge in a process of its own, as the Celery task runs it, over the backlog.
PURGE_SCRIPT = r"""
import datetime as dt, json, time
import django
django.setup()
from django.utils import timezone
from monitoring.ingest import retention
print("STARTED", flush=True)
t = time.monotonic()
r = retention.raw_windows_purge(now=timezone.now() + dt.timedelta(days=30), retention_days=30)
print("PURGE=" + json.dumps({"purged": r.purged, "bytes_freed": r.bytes_freed, "seconds": time.monotonic() - t}), flush=True)
"""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--patients", type=int, default=4)
    p.add_argument("--days", type=int, default=8, help="cycles: one day of every patient's windows each, then a purge")
    p.add_argument("--keep-days", type=int, default=2, help="the last cycles whose windows keep their raw signal")
    p.add_argument("--batch", type=int, default=50, help="windows per windows_receive call (the batch API takes up to 100)")
    p.add_argument("--backlog", type=int, default=20_000, help="old windows purged while ingest is timed")
    p.add_argument("--quiet-batches", type=int, default=40, help="batches timed with no purge running, before and after")
    p.add_argument("--suggestions", type=int, default=2000,
                   help="suggestions of 2,016 estimate ids each, read once to time finding the windows to keep")
    args = p.parse_args(argv)
    if args.patients < 1 or not 1 <= args.keep_days <= args.days - 4 or args.days > 27 or not 1 <= args.batch <= 100 \
            or args.backlog < 1000:
        p.error("--patients >= 1, 1 <= --keep-days <= --days - 4, --days <= 27, 1 <= --batch <= 100, --backlog >= 1000")
    return args


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))] if ordered else float("nan")


def main(argv=None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    print(f"bench/retention: {args.patients} patients x {args.days} days of 5-min windows, purged after each day but "
          f"the last {args.keep_days}; "
          f"backlog {args.backlog:,} windows; {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
          f"load average {load_average()} (2 cores, shared)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="clinops-bench-retention-"))
    redis_proc = None
    try:
        redis_port = free_port()
        redis_proc = start_redis(port=redis_port, data_dir=work / "redis")
        with temporary_postgres() as database_url:
            env = production_env(database_url=database_url, redis_port=redis_port, work=work)
            run_checked([PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, what="manage.py migrate")
            # Before the first cycle's windows (28 days ago), within the uploads' 30-day limit.
            calibrated_at = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(days=29)
            clinic = clinic_create(env=env, tag="ret", patients=args.patients, plan=True, calibrated_at=calibrated_at)
            spec = {"patients": clinic.patients, "days": args.days, "keep_days": args.keep_days, "batch": args.batch,
                    "backlog": args.backlog,
                    "quiet_batches": args.quiet_batches, "suggestions": args.suggestions, "purge_script": PURGE_SCRIPT}
            out = run_checked([PYTHON, "-c", MEASURE_SCRIPT, json.dumps(spec)], env=env, what="measurement", timeout=7200)
    except KeyboardInterrupt:
        print("bench/retention: interrupted; stopping servers", file=sys.stderr)
        return 130
    finally:
        stop(redis_proc)
        shutil.rmtree(work, ignore_errors=True)
    return report(out, args)


def report(out: str, args) -> int:
    lines = out.splitlines()

    def values(prefix):
        return [json.loads(line[len(prefix):]) for line in lines if line.startswith(prefix)]

    start, cycles, plan, latency = values("START=")[0], values("CYCLE="), values("PLAN=")[0], values("LATENCY=")[0]
    print("cycle  windows  ingest s  process s  purge s  purged | after ingest MiB: toast  heap  idx  analyses  estimates"
          " | after purge+VACUUM MiB: toast  heap  idx  analyses  estimates  all")
    for c in cycles:
        b, a = c["before"], c["after"]
        print(f"{c['cycle']:>5}  {c['windows']:>7}  {c['ingest_s']:>8.1f}  {c['process_s']:>9.1f}  {c['purge_s']:>7.2f}  "
              f"{c['purged']:>6} | {b['toast'] / MiB:>21.1f}  {b['heap'] / MiB:>4.1f}  {b['indexes'] / MiB:>3.1f}  "
              f"{b['analyses'] / MiB:>8.2f}  {b['estimates'] / MiB:>9.2f} | {a['toast'] / MiB:>28.1f}  {a['heap'] / MiB:>4.1f}  "
              f"{a['indexes'] / MiB:>3.1f}  {a['analyses'] / MiB:>8.2f}  {a['estimates'] / MiB:>9.2f}  {a['all'] / MiB:>5.1f}")
    per_cycle, keep = cycles[0]["windows"], args.keep_days
    first = cycles[0]
    before_per_window = (first["before"]["all"] - start["all"]) / per_cycle
    # Steady state: from two cycles after purging began, freed raw bytes and dead row versions of the
    # cycles before are reused; what still grows from cycle to cycle is what a window costs at rest.
    pairs = [(prev, cur) for prev, cur in zip(cycles, cycles[1:]) if cur["cycle"] >= keep + 2]
    parts = {name: sum((cur["after"][name] - prev["after"][name]) / cur["windows"] for prev, cur in pairs) / len(pairs)
             for name in ("heap", "indexes", "toast", "analyses", "estimates", "all")}
    # The TOAST table is left out: flat once purging runs (reused, and VACUUM gives back its end),
    # its growth per cycle swings by a cycle's raw bytes either way (the "no bloat" line).
    rest_per_window = sum(parts[name] for name in ("heap", "indexes", "analyses", "estimates"))
    toast = [c["after"]["toast"] for c in cycles]
    raw_per_cycle = max(c["bytes_freed"] for c in cycles)
    purging = [c for c in cycles if c["cycle"] >= keep]
    purge_rate = sum(c["purged"] for c in purging) / sum(c["purge_s"] for c in purging)
    print(f"RESULT before purge: {before_per_window:,.0f} bytes per window (raw signal, row, analysis, estimate, indexes) "
          f"= {before_per_window * WINDOWS_A_DAY / MiB:.2f} MiB per patient per day")
    print(f"RESULT at rest after retention: {rest_per_window:,.0f} bytes per window = "
          f"{rest_per_window * WINDOWS_A_DAY / 1024:.0f} KiB per patient per day "
          f"(window row {parts['heap']:,.0f} + its indexes {parts['indexes']:,.0f} + analysis {parts['analyses']:,.0f} "
          f"+ estimate {parts['estimates']:,.0f}, each with its indexes; mean growth per cycle over cycles "
          f"{pairs[0][1]['cycle']}..{pairs[-1][1]['cycle']})")
    # Purging from cycle `keep` on, the TOAST table holds at most keep + 1 cycles of raw signal
    # (VACUUM also gives back freed pages at the table's end, hence the ups and downs).
    toast_per_cycle = first["before"]["toast"] - start["toast"]
    bound = (keep + 1) * toast_per_cycle * 1.1
    print(f"RESULT no bloat: TOAST after each purge + VACUUM {', '.join(f'{t / MiB:.1f}' for t in toast)} MiB over "
          f"{len(cycles)} cycles of {raw_per_cycle / MiB:.1f} MiB raw each ({toast_per_cycle / MiB:.1f} MiB of TOAST), "
          f"purging from cycle {keep} on (without the purge it would reach "
          f"{(first['before']['toast'] + toast_per_cycle * (len(cycles) - 1)) / MiB:.1f} MiB); "
          f"windows+analyses+estimates {cycles[0]['after']['all'] / MiB:.1f} -> {cycles[-1]['after']['all'] / MiB:.1f} MiB")
    print(f"RESULT purge rate: {purge_rate:,.0f} windows/s in the cycles; backlog of {latency['backlog']:,}: "
          f"{latency['purge']['purged']:,} purged in {latency['purge']['seconds']:.1f} s "
          f"({latency['purge']['purged'] / latency['purge']['seconds']:,.0f} windows/s, while ingest ran)")
    quiet, during = [v * 1000 for v in latency["quiet"]], [v * 1000 for v in latency["during"]]
    print(f"RESULT ingest of {args.batch}-window batches (windows_receive): no purge p50 {pct(quiet, .5):.1f} ms, "
          f"p95 {pct(quiet, .95):.1f} ms, max {max(quiet):.1f} ms ({len(quiet)} batches); during the purge p50 "
          f"{pct(during, .5):.1f} ms, p95 {pct(during, .95):.1f} ms, max {max(during, default=float('nan')):.1f} ms "
          f"({len(during)} batches) | load average {load_average()}")
    kr = latency["keep_read"]
    per_suggestion_ms = kr["seconds"] * 1000 / kr["suggestions"]
    # An hourly run at ~3,500 patients reads about 9 days of suggestions (an hour of windows, the
    # 7-day look-back, a day's margin on each side): with one suggestion a patient a week, ~4,500.
    print(f"RESULT finding the windows to keep: {kr['suggestions']:,} suggestions x {kr['ids_each']:,} estimate ids read "
          f"and scanned in {kr['seconds']:.2f} s = {per_suggestion_ms:.2f} ms per suggestion (against {kr['windows']} "
          f"windows); an hourly run at 3,500 patients with one suggestion a patient a week reads ~4,500: "
          f"~{4500 * per_suggestion_ms / 1000:.0f} s per page of windows")
    uses_index = "window_raw_to_examine" in plan
    print(f"RESULT candidate query: {'walks' if uses_index else 'DOES NOT walk'} window_raw_to_examine:")
    for line in plan.splitlines():
        print(f"  {line}")
    ok = max(toast[keep:]) <= bound and uses_index
    if not ok:
        print(f"bench/retention: FAILED (the TOAST table went past {bound / MiB:.1f} MiB = keep-days + 1 cycles, "
              "or the candidate query did not use its index)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
