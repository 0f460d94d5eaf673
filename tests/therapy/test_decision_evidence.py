"""Which evidence decides, through the real evaluation: a complete home cuff series from a validated
cuff, else a wearable trusted for this patient; every piece names its source and counts."""
import datetime as dt

import pytest

from clinops.base.audit import SYSTEM
from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from monitoring.bp import cuff_calibration
from monitoring.models import AgreementPair, CuffSource
from patients import services as patient_services
from patients.models import CuffModel, DeviceKind
from tests.factories import make_admin, make_patient
from tests.therapy.conftest import NOW, store_agreement, store_estimates, week_of
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import LatestEvaluation, SuggestionStatus
from therapy.selectors import plan_current

pytestmark = pytest.mark.django_db

OMRON = ("Omron", "M3 Comfort (HEM-7155-E)")


@pytest.fixture
def cuff(clinic):
    """The patient's registered home cuff, of a model an administrator marked validated."""
    device, _ = patient_services.device_register(actor=SYSTEM, patient=clinic["patient"], make=OMRON[0], model=OMRON[1],
                                                 firmware="1.0", serial="OMRON-1", kind=DeviceKind.CUFF)
    patient_services.cuff_model_set_validated(actor=make_admin(), cuff_model=CuffModel.objects.get(make=OMRON[0]),
                                              validated=True, reference="STRIDE BP validated device list")
    return device


def home_series(clinic, cuff, *, sbp=148.0, dbp=92.0, days=range(1, 7), validated_cuff=True, first_day=True):
    """Morning and evening sittings of two readings a minute apart on each of `days` (days before
    NOW), plus a first day (discarded) a week ago, entered by the patient in the portal's way."""
    patient = clinic["patient"]
    times = []
    for day in days:
        for hour, wobble in ((7, 2.0), (20, -2.0)):
            at = (NOW - dt.timedelta(days=day)).replace(hour=hour, minute=5, second=0)
            times += [(at, sbp + wobble, dbp + wobble / 2), (at + dt.timedelta(minutes=1), sbp + wobble - 1, dbp)]
    if first_day:
        # Just inside the 7-day look-back, on the UTC day before day 6's: the series' first day,
        # whatever the time of day NOW is (a fixed 20:30 fell outside the look-back after 20:30 UTC,
        # and day 6 was discarded instead).
        at = NOW - dt.timedelta(days=7) + dt.timedelta(seconds=1)
        assert at.date() < (NOW - dt.timedelta(days=6)).date(), "NOW is the last second of a UTC day"
        times.append((at, sbp + 12, dbp + 5))
    for at, s, d in times:
        cuff_calibration.cuff_reading_record(actor=patient.user, patient=patient, measured_at=at, sbp_mmhg=s,
                                                dbp_mmhg=d, source=CuffSource.PATIENT, arm="left", position="sitting",
                                                pulse_bpm=68, cuff=cuff if validated_cuff else None)
    return times


def evaluate(clinic):
    return patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)


def test_a_complete_home_series_above_target_is_released_when_the_bounds_allow(clinic, plan, cuff, doses):
    plan(auto_step_up=True, max_auto_rung=3)
    home_series(clinic, cuff)
    doses(taken=1.0)
    suggestion = evaluate(clinic)
    assert (suggestion.kind, suggestion.status, suggestion.routing_reasons) == ("step_up", SuggestionStatus.AUTO_RELEASED, [])
    evidence = suggestion.evidence
    assert evidence["source"] == "cuff series"
    assert (evidence["cuff_series"]["n_readings"], evidence["cuff_series"]["n_days"]) == (24, 6)
    assert evidence["cuff_series"]["complete"] and evidence["cuff_series"]["n_unvalidated"] == 0
    assert 146 < evidence["mean_sbp_mmhg"] < 148.5 and evidence["mean_sbp_halfwidth_mmhg"] < 3
    assert "home cuff series mean 148/92 mmHg (24 readings on 6 days)" in suggestion.proposal_reasons[0]
    assert plan_current(clinic["patient"]).current_rung == 1


def test_an_incomplete_series_holds_naming_what_it_still_needs(clinic, plan, cuff, doses):
    plan(auto_step_up=True, max_auto_rung=3)
    home_series(clinic, cuff, days=range(1, 3))  # 8 readings on 2 days
    doses(taken=1.0)
    assert evaluate(clinic) is None
    held = LatestEvaluation.objects.get(patient=clinic["patient"])
    assert held.outcome == "hold"
    assert ("home cuff series incomplete: 8 of 12 readings on 2 of 4 days in the last 7 days after the first day "
            "(1 reading(s)) discarded: 4 more reading(s) and readings on 2 more day(s) needed") in held.reasons
    assert held.evidence["source"] == "none" and held.evidence["cuff_series"]["n_readings"] == 8


def test_readings_from_a_cuff_not_marked_validated_go_to_review_naming_the_cuff(clinic, plan, cuff, doses):
    CuffModel.objects.update(validated=False)
    plan(auto_step_up=True, max_auto_rung=3)
    home_series(clinic, cuff)
    doses(taken=1.0)
    suggestion = evaluate(clinic)
    assert suggestion.status == SuggestionStatus.PENDING_REVIEW
    assert suggestion.routing_reasons == [
        "24 of 24 home readings from a cuff not marked validated (Omron M3 Comfort (HEM-7155-E)); an administrator "
        "marks a cuff model validated"]


def test_an_untrusted_wearable_alone_goes_to_review_naming_its_agreement(clinic, plan, estimates, doses):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    store_agreement(clinic["patient"], [(5, 9, 4), (12, 11, 6), (20, -3, -1), (28, 12, 5), (40, 8, 2), (50, 10, 3)])
    doses(taken=1.0)
    suggestion = evaluate(clinic)
    assert suggestion.status == SuggestionStatus.PENDING_REVIEW and suggestion.evidence["source"] == "wearable estimates"
    assert "wearable SBP bias against the patient's cuff +7.8 mmHg, limit ±5 mmHg" in suggestion.routing_reasons
    assert suggestion.evidence["agreement"]["n_pairs"] == 6
    # The readings span 7 x 24 h, which touches 7 or 8 calendar days (UTC) by the time of day.
    days = len({(NOW - dt.timedelta(hours=h)).astimezone(dt.timezone.utc).date() for h, _, _ in week_of(148, 92)})
    assert f"7-day mean of wearable estimates 148/92 mmHg (14 on {days} days)" in suggestion.proposal_reasons[0]


def test_a_wearable_without_enough_cuff_pairs_is_not_trusted(clinic, plan, estimates, doses):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    store_agreement(clinic["patient"], [(5, 1, 1), (12, -1, 0), (70, 0, 0)])  # the third is older than 60 days
    doses(taken=1.0)
    suggestion = evaluate(clinic)
    assert suggestion.status == SuggestionStatus.PENDING_REVIEW
    assert suggestion.routing_reasons[0].startswith(
        "wearable not yet trusted for this patient: 2 prospective cuff pair(s) in 60 days, 5 needed (2 cuff pair(s)")


def test_a_trusted_wearable_may_release(clinic, plan, estimates, doses, trusted_wearable):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    doses(taken=1.0)
    suggestion = evaluate(clinic)
    assert (suggestion.status, suggestion.routing_reasons) == (SuggestionStatus.AUTO_RELEASED, [])
    assert suggestion.evidence["source"] == "wearable estimates" and suggestion.evidence["agreement"]["n_pairs"] == 6


def test_a_confirmed_crisis_on_the_cuff_is_an_urgent_escalation(clinic, plan, cuff):
    plan(auto_step_up=True, max_auto_rung=3)
    patient = clinic["patient"]
    for minutes_ago, sbp, dbp in ((6, 192, 124), (4, 188, 121)):
        cuff_calibration.cuff_reading_record(actor=patient.user, patient=patient, source=CuffSource.PATIENT,
                                                measured_at=NOW - dt.timedelta(minutes=minutes_ago), sbp_mmhg=sbp,
                                                dbp_mmhg=dbp, cuff=cuff)
    suggestion = evaluate(clinic)
    assert suggestion.urgent and suggestion.kind == "escalate" and not suggestion.auto_release
    crisis = next(e for e in suggestion.escalations if e["kind"] == "crisis")
    assert crisis["seek_care"] and "192/124 mmHg (cuff)" in crisis["reason"]
    assert all(source.startswith("cuff:") for source in crisis["sources"])


def test_a_cuff_reading_tests_the_wearable_estimates_of_the_minutes_before_it(clinic, plan):
    """The pair holds the estimates of the 10 min before the reading, not those after it nor any
    calibrated on the reading itself."""
    patient, device = clinic["patient"], clinic["device"]
    reading_at = NOW - dt.timedelta(hours=2)
    store_estimates(patient, device, [(2 + 8 / 60, 150, 95), (2 + 3 / 60, 146, 93), (2 - 5 / 60, 120, 70),
                                      (2 + 30 / 60, 100, 60)])
    reading = cuff_calibration.cuff_reading_record(actor=patient.user, patient=patient, measured_at=reading_at,
                                                      sbp_mmhg=140, dbp_mmhg=90, source=CuffSource.PATIENT)
    pair = AgreementPair.objects.get(cuff_reading=reading)
    assert (pair.n_estimates, pair.estimate_sbp_mmhg, pair.estimate_dbp_mmhg) == (2, 148.0, 94.0)
    assert (pair.cuff_sbp_mmhg, pair.cuff_dbp_mmhg) == (140, 90)


def test_only_an_administrator_marks_a_cuff_validated_naming_the_evidence_and_it_is_audited(clinic, cuff):
    model = CuffModel.objects.get(make=OMRON[0])
    with pytest.raises(ApplicationError):
        patient_services.cuff_model_set_validated(actor=clinic["clinician"], cuff_model=model, validated=False, reference="")
    with pytest.raises(ApplicationError):
        patient_services.cuff_model_set_validated(actor=make_admin(), cuff_model=model, validated=True,
                                                  reference=" ")
    assert list(AuditEvent.objects.filter(action__startswith="cuff_model.").values_list("action", flat=True)) == [
        "cuff_model.validate"]


def test_a_reading_naming_another_patients_cuff_is_refused(clinic, cuff):
    other = make_patient()
    with pytest.raises(ApplicationError) as refused:
        cuff_calibration.cuff_reading_record(actor=SYSTEM, patient=other, measured_at=NOW, sbp_mmhg=130, dbp_mmhg=80,
                                                source=CuffSource.CLINICIAN, cuff=cuff)
    assert refused.value.extra["fields"]["cuff"] == ["is not one of this patient's registered cuffs"]


def test_a_connected_cuff_uploads_readings_as_the_cuff_that_measured(clinic, cuff):
    from rest_framework.test import APIClient

    key = patient_services.device_key_issue(actor=SYSTEM, device=cuff)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    answer = client.post("/api/v1/cuff-readings/", {"measured_at": NOW.isoformat(), "sbp_mmhg": 146, "dbp_mmhg": 91,
                                                     "pulse_bpm": 64, "arm": "left", "position": "sitting"}, format="json")
    assert answer.status_code == 201, answer.content
    assert (answer.data["cuff"], answer.data["validated_cuff"], answer.data["pulse_bpm"], answer.data["arm"]) == (
        cuff.pk, True, 64, "left")


def test_a_wearable_relaying_a_reading_names_no_cuff_and_its_reading_is_not_validated(clinic):
    from rest_framework.test import APIClient

    key = patient_services.device_key_issue(actor=SYSTEM, device=clinic["device"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    answer = client.post("/api/v1/cuff-readings/", {"measured_at": NOW.isoformat(), "sbp_mmhg": 146, "dbp_mmhg": 91},
                         format="json")
    assert answer.status_code == 201 and (answer.data["cuff"], answer.data["validated_cuff"]) == (None, False)


def test_the_population_report_counts_steps_released_automatically_and_reviewed(clinic, plan, cuff, doses):
    from therapy import reports

    plan(auto_step_up=True, max_auto_rung=3)
    home_series(clinic, cuff)
    doses(taken=1.0)
    evaluate(clinic)
    team = clinic["patient"].care_teams.get()
    autonomy = reports.population_report(team, now=NOW)["autonomy"]
    assert autonomy == {"automatic": 1, "reviewed": 0, "waiting": 0, "automatic_share": 1.0}


def test_a_crisis_cuff_reading_asks_for_an_evaluation_now_and_another_once_the_wait_for_a_repeat_is_over(
        clinic, cuff, django_capture_on_commit_callbacks):
    import inspect

    patient = clinic["patient"]
    with django_capture_on_commit_callbacks() as sent:
        cuff_calibration.cuff_reading_record(actor=patient.user, patient=patient, source=CuffSource.PATIENT,
                                                measured_at=NOW, sbp_mmhg=194, dbp_mmhg=118, cuff=cuff)
    options = [inspect.getclosurevars(callback).nonlocals["options"] for callback in sent]
    assert [o.get("countdown") for o in options] == [None, 330.0]
    with django_capture_on_commit_callbacks() as sent:
        cuff_calibration.cuff_reading_record(actor=patient.user, patient=patient, source=CuffSource.PATIENT,
                                                measured_at=NOW - dt.timedelta(hours=1), sbp_mmhg=140, dbp_mmhg=88,
                                                cuff=cuff)
    assert len(sent) == 1  # an ordinary reading: one evaluation, now
