import datetime as dt

import pytest
from django.utils import timezone

from clinops.base.audit import SYSTEM
from monitoring.models import BPEstimate, Calibration, CuffReading, SignalWindow, WindowAnalysis, WindowStatus
from tests.factories import make_clinician, make_device, make_patient, make_team
from therapy import plans, services
from therapy.models import PlanVersion

NOW = timezone.now().replace(microsecond=0)


@pytest.fixture
def clinic():
    team = make_team()
    patient = make_patient(team=team)
    clinician = make_clinician(team=team).user
    return {"patient": patient, "clinician": clinician, "device": make_device(patient)[0]}


@pytest.fixture
def plan(clinic):
    """A plan set two months ago (so the patient has been on its regimen for whole look-backs)."""
    def make(**settings):
        plan = services.plan_create(actor=clinic["clinician"], patient=clinic["patient"], template="ace-ccb-thiazide",
                                    reason="start", **settings)
        PlanVersion.objects.filter(pk=plan.pk).update(created_at=NOW - dt.timedelta(days=60))
        plan.refresh_from_db()
        return plan
    return make


@pytest.fixture
def doses(clinic):
    """The patient logs the scheduled doses of their current regimen for the `days` complete days
    before today: the first `taken` share of them as taken, the rest as missed."""
    from therapy.adherence import scheduled_doses
    from therapy.selectors import plan_current

    def log(*, taken: float = 1.0, days: int = 7):
        patient = clinic["patient"]
        current = plan_current(patient)
        regimen = plans.ladder_of(current).rungs[current.current_rung]
        today = timezone.localdate(NOW)
        due = [d for n in range(1, days + 1) for d in scheduled_doses(regimen, today - dt.timedelta(days=n))]
        n_taken = round(taken * len(due))
        for i, dose in enumerate(due):
            services.dose_log_record(actor=patient.user, patient=patient, day=dose.day, drug=dose.drug, slot=dose.slot,
                                     taken=i < n_taken, now=NOW)
        return len(due)
    return log


def store_estimates(patient, device, values, *, flags=(), halfwidth=8.0, now=None, day_totals=True):
    """Stored estimates of the active model for `patient` (calibrated 8 days before `now` against a
    140/88 cuff reading): values = [(hours ago, sbp, dbp)], each with interval ±halfwidth mmHg, added
    to the day totals as the pipeline does (day_totals=False: the estimates alone)."""
    from monitoring.bp import estimation, registry
    from tests.monitoring.test_bp_registry import register

    now = now or NOW
    model = registry.model_active() or registry.model_version_promote(actor=SYSTEM, model=register("m", test_mae=4.0))
    calibration = Calibration.objects.filter(patient=patient).first()
    if calibration is None:
        reading = CuffReading.objects.create(patient=patient, measured_at=now - dt.timedelta(days=8), sbp_mmhg=140,
                                             dbp_mmhg=88, source="clinician")
        calibration = Calibration.objects.create(patient=patient, cuff_reading=reading, calibrated_at=reading.measured_at,
                                                 features={}, pipeline_version="signals-1.0")
    for hours_ago, sbp, dbp in values:
        at = now - dt.timedelta(hours=hours_ago)
        window = SignalWindow.objects.create(
            device=device, patient=patient, sequence=SignalWindow.objects.count() + 1, recorded_at=at,
            duration_s=30, ecg_fs=250, ppg_fs=250, encoding="compact", raw=b"", raw_sha256="", raw_bytes=0,
            firmware="1", enqueued_at=at, status=WindowStatus.PROCESSED,
        )
        analysis = WindowAnalysis.objects.create(window=window, pipeline_version="signals-1.0", usable=True,
                                                 processing_ms=1.0)
        estimate = BPEstimate.objects.create(
            window=window, analysis=analysis, patient=patient, model_version=model, calibration=calibration,
            recorded_at=at, sbp_mmhg=sbp, dbp_mmhg=dbp, sbp_low_mmhg=sbp - halfwidth, sbp_high_mmhg=sbp + halfwidth,
            dbp_low_mmhg=dbp - halfwidth, dbp_high_mmhg=dbp + halfwidth, interval_level=0.9,
            calibration_age_days=(at - calibration.calibrated_at).days, flags=list(flags),
        )
        if day_totals:  # as the pipeline keeps them: evaluations then read whole quiet days as sums
            estimation.estimate_day_totals_add([estimate])


@pytest.fixture
def estimates(clinic):
    """Stored estimates of the active model: [(hours ago, sbp, dbp)], with flags and interval ±hw."""
    def make(values, *, flags=(), halfwidth=8.0):
        store_estimates(clinic["patient"], clinic["device"], values, flags=flags, halfwidth=halfwidth)
    return make


def week_of(sbp, dbp, *, per_day=2, days=7):
    """Readings spread over the last `days` days (hours ago, sbp, dbp), 6 h apart within a day (closer
    when there are more than 3 a day, so that no two fall at the same time: a device records one
    window at a time)."""
    spacing = min(6.0, 20.0 / per_day)
    return [(24 * d + 3 + spacing * k, sbp, dbp) for d in range(days) for k in range(per_day)]




def store_agreement(patient, pairs, *, now=None):
    """Prospective cuff pairs of the patient's wearable: pairs = [(days ago, estimate - cuff SBP, DBP
    error mmHg)], each a cuff reading of 140/88 against estimates off by that much."""
    from monitoring.models import AgreementPair

    now = now or NOW
    for days_ago, sbp_error, dbp_error in pairs:
        at = now - dt.timedelta(days=days_ago, minutes=7)
        reading = CuffReading.objects.create(patient=patient, measured_at=at, sbp_mmhg=140, dbp_mmhg=88, source="clinician")
        AgreementPair.objects.create(patient=patient, cuff_reading=reading, measured_at=at, estimate_ids=[], n_estimates=3,
                                     estimate_sbp_mmhg=140 + sbp_error, estimate_dbp_mmhg=88 + dbp_error,
                                     cuff_sbp_mmhg=140, cuff_dbp_mmhg=88)


# Six pairs within ISO 81060-2's numbers (bias ~ +1, SD ~ 3 mmHg): the wearable is trusted.
AGREEING = [(10, 2, 1), (15, -2, -1), (20, 4, 2), (25, 0, 0), (30, 3, 1), (35, -1, -2)]


@pytest.fixture
def trusted_wearable(clinic):
    """The patient's wearable has agreed with their cuff (6 prospective pairs in 60 days)."""
    store_agreement(clinic["patient"], AGREEING)
