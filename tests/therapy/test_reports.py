"""Stored monitoring reports: pipeline health, clinician-AI agreement and population per care team,
on known sets with exact numbers; the pure math on its own."""
import datetime as dt
import itertools
import json
from collections import Counter

import pytest
from django.utils import timezone

from clinops.base.audit import SYSTEM
from clinops.base.models import AuditEvent
from monitoring.bp import registry
from monitoring.models import MonitoringReport, MonitoringReportKind, SignalWindow, WindowAnalysis, WindowStatus
from patients.models import Device
from tests.factories import make_clinician, make_device, make_patient, make_team
from tests.monitoring.test_bp_registry import register
from tests.therapy.conftest import AGREEING, store_agreement, store_estimates, week_of
from therapy import reports, services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import LatestEvaluation, PlanVersion, Suggestion, SuggestionStatus
from therapy.selectors import patients_with_triage

_sequence = itertools.count(1)


# --- Pure math ------------------------------------------------------------------------------------

def test_percentiles_interpolate_between_ranks():
    assert reports.percentile([], 50) is None
    assert reports.percentile([7.0], 95) == 7.0
    assert reports.percentile([4, 1, 3, 2], 50) == 2.5
    assert reports.percentile(range(1, 11), 95) == pytest.approx(9.55)
    assert reports.pct(3, 10) == 30.0 and reports.pct(1, 3) == 33.33 and reports.pct(1, 0) is None


def test_rejections_are_tallied_per_key_and_reason():
    judged = [("a", 10, 4), ("a", 5, 0), ("b", 2, 1)]
    rejected = [("a", ["flatline"], 3), ("a", ["clipping", "flatline", "clipping"], 1), ("b", [], 1)]
    tally = reports.tally_rejections(judged, rejected)
    assert tally["a"] == {"judged": 15, "usable": 11, "rejected": 4, "rejected_pct": 26.67, "rejected_by_reason": {
        "flatline": {"count": 4, "pct": 26.67}, "clipping": {"count": 1, "pct": 6.67}}}
    assert tally["b"]["rejected_by_reason"] == {"unspecified": {"count": 1, "pct": 50.0}}


def test_override_rate_and_routing_category():
    assert reports.override_summary(["approved", "modified", "rejected", "approved"]) == {
        "reviewed": 4, "approved": 2, "modified": 1, "rejected": 1, "overridden": 2, "override_pct": 50.0}
    assert reports.override_summary([])["override_pct"] is None
    assert reports.routing_category([
        "automatic steps up are not allowed by this plan (allowed automatically: none)",
        "not enough data: 3 estimates on 1 distinct days"]) == "autonomy not granted by the plan"
    assert reports.routing_category(["urgent: crisis"]) == "urgent escalation"
    assert reports.routing_category([]) == "none"
    assert reports.routing_category(["something new"]) == "other"
    failure = "WindowDataCorrupt: stored signal does not match its SHA-256"
    assert reports.failure_category(failure) == "WindowDataCorrupt"


def test_inertia_counts_changes_in_the_window_and_days_since_the_last_one():
    now = dt.datetime(2025, 6, 30, tzinfo=dt.timezone.utc)
    days = lambda n: now - dt.timedelta(days=n)  # noqa: E731
    result = reports.inertia([
        reports.UncontrolledPatient(1, days(3), None, days(90)),       # proposal 3 days ago
        reports.UncontrolledPatient(2, days(40), days(20), days(90)),  # rung moved 20 days ago
        reports.UncontrolledPatient(3, days(40), None, days(90)),      # 40 days without a change
        reports.UncontrolledPatient(4, None, None, days(90)),          # never: since the plan was set
    ], now=now, window_days=30)
    counts = (result["uncontrolled"], result["with_change"], result["with_change_pct"], result["inertia_pct"])
    assert counts == (4, 2, 50.0, 50.0)
    without = [(p["patient_id"], p["days_without_change"]) for p in result["patients_without_change"]]
    assert without == [(4, 90.0), (3, 40.0)]
    assert result["days_without_change"] == {"median": 65.0, "max": 90.0}
    assert reports.last_rung_change_at([(0, days(90)), (0, days(50)), (1, days(20)), (1, days(5))]) == days(20)


# --- Pipeline ---------------------------------------------------------------------------------------

def _window(device, now, *, status, processed_ago_h=1.0, latency_ms=100.0, reasons=(), failure="", analyses=None):
    """A window of `device` processed `processed_ago_h` hours before `now`, `latency_ms` after it
    arrived; its analyses [(usable, reasons)] oldest first (default: one matching the status)."""
    processed_at = now - dt.timedelta(hours=processed_ago_h)
    received_at = processed_at - dt.timedelta(milliseconds=latency_ms)
    sequence = next(_sequence)
    # Recorded just before it arrived; one second apart, as a device records one window at a time.
    window = SignalWindow.objects.create(
        device=device, patient=device.patient, sequence=sequence, recorded_at=received_at - dt.timedelta(seconds=sequence),
        duration_s=30,
        ecg_fs=250, ppg_fs=250, encoding="compact", raw=b"", raw_sha256="", raw_bytes=0, firmware=device.firmware,
        enqueued_at=received_at, status=status, failure=failure,
        processed_at=None if status == WindowStatus.RECEIVED else processed_at)
    SignalWindow.objects.filter(pk=window.pk).update(received_at=received_at)  # auto_now_add otherwise
    if analyses is None and status in (WindowStatus.PROCESSED, WindowStatus.REJECTED):
        analyses = [(status == WindowStatus.PROCESSED, list(reasons))]
    for i, (usable, why) in enumerate(analyses or ()):
        WindowAnalysis.objects.create(window=window, pipeline_version=f"signals-{i}", usable=usable, reasons=why,
                                      processing_ms=1.0)
    return window


@pytest.mark.django_db
def test_pipeline_report_on_a_known_day():
    now = timezone.now().replace(microsecond=0)
    a, b, c, d, e, f = (make_device(make_patient())[0] for _ in range(6))
    Device.objects.filter(pk__in=[a.pk, b.pk]).update(last_seen_at=now - dt.timedelta(minutes=5))
    Device.objects.filter(pk=c.pk).update(last_seen_at=now - dt.timedelta(hours=72))           # silent
    Device.objects.filter(pk=d.pk).update(registered_at=now - dt.timedelta(days=3))            # never seen: silent
    Device.objects.filter(pk=f.pk).update(last_seen_at=now - dt.timedelta(days=9), revoked_at=now)  # revoked
    # e: registered now, never seen: not silent yet.
    Device.objects.filter(pk=b.pk).update(firmware="2.1.0")
    b.refresh_from_db()

    # Device a: 10 windows judged in the last 24 h: 3 flatline, 1 clipping, 6 usable; latencies 100..1000 ms.
    verdicts = [["flatline"]] * 3 + [["clipping"]] + [None] * 6
    for i, why in enumerate(verdicts):
        if why is None:
            _window(a, now, status=WindowStatus.PROCESSED, latency_ms=100.0 * (i + 1))
        else:
            _window(a, now, status=WindowStatus.REJECTED, latency_ms=100.0 * (i + 1), reasons=why)
    # Device b: 10 usable windows, latencies 1100..2000 ms; one was judged unusable by an older
    # pipeline version and usable by the newer: the newer verdict is the one in force.
    for i in range(10):
        _window(b, now, status=WindowStatus.PROCESSED, latency_ms=1100.0 + 100.0 * i,
                analyses=[(False, ["too_few_beats"]), (True, [])] if i == 0 else None)
    # Outside the day, failures and the queue.
    _window(a, now, status=WindowStatus.REJECTED, processed_ago_h=30, reasons=["clipping"])
    _window(a, now, status=WindowStatus.FAILED, failure="WindowDataCorrupt: stored signal does not match its SHA-256")
    _window(a, now, status=WindowStatus.FAILED, processed_ago_h=30, failure="ValueError: old")
    _window(b, now, status=WindowStatus.RECEIVED, processed_ago_h=0.25)
    _window(b, now, status=WindowStatus.RECEIVED, processed_ago_h=5 / 60)

    payload = reports.pipeline_report(now=now)

    assert (payload["judged"], payload["rejected"], payload["rejected_pct"]) == (20, 4, 20.0)
    assert payload["rejected_by_reason"] == {"flatline": {"count": 3, "pct": 15.0},
                                             "clipping": {"count": 1, "pct": 5.0}}
    by_device = {row["device_id"]: row for row in payload["by_device"]}
    assert set(by_device) == {a.pk, b.pk}
    assert by_device[a.pk]["rejected_by_reason"] == {"flatline": {"count": 3, "pct": 30.0},
                                                     "clipping": {"count": 1, "pct": 10.0}}
    row = by_device[a.pk]
    assert (row["serial"], row["model"], row["firmware"]) == (a.serial, "Wrist-2", "2.0.1")
    assert row["patient_id"] == a.patient_id
    assert (by_device[b.pk]["rejected_pct"], by_device[b.pk]["firmware"]) == (0.0, "2.1.0")
    assert payload["by_device"][0]["device_id"] == a.pk  # worst first
    assert [(r["firmware"], r["judged"], r["rejected_pct"]) for r in payload["by_firmware"]] == [("2.0.1", 10, 40.0),
                                                                                               ("2.1.0", 10, 0.0)]
    silent = {row["device_id"]: row for row in payload["silent_devices"]}
    assert set(silent) == {c.pk, d.pk}
    assert (silent[c.pk]["hours_silent"], silent[c.pk]["patient_id"]) == (72.0, c.patient_id)
    assert silent[d.pk]["last_seen_at"] is None
    assert payload["latency_ms"] == {"n": 20, "p50": 1050.0, "p95": 1905.0}
    assert payload["queue"]["received_waiting"] == 2
    assert payload["queue"]["oldest_waiting_minutes"] == pytest.approx(15.0, abs=0.1)
    assert set(payload["queue"]["broker_queue_lengths"]) == {"celery", "therapy"}
    assert payload["failed"] == {"count": 1, "by_reason": {"WindowDataCorrupt": {
        "count": 1, "example": "WindowDataCorrupt: stored signal does not match its SHA-256"}}}
    for device in (a, c, d):  # ids and serials, never names
        assert device.patient.family_name not in json.dumps(payload)


def test_the_pipeline_report_counts_the_tasks_waiting_in_each_broker_queue(settings):
    import redis

    # A database of the test Redis no worker consumes: the messages stay where they are put.
    settings.CELERY_BROKER_URL = settings.CELERY_BROKER_URL.rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("celery", "therapy")
    try:
        client.rpush("celery", *["m"] * 3)
        client.rpush("therapy", *["m"] * 2)
        assert reports.broker_queue_lengths() == {"celery": 3, "therapy": 2}
    finally:
        client.delete("celery", "therapy")
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    assert reports.broker_queue_lengths() is None


@pytest.mark.django_db
def test_the_report_tasks_store_a_newer_report_each_run():
    make_team()
    for _ in range(2):
        reports.report_pipeline()
        reports.report_agreement()
        reports.report_population()
    for kind in (MonitoringReportKind.PIPELINE, MonitoringReportKind.AGREEMENT, MonitoringReportKind.POPULATION):
        assert MonitoringReport.objects.filter(kind=kind).count() == 2
    newest = MonitoringReport.objects.filter(kind=MonitoringReportKind.PIPELINE).first()
    assert newest.period_end - newest.period_start == dt.timedelta(hours=24)
    assert reports.report_pipeline.name == "monitoring.tasks.report_pipeline"


@pytest.mark.django_db
def test_the_pipeline_report_counts_the_daily_evaluations_overdue(settings):
    settings.THERAPY_EVALUATION_INTERVAL_S = 86_400
    now = timezone.now().replace(microsecond=0)
    team = make_team()
    clinician = make_clinician(team=team).user
    behind, device = _patient_with_plan(team, clinician, now)
    store_estimates(behind, device, week_of(148, 92), now=now)
    patient_therapy_evaluate(patient_id=behind.pk, now=now - dt.timedelta(hours=24, minutes=40))
    on_time, device = _patient_with_plan(team, clinician, now)
    store_estimates(on_time, device, week_of(148, 92), now=now - dt.timedelta(minutes=5))
    patient_therapy_evaluate(patient_id=on_time.pk, now=now - dt.timedelta(hours=23))
    no_plan = make_patient(team=team)  # nothing to evaluate
    store_estimates(no_plan, make_device(no_plan)[0], week_of(148, 92), now=now)

    assert reports.pipeline_report(now=now)["evaluation"] == {"patients_overdue": 1, "oldest_overdue_minutes": 40.0}

    # Never evaluated (the evaluation its plan asked for was lost): overdue since the plan was set.
    lost, _ = _patient_with_plan(team, clinician, now)
    LatestEvaluation.objects.filter(patient=lost).delete()
    PlanVersion.objects.filter(patient=lost).update(created_at=now - dt.timedelta(minutes=70))
    assert reports.pipeline_report(now=now)["evaluation"] == {"patients_overdue": 2, "oldest_overdue_minutes": 70.0}

    for patient in (behind, lost):
        patient_therapy_evaluate(patient_id=patient.pk, now=now)
    assert reports.pipeline_report(now=now)["evaluation"] == {"patients_overdue": 0, "oldest_overdue_minutes": None}


# --- Agreement --------------------------------------------------------------------------------------

def _patient_with_plan(team, clinician, now, **plan):
    patient = make_patient(team=team)
    device = make_device(patient)[0]
    created = services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="start",
                                   **plan)
    PlanVersion.objects.filter(pk=created.pk).update(created_at=now - dt.timedelta(days=60))
    return patient, device


@pytest.mark.django_db
def test_agreement_override_rate_per_model_version_and_time_to_decision():
    now = timezone.now().replace(microsecond=0)
    team = make_team()
    clinician = make_clinician(team=team).user

    def evaluated(values, trusted=False, **plan):
        patient, device = _patient_with_plan(team, clinician, now, **plan)
        store_estimates(patient, device, values, now=now)
        if trusted:
            store_agreement(patient, AGREEING, now=now)
        return patient, patient_therapy_evaluate(patient_id=patient.pk, now=now)

    under_m = [evaluated(week_of(148, 92)) for _ in range(2)]             # model "m" (the first active)
    registry.model_version_promote(actor=SYSTEM, model=register("m2", test_mae=3.9))
    under_m2 = [evaluated(week_of(148, 92)) for _ in range(2)]
    released = evaluated(week_of(104, 66), current_rung=2, auto_step_down=True, max_auto_rung=3, trusted=True)[1]
    waiting = evaluated(week_of(150, 93))[1]
    assert [s.model_versions for _, s in under_m + under_m2] == [["m"], ["m"], ["m2"], ["m2"]]
    assert (released.status, waiting.status) == (SuggestionStatus.AUTO_RELEASED, SuggestionStatus.PENDING_REVIEW)

    (p1, s1), (_, s2) = under_m
    (_, s3), (_, s4) = under_m2
    services.suggestion_approve(actor=clinician, suggestion_id=s1.pk)
    services.suggestion_approve(actor=clinician, suggestion_id=s2.pk, note="agreed")
    services.suggestion_reject(actor=clinician, suggestion_id=s3.pk, reason="white-coat effect suspected")
    services.suggestion_modify(actor=clinician, suggestion_id=s4.pk, to_rung=0, reason="recheck with a cuff first")
    # Acknowledged by the patient since: still an approval (the audit row says so, not the status).
    services.suggestion_acknowledge(actor=p1.user, suggestion_id=s1.pk)
    # Known times to decision: 2, 4, 6 and 10 h.
    for suggestion, hours in ((s1, 2), (s2, 4), (s3, 6), (s4, 10)):
        decided_at = AuditEvent.objects.get(object_type="therapy.Suggestion", object_id=str(suggestion.pk),
                                            action__in=list(reports.DECISION_ACTIONS)).at
        Suggestion.objects.filter(pk=suggestion.pk).update(created_at=decided_at - dt.timedelta(hours=hours))

    payloads = reports.agreement_reports(now=timezone.now())

    everything = payloads["all"]
    assert {k: everything[k] for k in ("reviewed", "approved", "modified", "rejected", "override_pct")} == {
        "reviewed": 4, "approved": 2, "modified": 1, "rejected": 1, "override_pct": 50.0}
    assert everything["by_model_version"]["m"]["override_pct"] == 0.0
    assert everything["by_model_version"]["m2"] == {"reviewed": 2, "approved": 0, "modified": 1, "rejected": 1,
                                                    "overridden": 2, "override_pct": 100.0}
    assert everything["by_kind"]["step_up"]["override_pct"] == 50.0
    assert everything["by_routing_category"]["autonomy not granted by the plan"]["reviewed"] == 4
    assert everything["time_to_decision_hours"] == {"n": 4, "p50": 5.0, "p95": 9.4}
    volume = (everything["suggestions_created"], everything["auto_released"], everything["auto_released_pct"])
    assert volume == (6, 1, 16.67)
    assert everything["queue"]["pending"] == 1
    assert [(o["suggestion_id"], o["reason"]) for o in everything["recent_overrides"]] == [
        (s4.pk, "recheck with a cuff first"), (s3.pk, "white-coat effect suspected")]
    assert set(payloads) == {"all", "model:m", "model:m2"}
    assert (payloads["model:m"]["reviewed"], payloads["model:m"]["override_pct"]) == (2, 0.0)
    assert (payloads["model:m2"]["override_pct"], payloads["model:m2"]["suggestions_created"],
            payloads["model:m2"]["auto_released"], payloads["model:m2"]["queue"]["pending"]) == (100.0, 4, 1, 1)
    assert payloads["model:m2"]["time_to_decision_hours"] == {"n": 2, "p50": 8.0, "p95": 9.8}

    stored = reports.agreement_reports_store(now=timezone.now())
    assert sorted(r.scope for r in stored) == ["all", "model:m", "model:m2"]
    assert {r.kind for r in stored} == {MonitoringReportKind.AGREEMENT}


# --- Population -------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_population_shares_match_the_patient_list_and_inertia_is_counted():
    now = timezone.now().replace(microsecond=0)
    team, other_team = make_team(), make_team()
    clinician = make_clinician(team=team).user

    def evaluated(values, *, team=team, last_seen_h=1.0, **plan):
        patient, device = _patient_with_plan(team, make_clinician(team=team).user if team is other_team else clinician,
                                             now, **plan)
        Device.objects.filter(pk=device.pk).update(last_seen_at=now - dt.timedelta(hours=last_seen_h))
        if values:
            store_estimates(patient, device, values, now=now)
            patient_therapy_evaluate(patient_id=patient.pk, now=now)
        return patient

    controlled = evaluated(week_of(125, 80))
    proposed = evaluated(week_of(148, 92))                                   # a step up proposed now
    stale = evaluated(week_of(148, 92))                                      # its proposal was 45 days ago
    Suggestion.objects.filter(patient=stale).update(created_at=now - dt.timedelta(days=45))
    never = evaluated([])                                                    # uncontrolled, nothing ever proposed
    LatestEvaluation.objects.create(
        patient=never, evaluated_at=now, plan_version=PlanVersion.objects.get(patient=never), outcome="hold",
        evidence={"mean_sbp_mmhg": 150.0, "mean_dbp_mmhg": 95.0, "sufficient": True}, policy_version="test")
    moved = evaluated([])                                                    # rung moved 10 days ago, held since
    rung = services.plan_rung_move(actor=clinician, patient=moved, to_rung=1, reason="approved at the visit")
    PlanVersion.objects.filter(pk=rung.pk).update(created_at=now - dt.timedelta(days=10))
    store_estimates(moved, moved.devices.get(), week_of(148, 92), now=now)
    assert patient_therapy_evaluate(patient_id=moved.pk, now=now) is None
    evaluated([(3, 150, 95), (9, 150, 95), (15, 150, 95)])                  # insufficient data
    evaluated(week_of(125, 80), last_seen_h=72)                              # device silent
    evaluated(week_of(150, 95) + [(1.0, 190, 125), (1.2, 192, 126)])        # crisis: escalated
    evaluated(week_of(148, 92), team=other_team)                             # not this team's

    payload = reports.population_report(team, now=now)

    assert payload["team_id"] == team.pk and payload["patients"] == 8
    assert payload["counts"] == {"escalated": 1, "device_silent": 1, "insufficient_data": 1, "uncontrolled": 4,
                                 "controlled": 1}
    assert payload["pct"] == {"escalated": 12.5, "device_silent": 12.5, "insufficient_data": 12.5, "uncontrolled": 50.0,
                              "controlled": 12.5}
    listed = Counter(r.triage.name.lower() for r in patients_with_triage(team.patients.all(), now=now))
    assert payload["counts"] == {name: listed[name] for name in reports.TRIAGE_NAMES}
    inertia = payload["inertia"]
    counts = (inertia["uncontrolled"], inertia["with_change"], inertia["with_change_pct"], inertia["inertia_pct"])
    assert counts == (4, 2, 50.0, 50.0)
    assert [(p["patient_id"], p["days_without_change"]) for p in inertia["patients_without_change"]] == [
        (never.pk, 60.0), (stale.pk, 45.0)]
    assert inertia["days_without_change"] == {"median": 52.5, "max": 60.0}
    assert "not stored" in inertia["basis"]
    assert controlled.pk not in {p["patient_id"] for p in inertia["patients_without_change"]}
    assert proposed.pk not in {p["patient_id"] for p in inertia["patients_without_change"]}

    stored = reports.population_reports_store(now=now)
    assert sorted(r.scope for r in stored) == sorted([f"team:{team.pk}", f"team:{other_team.pk}"])
    assert MonitoringReport.objects.get(scope=f"team:{other_team.pk}").payload["counts"]["uncontrolled"] == 1
