"""Raw-window retention: after RAW_WINDOW_RETENTION_DAYS a finished window's raw bytes are dropped
(row, SHA-256, size, analyses and estimates stay), never those a suggestion rests on; one audit row
per run; whatever reads the raw bytes says the window was purged instead of failing."""
import datetime as dt
import threading

import pytest
import time_machine
from django.db import connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from clinops.base.models import AuditEvent
from monitoring import tasks
from monitoring.ingest import intake, retention
from monitoring.ingest.encoding import sha256_hex
from monitoring.models import BPEstimate, SignalWindow, WindowAnalysis, WindowStatus
from monitoring.signals.pipeline import PIPELINE_VERSION
from tests.factories import make_admin
from tests.therapy.conftest import NOW, clinic, plan, store_estimates, week_of  # noqa: F401 - fixtures
from therapy import retention as therapy_retention
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Suggestion, SuggestionKind, SuggestionStatus

pytestmark = pytest.mark.django_db

BLOB = bytes(range(256)) * 124  # 31,744 bytes: the size of a real 30-s window at rest
RETENTION_DAYS = 30


def with_raw(windows) -> list[SignalWindow]:
    """Give windows stored without signal bytes a real-sized raw signal, processed a minute after
    they were recorded (as the pipeline does)."""
    ids = [w.pk for w in windows]
    for window in SignalWindow.objects.filter(pk__in=ids):
        window.raw, window.raw_sha256, window.raw_bytes = BLOB, sha256_hex(BLOB), len(BLOB)
        if window.status != WindowStatus.RECEIVED:
            window.processed_at = window.recorded_at + dt.timedelta(minutes=1)
        window.save()
    return list(SignalWindow.objects.filter(pk__in=ids).order_by("recorded_at"))


def window_at(clinic, *, days_ago: float, status: str = WindowStatus.PROCESSED, analysed: bool = True) -> SignalWindow:
    """A window of the clinic's wearable recorded `days_ago` before NOW (no estimate)."""
    at = NOW - dt.timedelta(days=days_ago)
    window = SignalWindow.objects.create(
        device=clinic["device"], patient=clinic["patient"], sequence=SignalWindow.objects.count() + 10_000,
        recorded_at=at, duration_s=30, ecg_fs=250, ppg_fs=250, encoding="compact", raw=b"", raw_sha256="",
        raw_bytes=0, firmware="1", enqueued_at=at, status=status)
    if analysed and status in (WindowStatus.PROCESSED, WindowStatus.REJECTED):
        WindowAnalysis.objects.create(window=window, pipeline_version=PIPELINE_VERSION,
                                      usable=status == WindowStatus.PROCESSED, processing_ms=1.0)
    return with_raw([window])[0]


def estimated_windows(clinic, values, *, now=NOW) -> list[SignalWindow]:
    """Windows with their analysis and live estimate: values = [(hours before `now`, sbp, dbp)]."""
    before = set(SignalWindow.objects.values_list("pk", flat=True))
    store_estimates(clinic["patient"], clinic["device"], values, now=now)
    return with_raw(SignalWindow.objects.exclude(pk__in=before))


def purge(**kwargs) -> retention.RawPurgeResult:
    return retention.raw_windows_purge(now=kwargs.pop("now", NOW), retention_days=kwargs.pop("retention_days", RETENTION_DAYS),
                                       **kwargs)


@pytest.mark.both_databases  # the batches' row locks and the partial index, on PostgreSQL too
def test_old_finished_windows_lose_their_raw_bytes_and_keep_everything_else(clinic):
    processed = estimated_windows(clinic, [(40 * 24, 140, 88)])[0]
    rejected = window_at(clinic, days_ago=41, status=WindowStatus.REJECTED)
    failed = window_at(clinic, days_ago=42, status=WindowStatus.FAILED)
    analyses, estimates = WindowAnalysis.objects.count(), list(BPEstimate.objects.values())

    result = purge(batch_size=2, page_size=2)

    assert (result.purged, result.kept_for_decision, result.bytes_freed) == (3, 0, 3 * len(BLOB))
    assert result.cutoff == NOW - dt.timedelta(days=RETENTION_DAYS) and result.complete
    for window in (processed, rejected, failed):
        stored = SignalWindow.objects.get(pk=window.pk)
        assert bytes(stored.raw) == b"" and stored.raw_purged_at == NOW and stored.raw_kept_at is None
        assert (stored.raw_sha256, stored.raw_bytes, stored.status, stored.processed_at) == (
            window.raw_sha256, len(BLOB), window.status, window.processed_at)
    assert WindowAnalysis.objects.count() == analyses and list(BPEstimate.objects.values()) == estimates


def test_the_windows_a_suggestion_rests_on_keep_their_raw_signal(clinic, plan):
    """A real evaluation, 31 days ago, proposed a step from a week of estimates: those windows stay
    whole; an older window of the same patient that no suggestion names does not."""
    plan(auto_step_up=True, max_auto_rung=3)
    then = NOW - dt.timedelta(days=31)
    with time_machine.travel(then):  # uploaded, estimated and evaluated then
        evidence = estimated_windows(clinic, week_of(148, 92), now=then)
        suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=then)
        unused = estimated_windows(clinic, [(24 * 20, 140, 88)], now=then)[0]
    assert suggestion.kind == SuggestionKind.STEP_UP and len(suggestion.estimate_ids) == len(evidence) == 14

    result = purge()

    assert (result.purged, result.kept_for_decision) == (1, 14)
    for window in SignalWindow.objects.filter(pk__in=[w.pk for w in evidence]):
        assert bytes(window.raw) == BLOB and window.raw_purged_at is None and window.raw_kept_at == NOW
    assert SignalWindow.objects.get(pk=unused.pk).raw_purged_at == NOW
    # Kept for good: a later run does not look at them again.
    assert (purge(now=NOW + dt.timedelta(days=400)).kept_for_decision, SignalWindow.objects.filter(raw=b"").count()) == (0, 1)


def test_a_window_named_only_by_an_escalation_source_is_kept(clinic, plan):
    current = plan()
    then = NOW - dt.timedelta(days=40)
    with time_machine.travel(then):
        window = estimated_windows(clinic, [(1, 190, 125)], now=then)[0]
    estimate = BPEstimate.objects.get(window=window)
    with time_machine.travel(then + dt.timedelta(minutes=5)):
        Suggestion.objects.create(
            patient=clinic["patient"], plan_version=current, kind=SuggestionKind.ESCALATE, from_rung=0, to_rung=0,
            from_regimen="-", to_regimen="-", evidence={"source": "none"}, estimate_ids=[], policy_version="test",
            auto_release=False, urgent=True, status=SuggestionStatus.REJECTED,
            escalations=[{"kind": "crisis", "reason": "crisis", "seek_care": True,
                          "sources": [f"cuff:{estimate.pk + 1000}", f"estimate:{estimate.pk}"]}])

    assert (purge().purged, SignalWindow.objects.get(pk=window.pk).raw_kept_at) == (0, NOW)


def test_only_the_suggestions_that_could_rest_on_the_windows_are_read(clinic, plan, monkeypatch):
    """Windows recorded and received 40 days ago: a suggestion made before they arrived, or later
    than their time + the longest look-back (7 days) + a day, cannot rest on them and is not read."""
    current = plan()
    then = NOW - dt.timedelta(days=40)
    with time_machine.travel(then):
        estimated_windows(clinic, [(1, 150, 95)], now=then)
    for days, marker in ((-2, 1), (2, 2), (9, 3)):
        with time_machine.travel(then + dt.timedelta(days=days)):
            Suggestion.objects.create(
                patient=clinic["patient"], plan_version=current, kind=SuggestionKind.STEP_UP, from_rung=0, to_rung=1,
                from_regimen="-", to_regimen="-", evidence={}, estimate_ids=[-marker], policy_version="test",
                auto_release=False, status=SuggestionStatus.REJECTED)
    read = []
    real = therapy_retention.referenced_estimate_ids
    monkeypatch.setattr(therapy_retention, "referenced_estimate_ids", lambda ids, escalations: read.append(ids) or real(ids, escalations))

    assert purge().purged == 1
    assert read == [[-2]]


def test_young_windows_and_windows_not_finished_keep_their_raw_signal(clinic):
    young = window_at(clinic, days_ago=RETENTION_DAYS - 1)
    waiting = window_at(clinic, days_ago=40, status=WindowStatus.RECEIVED)
    late = window_at(clinic, days_ago=41)  # uploaded late: processed an hour ago, its estimate may be coming
    SignalWindow.objects.filter(pk=late.pk).update(processed_at=NOW - dt.timedelta(hours=1))

    assert purge().purged == 0
    assert SignalWindow.objects.filter(pk__in=[young.pk, waiting.pk, late.pk], raw=BLOB, raw_purged_at=None,
                                       raw_kept_at=None).count() == 3


def test_the_cut_off_goes_back_when_a_current_plan_looks_back_further_than_the_retention(clinic, plan):
    """A 60-day look-back may still rest a suggestion on a 40-day-old window: it waits."""
    plan(look_back_days=60)
    within = window_at(clinic, days_ago=40)
    beyond = window_at(clinic, days_ago=62)

    result = purge()

    assert result.cutoff == NOW - dt.timedelta(days=61) and result.longest_look_back_days == 60
    assert result.purged == 1 and SignalWindow.objects.get(pk=beyond.pk).raw_purged_at == NOW
    assert SignalWindow.objects.get(pk=within.pk).raw_purged_at is None


def test_a_second_run_changes_nothing_and_each_run_writes_one_audit_row_with_its_counts(clinic):
    for days_ago in (40, 41, 42):
        window_at(clinic, days_ago=days_ago)
    first = purge(batch_size=1, page_size=2)
    assert first.purged == 3

    second = purge(now=NOW + dt.timedelta(minutes=1))

    assert (second.purged, second.kept_for_decision, second.bytes_freed) == (0, 0, 0)
    assert SignalWindow.objects.filter(raw_purged_at=NOW).count() == 3
    event = AuditEvent.objects.get(action="window.raw_purge")  # one per run that changed something
    assert event.actor_label == "system" and event.patient is None
    assert event.detail["purged"] == 3 and event.detail["kept_for_decision"] == 0
    assert event.detail["bytes_freed"] == 3 * len(BLOB) and event.detail["retention_days"] == RETENTION_DAYS
    assert event.detail["cutoff"] == (NOW - dt.timedelta(days=RETENTION_DAYS)).isoformat()


def test_reprocessing_a_purged_window_records_why_and_changes_nothing_else(clinic):
    window = window_at(clinic, days_ago=40, analysed=False)
    WindowAnalysis.objects.create(window=window, pipeline_version="signals-0.9", usable=True, processing_ms=1.0)
    purge()

    # e.g. a new pipeline version asked to re-run old windows
    assert intake.window_process(window_id=window.pk) is None
    assert intake.windows_process(window_ids=[window.pk]) == {}

    stored = SignalWindow.objects.get(pk=window.pk)
    assert stored.failure == f"raw signal purged on {NOW:%Y-%m-%d}: cannot be analysed by {PIPELINE_VERSION}"
    assert (stored.status, stored.processed_at, stored.raw_purged_at) == (WindowStatus.PROCESSED, window.processed_at, NOW)
    assert list(WindowAnalysis.objects.filter(window=window).values_list("pipeline_version", flat=True)) == ["signals-0.9"]


def test_a_purged_window_with_its_analysis_is_answered_as_before(clinic):
    window = window_at(clinic, days_ago=40)
    purge()
    analysis = intake.window_process(window_id=window.pk)
    assert analysis is not None and analysis.pipeline_version == PIPELINE_VERSION
    assert SignalWindow.objects.get(pk=window.pk).failure == ""


def test_the_sweeper_never_resends_a_purged_window(clinic, monkeypatch):
    sent = []
    monkeypatch.setattr(tasks.process_windows, "delay", lambda window_ids: sent.append(("process", window_ids)))
    monkeypatch.setattr(tasks.estimate_windows, "delay", lambda window_ids: sent.append(("estimate", window_ids)))
    store_estimates(clinic["patient"], clinic["device"], [(30, 140, 88)], now=timezone.now())  # calibrated
    purged = [window_at(clinic, days_ago=40), window_at(clinic, days_ago=41)]
    assert purge().purged == 2
    # Whatever state a purged window were left in, the sweeper's two queries pass it by: one
    # "still waiting" for 20 min, one processed 11 min ago without its estimate.
    now = timezone.now()
    SignalWindow.objects.filter(pk=purged[0].pk).update(status=WindowStatus.RECEIVED, enqueued_at=now - dt.timedelta(minutes=20))
    SignalWindow.objects.filter(pk=purged[1].pk).update(processed_at=now - dt.timedelta(minutes=11),
                                                        recorded_at=now - dt.timedelta(minutes=12),
                                                        enqueued_at=now - dt.timedelta(minutes=20))

    assert tasks.sweep_unprocessed_windows() == 0 and sent == []


def test_the_api_and_the_admin_say_the_raw_signal_was_purged(clinic):
    window = window_at(clinic, days_ago=40)
    kept = window_at(clinic, days_ago=5)
    purge()
    client = APIClient()
    client.force_login(clinic["clinician"])  # the care team

    body = client.get(f"/api/v1/windows/{window.pk}/").json()
    assert body["raw_signal"] == f"raw signal purged on {NOW:%Y-%m-%d} (SHA-256 and size kept)"
    assert body["raw_purged_at"] is not None and body["status"] == WindowStatus.PROCESSED
    assert client.get(f"/api/v1/windows/{kept.pk}/").json()["raw_signal"] == f"stored ({len(BLOB)} bytes)"

    admin = APIClient()
    admin.force_login(make_admin())
    page = admin.get(f"/admin/monitoring/signalwindow/{window.pk}/change/")
    assert page.status_code == 200 and f"raw signal purged on {NOW:%Y-%m-%d}" in page.content.decode()
    assert f"raw signal purged on {NOW:%Y-%m-%d}" in admin.get("/admin/monitoring/signalwindow/").content.decode()


def test_the_task_purges_with_the_configured_retention(clinic, settings):
    settings.RAW_WINDOW_RETENTION_DAYS = 20
    old, young = window_at(clinic, days_ago=25), window_at(clinic, days_ago=15)

    outcome = tasks.purge_raw_windows.apply()

    assert outcome.successful(), outcome.traceback
    assert outcome.result["purged"] == 1 and outcome.result["complete"]
    assert SignalWindow.objects.get(pk=old.pk).raw_purged_at is not None
    assert SignalWindow.objects.get(pk=young.pk).raw_purged_at is None
    assert tasks.purge_raw_windows.apply().result["purged"] == 0  # a retry or a second run: nothing more
    assert tasks.purge_raw_windows.autoretry_for == tasks.process_window.autoretry_for


def test_a_run_stops_at_its_window_limit_and_the_next_one_goes_on(clinic):
    windows = [window_at(clinic, days_ago=40 + k) for k in range(5)]
    first = purge(max_windows=3)
    assert (first.purged, first.complete) == (3, False)
    # Oldest first.
    assert {w.pk for w in windows[2:]} == set(SignalWindow.objects.filter(raw=b"").values_list("pk", flat=True))
    assert purge(max_windows=3).purged == 2


def test_a_run_out_of_time_starts_no_batch_and_leaves_the_rest_to_the_next(clinic):
    window = window_at(clinic, days_ago=40)
    assert (purge(max_seconds=0).purged, purge(max_seconds=0).complete) == (0, False)
    assert purge(max_seconds=60).purged == 1 and SignalWindow.objects.get(pk=window.pk).raw_purged_at == NOW


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ingest_is_not_held_back_while_a_purge_batch_holds_its_rows(clinic, processed_window_at):
    """A batch locks only its own rows, FOR NO KEY UPDATE: a new window is stored, and an analysis or
    estimate can still point at a window being purged (a foreign key only needs FOR KEY SHARE)."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")
    old = estimated_windows(clinic, [(24 * 40, 140, 88)])[0]
    holding, release, counts = threading.Event(), threading.Event(), []

    def purge_batch_and_hold():
        try:
            with transaction.atomic():
                counts.append(retention._batch_purge(window_ids=[old.pk], keep=set(), now=NOW))
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=purge_batch_and_hold)
    thread.start()
    try:
        assert holding.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")  # any wait for the purge fails the test
        fresh = processed_window_at(timezone.now().replace(microsecond=0) - dt.timedelta(minutes=5))
        WindowAnalysis.objects.create(window=old, pipeline_version="signals-next", usable=True, processing_ms=1.0)
        assert fresh.status == WindowStatus.PROCESSED
    finally:
        release.set()
        thread.join()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert counts == [(1, 0, len(BLOB))] and SignalWindow.objects.get(pk=old.pk).raw_purged_at == NOW

