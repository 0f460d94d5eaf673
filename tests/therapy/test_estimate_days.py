"""Day totals of the live estimates: an evaluation reads whole quiet days as sums, and decides
exactly as it would estimate by estimate; a day with a crisis- or low-level reading is still read
one by one, so the escalation checks see it."""
import datetime as dt
import importlib
import math
import threading
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.db import connection, connections
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.bp import estimation
from monitoring.models import BPEstimate, EstimateDayTotals
from tests.therapy.conftest import NOW, store_estimates, week_of
from therapy import evaluation
from therapy.domain import EstimateDay, EstimateEvidence, PlanRules
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import LatestEvaluation, Suggestion
from therapy.titration import days_in_look_back, summarise

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 10, 15, 30, tzinfo=UTC)


def day_of(estimates: list[EstimateEvidence]) -> EstimateDay:
    """What monitoring's day totals hold for these estimates (one UTC day)."""
    return EstimateDay(
        day=estimates[0].recorded_at.astimezone(UTC).date(), n=len(estimates),
        sum_sbp_mmhg=sum(e.sbp_mmhg for e in estimates), sum_dbp_mmhg=sum(e.dbp_mmhg for e in estimates),
        sum_sq_sbp_mmhg2=sum(e.sbp_mmhg ** 2 for e in estimates), sum_sq_dbp_mmhg2=sum(e.dbp_mmhg ** 2 for e in estimates),
        min_sbp_mmhg=min(e.sbp_mmhg for e in estimates), max_sbp_mmhg=max(e.sbp_mmhg for e in estimates),
        min_dbp_mmhg=min(e.dbp_mmhg for e in estimates), max_dbp_mmhg=max(e.dbp_mmhg for e in estimates),
        sum_sbp_halfwidth_mmhg=sum(e.sbp_halfwidth_mmhg for e in estimates),
        sum_dbp_halfwidth_mmhg=sum(e.dbp_halfwidth_mmhg for e in estimates),
        min_interval_level=min(e.interval_level for e in estimates), n_flagged=sum(1 for e in estimates if e.flags),
        flags=tuple(dict.fromkeys(f for e in estimates for f in e.flags)),
        first_at=min(e.recorded_at for e in estimates), last_at=max(e.recorded_at for e in estimates),
    )


reading = st.builds(
    lambda minutes, sbp, dbp, hw, flagged: EstimateEvidence(
        recorded_at=T0 - dt.timedelta(minutes=minutes), sbp_mmhg=sbp, dbp_mmhg=dbp, sbp_halfwidth_mmhg=hw,
        dbp_halfwidth_mmhg=hw / 2, interval_level=0.9 if not flagged else 0.8,
        flags=("the active model is the carry-forward baseline",) if flagged else (), estimate_id=minutes + 1),
    st.integers(0, 9 * 24 * 60), st.floats(100.5, 179.5), st.floats(50, 119.5), st.floats(0, 20), st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(reading, min_size=0, max_size=60, unique_by=lambda e: e.recorded_at), st.floats(1, 10))
def test_whole_days_as_sums_give_the_evidence_of_the_estimates_one_by_one(estimates, look_back_days):
    rules = PlanRules(look_back_days=look_back_days)
    start = T0 - dt.timedelta(days=look_back_days)
    inside = sorted((e for e in estimates if start < e.recorded_at <= T0), key=lambda e: e.recorded_at)
    first_whole, today = start.date() + dt.timedelta(days=1), T0.date()
    by_day: dict[dt.date, list[EstimateEvidence]] = {}
    for e in inside:
        if first_whole <= e.recorded_at.date() < today:
            by_day.setdefault(e.recorded_at.date(), []).append(e)
    days = days_in_look_back([day_of(v) for v in by_day.values()], now=T0, look_back_days=look_back_days)
    one_by_one = [e for e in inside if e.recorded_at.date() not in by_day]

    plain = summarise(inside, rules=rules, usable_window_share=0.9, now=T0)
    summed = summarise(one_by_one, rules=rules, usable_window_share=0.9, now=T0, days=days)

    for name in ("n_estimates", "n_distinct_days", "n_flagged", "first_at", "last_at", "sufficient", "source",
                 "interval_level", "days_covered"):
        assert getattr(summed, name) == getattr(plain, name), name
    for name in ("wearable_mean_sbp_mmhg", "wearable_mean_dbp_mmhg", "mean_sbp_halfwidth_mmhg", "mean_dbp_halfwidth_mmhg"):
        a, b = getattr(summed, name), getattr(plain, name)
        assert (a is None and b is None) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9), name
    assert set(summed.flags) == set(plain.flags)
    assert summed.summed_days == tuple(sorted(by_day))
    assert set(summed.estimate_ids) == {e.estimate_id for e in one_by_one}


def _estimate(at: dt.datetime, sbp: float, dbp: float = 80.0) -> EstimateEvidence:
    return EstimateEvidence(recorded_at=at, sbp_mmhg=sbp, dbp_mmhg=dbp, sbp_halfwidth_mmhg=8, dbp_halfwidth_mmhg=8)


@pytest.mark.parametrize("sbp, dbp", [(185.0, 90.0), (150.0, 125.0), (95.0, 60.0)])
def test_a_day_holding_a_crisis_or_low_level_estimate_is_refused_as_a_sum(sbp, dbp):
    day = day_of([_estimate(T0 - dt.timedelta(days=2), 140), _estimate(T0 - dt.timedelta(days=2, hours=1), sbp, dbp)])
    with pytest.raises(ValueError, match="crisis- or low-level"):
        days_in_look_back([day], now=T0, look_back_days=7)


def test_a_day_reaching_past_the_look_back_is_refused_as_a_sum():
    day = day_of([_estimate(T0 - dt.timedelta(days=7, hours=1), 140), _estimate(T0 - dt.timedelta(days=6, hours=23), 140)])
    with pytest.raises(ValueError, match="outside the look-back"):
        days_in_look_back([day], now=T0, look_back_days=7)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_day_whose_sums_are_not_finite_fails_closed(value):
    fine = day_of([_estimate(T0 - dt.timedelta(days=2), 140)])
    with pytest.raises(ValueError, match="finite"):
        EstimateDay(**{**fine.__dict__, "sum_sbp_mmhg": value})


# The database: totals kept as estimates are stored, and an evaluation that reads them.


def _totals_match_the_estimates(patient) -> None:
    rows = {(t.day, t.model_version_id): t for t in EstimateDayTotals.objects.filter(patient=patient)}
    expected: dict = {}
    for e in BPEstimate.objects.filter(patient=patient, shadow=False):
        expected.setdefault((e.recorded_at.astimezone(UTC).date(), e.model_version_id), []).append(e)
    assert set(rows) == set(expected)
    for key, estimates in expected.items():
        t = rows[key]
        assert t.n == len(estimates)
        assert math.isclose(t.sum_sbp_mmhg, sum(e.sbp_mmhg for e in estimates))
        assert math.isclose(t.sum_sq_dbp_mmhg2, sum(e.dbp_mmhg ** 2 for e in estimates))
        assert (t.min_sbp_mmhg, t.max_dbp_mmhg) == (min(e.sbp_mmhg for e in estimates), max(e.dbp_mmhg for e in estimates))
        assert (t.first_at, t.last_at) == (min(e.recorded_at for e in estimates), max(e.recorded_at for e in estimates))
        assert t.n_flagged == sum(1 for e in estimates if e.flags)


@pytest.mark.both_databases  # dates, float sums and the day ranges, on PostgreSQL too
@pytest.mark.django_db
def test_an_evaluation_on_day_totals_decides_as_one_on_every_estimate(clinic, plan):
    plan(auto_step_up=True, max_auto_rung=3)
    patient = clinic["patient"]
    store_estimates(patient, clinic["device"], week_of(148, 92, per_day=6), flags=["the active model is the carry-forward baseline"])
    _totals_match_the_estimates(patient)

    summed = patient_therapy_evaluate(patient_id=patient.pk, now=NOW)
    summed_latest = LatestEvaluation.objects.get(patient=patient)
    assert len(summed_latest.evidence["summed_days"]) >= 5  # the whole days in the week were read as sums
    assert sorted(summed.estimate_ids) == sorted(BPEstimate.objects.filter(patient=patient).values_list("pk", flat=True))

    # The same question again with no totals at all: every estimate read one by one.
    LatestEvaluation.objects.all().delete()
    Suggestion.objects.all().delete()
    EstimateDayTotals.objects.all().delete()
    plain = patient_therapy_evaluate(patient_id=patient.pk, now=NOW)
    plain_latest = LatestEvaluation.objects.get(patient=patient)
    assert plain_latest.evidence["summed_days"] == []
    assert (summed.kind, summed.to_rung, summed.status) == (plain.kind, plain.to_rung, plain.status)
    assert summed.routing_reasons == plain.routing_reasons and summed.proposal_reasons == plain.proposal_reasons
    assert sorted(summed.estimate_ids) == sorted(plain.estimate_ids)
    same = {k: v for k, v in summed.evidence.items() if k != "summed_days"}
    assert same == {k: v for k, v in plain.evidence.items() if k != "summed_days"}


@pytest.mark.both_databases  # dates, float sums and the day ranges, on PostgreSQL too
@pytest.mark.django_db
def test_a_crisis_inside_a_summed_week_is_still_confirmed_and_raised(clinic, plan):
    plan()
    patient = clinic["patient"]
    # A quiet week, and three days ago two crisis-level estimates 10 min apart.
    store_estimates(patient, clinic["device"], [*week_of(138, 84, per_day=4), (72.0, 186, 104), (71.83, 188, 106)])
    crisis_day = (NOW - dt.timedelta(hours=72)).astimezone(UTC).date()
    days, _ = evaluation._quiet_days(patient, NOW - dt.timedelta(days=7), NOW)
    assert days and crisis_day not in {d.day for d in days}
    suggestion = patient_therapy_evaluate(patient_id=patient.pk, now=NOW)
    assert suggestion.kind == "escalate" and suggestion.urgent
    assert [e["kind"] for e in suggestion.escalations] == ["crisis"]
    assert crisis_day.isoformat() not in suggestion.evidence["summed_days"]


@pytest.mark.both_databases  # dates, float sums and the day ranges, on PostgreSQL too
@pytest.mark.django_db
def test_estimates_stored_without_totals_are_read_one_by_one(clinic, plan):
    """A day with no totals (estimates stored before the totals existed, say) still counts."""
    plan()
    patient = clinic["patient"]
    store_estimates(patient, clinic["device"], week_of(148, 92, per_day=2), day_totals=False)
    patient_therapy_evaluate(patient_id=patient.pk, now=NOW)
    latest = LatestEvaluation.objects.get(patient=patient)
    assert latest.evidence["n_estimates"] == 14 and latest.evidence["summed_days"] == []


@pytest.mark.both_databases  # dates, float sums and the day ranges, on PostgreSQL too
@pytest.mark.django_db
def test_the_migration_backfills_the_totals_of_estimates_already_stored(clinic):
    patient = clinic["patient"]
    store_estimates(patient, clinic["device"], [*week_of(141, 87, per_day=3), (2.0, 95, 60)], day_totals=False,
                    flags=["calibration is 9 days old (limit 7)"])
    assert not EstimateDayTotals.objects.exists()
    migration = importlib.import_module("monitoring.migrations.0010_estimate_day_totals")
    migration._backfill(django_apps, SimpleNamespace(connection=connection))
    _totals_match_the_estimates(patient)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_adding_to_one_day_lose_no_estimate(clinic):
    """Workers storing estimates of one patient-day at once: the row lock keeps every sum."""
    if connection.vendor != "postgresql":
        pytest.skip("runs in the PostgreSQL pass")
    patient = clinic["patient"]
    store_estimates(patient, clinic["device"], [(30.0 + k / 60, 140 + k % 5, 85) for k in range(40)], day_totals=False)
    estimates = list(BPEstimate.objects.filter(patient=patient).order_by("pk"))
    errors = []

    def add(part):
        try:
            for e in part:
                estimation.estimate_day_totals_add([e])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=add, args=(estimates[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _totals_match_the_estimates(patient)
