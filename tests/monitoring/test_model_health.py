"""Model health: drift on real features, production accuracy on a known set, subgroup flags,
operator alerts, and the automatic narrowing of autonomy (audited, lifted only by a clinical lead or an admin)."""
import dataclasses
import datetime as dt
import random

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from clinops.base.audit import SYSTEM
from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from monitoring.bp import feature_deltas, protocol, registry
from monitoring.health import model_health, quality
from monitoring.models import (
    AutonomySuspension,
    Calibration,
    CuffReading,
    MonitoringReport,
    OperatorAlert,
    SignalWindow,
    WindowAnalysis,
    WindowStatus,
)
from monitoring.signals import pipeline
from tests.factories import make_clinician, make_device, make_patient, make_team
from tests.monitoring.test_bp_registry import register


@pytest.fixture(scope="module")
def real_features():
    """Beat features of every evaluated window of the shipped challenge2015 records, shuffled."""
    dataset = protocol.load_dataset(settings.RECORDINGS_DIR / "challenge2015")
    features = [dict(s.features) for s in dataset.samples]
    random.Random(7).shuffle(features)
    return features


# --- drift ---------------------------------------------------------------------------------------

def test_drift_stays_quiet_on_the_same_real_distribution(real_features):
    half = len(real_features) // 2
    reference = quality.feature_reference(real_features[:half])
    drifts = quality.drift_report(reference, real_features[half:])
    assert len(drifts) == len(feature_deltas.FEATURES) and all(d.n_current >= quality.MIN_DRIFT_WINDOWS for d in drifts)
    assert [d.feature for d in drifts if d.severity] == [], [d.describe() for d in drifts]


def test_drift_fires_on_a_shifted_real_feature(real_features):
    half = len(real_features) // 2
    reference = quality.feature_reference(real_features[:half])
    # A firmware that times the PPG foot 40 ms late shifts PAT by 40 ms.
    shifted = [{**f, "pat_foot_ms_median": f["pat_foot_ms_median"] + 40.0} for f in real_features[half:]
               if f.get("pat_foot_ms_median") is not None]
    drifts = {d.feature: d for d in quality.drift_report(reference, shifted)}
    assert drifts["pat_foot_ms_median"].severity == "critical"
    assert drifts["pat_foot_ms_median"].psi >= quality.PSI_CRITICAL and drifts["pat_foot_ms_median"].ks_pvalue < 0.001
    assert drifts["heart_rate_bpm_median"].severity is None
    finding = quality.drift_findings(list(drifts.values()), group="Acme W1 / firmware 2.0")[0]
    assert finding.signal == "drift.pat_foot_ms_median@Acme W1 / firmware 2.0"


def test_psi_is_zero_for_the_same_sample_and_grows_with_the_shift():
    values = np.random.default_rng(0).normal(200, 20, 2000)
    assert quality.psi(values, values) == pytest.approx(0.0, abs=1e-9)
    assert quality.psi(values, values + 5) < quality.psi(values, values + 20) < quality.psi(values, values + 60)


# --- accuracy ------------------------------------------------------------------------------------

def pair(sbp_error, dbp_error, **who):
    return quality.PairedEstimate(sbp_mmhg=130 + sbp_error, dbp_mmhg=80 + dbp_error, cuff_sbp_mmhg=130, cuff_dbp_mmhg=80,
                                  sbp_halfwidth_mmhg=3.0, dbp_halfwidth_mmhg=3.0, patient=who.pop("patient", "1"), **who)


def test_accuracy_computes_the_documented_numbers_on_a_known_set():
    result = quality.accuracy([pair(2, 1), pair(-2, -1), pair(4, 12), pair(-4, -12)])
    sbp, dbp = result["sbp"], result["dbp"]
    assert (sbp["n_windows"], sbp["mean_error_mmhg"], sbp["mae_mmhg"]) == (4, 0.0, 3.0)
    assert sbp["sd_error_mmhg"] == pytest.approx(np.std([2, -2, 4, -4], ddof=1))
    assert (sbp["within_10_mmhg_pct"], sbp["coverage_pct"]) == (100.0, 50.0)
    assert (dbp["mae_mmhg"], dbp["within_10_mmhg_pct"], dbp["coverage_pct"]) == (6.5, 50.0, 50.0)


def test_a_subgroup_materially_worse_than_the_whole_is_flagged():
    pairs = ([pair(1, 1, sex="female", age_years=60) for _ in range(12)]
             + [pair(-1, 1, sex="female", age_years=70) for _ in range(12)]
             + [pair(9, 2, sex="male", age_years=85) for _ in range(12)])
    report = quality.subgroup_report(pairs)
    assert report["groups"]["sex"]["male"]["materially_worse"] == ["sbp"]
    assert report["groups"]["sex"]["female"]["materially_worse"] == []
    assert report["groups"]["age band"]["80+"]["materially_worse"] == ["sbp"]
    signals_ = {f.signal for f in quality.subgroup_findings(report)}
    assert signals_ == {"subgroup.sex.male.sbp_mae_mmhg", "subgroup.age band.80+.sbp_mae_mmhg"}


# --- from the database: alerts and the narrowing of autonomy ---------------------------------------

def analysed_window(device, *, sequence: int, at: dt.datetime, features: dict, firmware: str = "1") -> WindowAnalysis:
    """A processed, usable window of `device` recorded at `at` with these beat features (no raw signal)."""
    window = SignalWindow.objects.create(
        device=device, patient=device.patient, sequence=sequence, recorded_at=at, duration_s=30, ecg_fs=250, ppg_fs=250,
        encoding="compact", raw=b"", raw_sha256="", raw_bytes=0, firmware=firmware, enqueued_at=at,
        status=WindowStatus.PROCESSED)
    return WindowAnalysis.objects.create(window=window, pipeline_version=pipeline.PIPELINE_VERSION, usable=True,
                                         processing_ms=1.0, features=features)


@pytest.fixture
def drifting_clinic(db):
    """A patient on the carry-forward model, calibrated at 130/80, whose next 12 cuff-paired windows
    meet a cuff reading of 145/88: every leave-one-out estimate is 15/8 mmHg low."""
    model = registry.model_version_promote(actor=SYSTEM, model=register("cf-1", test_mae=4.0, kind="baseline"))
    team = make_team()
    patient = make_patient(team=team)
    device, _ = make_device(patient)
    now = timezone.now()
    features = {name: 200.0 for name in feature_deltas.FEATURES}
    first = CuffReading.objects.create(patient=patient, measured_at=now - dt.timedelta(days=10), sbp_mmhg=130,
                                       dbp_mmhg=80, source="patient")
    Calibration.objects.create(patient=patient, cuff_reading=first, calibrated_at=first.measured_at, features=features,
                               pipeline_version=pipeline.PIPELINE_VERSION)
    second = CuffReading.objects.create(patient=patient, measured_at=now - dt.timedelta(days=1), sbp_mmhg=145,
                                        dbp_mmhg=88, source="patient")
    for i in range(12):
        at = second.measured_at + dt.timedelta(seconds=40 * (i - 6))
        analysed_window(device, sequence=i + 1, at=at, features=features)
    return {"model": model, "patient": patient, "clinician": make_clinician(team=team).user}


def test_poor_production_accuracy_raises_an_alert_and_suspends_automatic_releases(drifting_clinic):
    [report] = model_health.accuracy_reports_compute()
    overall = report.payload["overall"]
    assert report.scope == "model:cf-1" and report.payload["n_pairs"] == 12
    assert (overall["sbp"]["mean_error_mmhg"], overall["dbp"]["mean_error_mmhg"]) == (-15.0, -8.0)
    assert list(report.payload["weeks"]) == [model_health._week(timezone.now() - dt.timedelta(days=1))]
    alert = OperatorAlert.objects.get(signal="accuracy.sbp_mean_error_mmhg", resolved_at=None)
    assert alert.severity == "critical" and "SBP mean error -15.0 mmHg" in alert.message
    suspension = AutonomySuspension.objects.get(model_version=drifting_clinic["model"], lifted_at=None)
    assert AuditEvent.objects.filter(action="autonomy.suspend").get().detail["model_version"] == "cf-1"
    assert MonitoringReport.objects.filter(kind="subgroups", scope="model:cf-1").exists()
    # Computing again refreshes the same alert and suspension: no duplicates.
    model_health.accuracy_reports_compute()
    # SBP and DBP mean error, and SBP intervals (±12 mmHg) covering none of the 15-mmHg errors.
    assert sorted(OperatorAlert.objects.filter(resolved_at=None).values_list("signal", flat=True)) == [
        "accuracy.dbp_mean_error_mmhg", "accuracy.sbp_coverage_pct", "accuracy.sbp_mean_error_mmhg"]
    assert AutonomySuspension.objects.filter(lifted_at=None).get() == suspension


def test_a_suspension_routes_every_step_to_review_until_a_clinical_lead_lifts_it(drifting_clinic):
    from tests.therapy.conftest import store_estimates, week_of
    from therapy import services
    from therapy.evaluation import patient_therapy_evaluate

    model_health.accuracy_reports_compute()
    patient, clinician = drifting_clinic["patient"], drifting_clinic["clinician"]
    services.plan_create(actor=clinician, patient=patient, template="ace-ccb-thiazide", reason="start",
                         auto_step_down=True, max_auto_rung=3, current_rung=2)
    store_estimates(patient, patient.devices.get(), week_of(104, 66), now=timezone.now())
    suggestion = patient_therapy_evaluate(patient_id=patient.pk, now=timezone.now())
    assert suggestion.status == "pending_review"
    assert any(r.startswith("automatic releases suspended by model monitoring: cf-1: SBP mean error")
               for r in suggestion.routing_reasons), suggestion.routing_reasons
    suspension = AutonomySuspension.objects.get()
    with pytest.raises(ApplicationError):
        model_health.autonomy_suspension_lift(actor=patient.user, suspension_id=suspension.pk, reason="fine")
    with pytest.raises(ApplicationError) as refused:  # a clinician who leads no care team
        model_health.autonomy_suspension_lift(actor=clinician, suspension_id=suspension.pk, reason="looks fine")
    assert refused.value.status_code == 403
    from patients.services import care_team_appoint_lead
    from tests.factories import make_admin

    team = patient.care_teams.get()
    care_team_appoint_lead(actor=make_admin(), team=team, clinician=clinician.clinician)
    assert AuditEvent.objects.filter(action="care_team.appoint_lead").exists()
    with pytest.raises(ApplicationError):
        model_health.autonomy_suspension_lift(actor=clinician, suspension_id=suspension.pk, reason=" ")
    model_health.autonomy_suspension_lift(actor=clinician, suspension_id=suspension.pk,
                                          reason="cuff readings re-checked; the offset was a faulty cuff")
    assert AuditEvent.objects.filter(action="autonomy.resume").get().actor_user == clinician


def test_alerts_resolve_when_the_signal_is_back(drifting_clinic):
    model_health.accuracy_reports_compute()
    assert OperatorAlert.objects.filter(resolved_at=None).exists()
    CuffReading.objects.filter(sbp_mmhg=145).update(sbp_mmhg=131, dbp_mmhg=80)
    model_health.accuracy_reports_compute()
    assert not OperatorAlert.objects.filter(resolved_at=None).exists()


def test_drift_reports_use_the_training_distribution_kept_with_the_model(db, real_features):
    half = len(real_features) // 2
    model = register("learned-1", test_mae=3.0)
    model.metrics = {**model.metrics, "training": {"feature_reference": quality.feature_reference(real_features[:half])}}
    model.save(update_fields=["metrics"])
    model = registry.model_version_promote(actor=SYSTEM, model=model)
    patient = make_patient(team=make_team())
    device, _ = make_device(patient)
    now = timezone.now()
    for i, features in enumerate(real_features[half:half + 80]):
        at = now - dt.timedelta(hours=i)
        shifted = {**features, "pat_foot_ms_median": (features.get("pat_foot_ms_median") or 200.0) + 40.0}
        analysed_window(device, sequence=i + 1, at=at, features=shifted, firmware="2.0")
    [report] = model_health.drift_reports_compute()
    by_feature = {d["feature"]: d for d in report.payload["features"]}
    assert by_feature["pat_foot_ms_median"]["severity"] == "critical" and report.payload["n_windows"] == 80
    assert len(report.payload["by_device"]) == 1
    assert OperatorAlert.objects.filter(signal="drift.pat_foot_ms_median", resolved_at=None).exists()
    assert AutonomySuspension.objects.filter(model_version=model, lifted_at=None).exists()
    assert dataclasses.is_dataclass(quality.FeatureDrift)


def test_the_model_health_page_shows_reports_alerts_and_lets_a_clinical_lead_lift_a_suspension(drifting_clinic, client):
    model_health.accuracy_reports_compute()
    client.force_login(drifting_clinic["clinician"])
    page = client.get("/clinic/model-health/")
    html = page.content.decode()
    assert page.status_code == 200 and "SBP mean error -15.0 mmHg" in html and 'data-testid="suspension"' in html
    assert page.context["chart"]["series"][0]["label"] == "cf-1 SBP MAE"
    assert 'data-testid="who-may-lift"' in html  # not a lead: told who may, no form
    suspension = AutonomySuspension.objects.get()
    drifting_clinic["patient"].care_teams.get().clinical_leads.add(drifting_clinic["clinician"].clinician)
    assert 'data-testid="who-may-lift"' not in client.get("/clinic/model-health/").content.decode()
    refused = client.post(f"/clinic/model-health/suspensions/{suspension.pk}/lift/", {"reason": ""}, follow=True)
    assert "Say why automatic releases may resume." in refused.content.decode()
    client.post(f"/clinic/model-health/suspensions/{suspension.pk}/lift/", {"reason": "faulty cuff replaced"})
    suspension.refresh_from_db()
    assert suspension.lifted_by == drifting_clinic["clinician"] and suspension.lift_reason == "faulty cuff replaced"
    assert "faulty cuff replaced" in client.get("/clinic/model-health/").content.decode()  # who lifted it, and why
    patient_client = type(client)()
    patient_client.force_login(drifting_clinic["patient"].user)
    assert patient_client.get("/clinic/model-health/").status_code == 403


def test_pipeline_and_agreement_thresholds_raise_operator_alerts(db):
    from monitoring.models import MonitoringReportKind

    pipeline_report = {"judged": 100, "rejected_pct": 55.0, "period_hours": 24, "silent_devices": [{"device_id": 1}],
                       "silent_after_hours": 48, "latency_ms": {"p95": 1200.0}, "queue": {"oldest_waiting_minutes": 40.0},
                       "evaluation": {"patients_overdue": 12, "oldest_overdue_minutes": 45.0}, "failed": {"count": 0}}
    signals_ = {f.signal: f.severity for f in quality.pipeline_findings(pipeline_report)}
    assert signals_ == {"pipeline.rejected_pct": "warning", "pipeline.silent_devices": "warning",
                        "pipeline.oldest_waiting_minutes": "critical", "pipeline.evaluation_overdue_minutes": "critical"}
    behind = next(f for f in quality.pipeline_findings(pipeline_report) if f.signal == "pipeline.evaluation_overdue_minutes")
    assert "12 patient(s)" in behind.message and "45 min" in behind.message
    on_time = {**pipeline_report, "evaluation": {"patients_overdue": 40, "oldest_overdue_minutes": 1.5}}
    assert "pipeline.evaluation_overdue_minutes" not in {f.signal for f in quality.pipeline_findings(on_time)}
    assert quality.agreement_findings({"reviewed": 12, "override_pct_steps_only": 75.0,
                                       "time_to_decision_hours": {"p95": 10.0}})[0].signal == "agreement.override_pct"
    assert quality.agreement_findings({"reviewed": 3, "override_pct_steps_only": 100.0}) == []  # too few to judge
    now = timezone.now()
    report = MonitoringReport.objects.create(kind=MonitoringReportKind.PIPELINE, scope="all", period_start=now, period_end=now,
                                             payload=pipeline_report)
    model_health.operational_alerts_sync(report)
    assert OperatorAlert.objects.filter(resolved_at=None).count() == 4
    assert not AutonomySuspension.objects.exists()  # operations, not model trust: autonomy is untouched


def test_cuff_paired_windows_and_decisions_become_a_versioned_training_set_train_bp_model_uses(drifting_clinic):
    from monitoring.bp.training import bp_models_train, training_samples_of
    from therapy import feedback
    from therapy.feedback import training_set_build

    now = timezone.now()
    training_set = training_set_build(actor=SYSTEM, created_by="test", since=now - dt.timedelta(days=56), until=now)
    assert (training_set.n_samples, training_set.n_patients) == (12, 1)
    sample = training_set.content["samples"][0]
    assert sample["reference"] == {"sbp_mmhg": 145.0, "dbp_mmhg": 88.0} and sample["calibration"]["sbp_mmhg"] == 130.0
    assert sample["record"] == feedback._pseudonym(drifting_clinic["patient"].pk) != f"prod-{drifting_clinic['patient'].pk}"
    assert AuditEvent.objects.filter(action="training_set.build").get().detail["sha256"] == training_set.sha256
    assert len(training_samples_of(training_set)) == 12
    run = bp_models_train(actor=SYSTEM, data_dir=settings.RECORDINGS_DIR / "challenge2015", trained_by="test",
                          production_set=training_set)
    training = run.learned.metrics["training"]
    assert training["production_set"] == {"version": training_set.version, "sha256": training_set.sha256, "n_samples": 12}
    assert set(training["feature_reference"]) == set(feature_deltas.FEATURES)
    # The same gates judge it: validation and test are the shipped records' alone.
    assert run.test_report["dataset"] == run.baseline.metrics["test"]["dataset"]
    assert run.test_report["sbp"]["model"]["n_windows"] == run.baseline.metrics["test"]["sbp"]["model"]["n_windows"]
    # A tampered set is refused.
    training_set.content["samples"][0]["reference"]["sbp_mmhg"] = 200.0
    with pytest.raises(ValueError, match="SHA-256"):
        training_samples_of(training_set)
