"""The model-health page with every kind of stored report present, as every role: it renders (a
report partial once used a filter it had not loaded: 500 as soon as beat wrote a pipeline,
agreement or population report), and each clinician sees only their own care teams' devices,
patients and clinicians' words; an administrator sees all."""
import datetime as dt

import pytest
from django.test import Client

from monitoring.models import MonitoringReport, MonitoringReportKind, OperatorAlert
from patients.models import Device
from tests.factories import make_admin, make_clinician, make_device, make_patient, make_team
from tests.therapy.conftest import NOW, store_estimates, week_of
from therapy import reports, services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import PlanVersion

pytestmark = pytest.mark.django_db


def _team_with_a_silent_device(serial_prefix: str):
    team = make_team()
    clinician = make_clinician(team=team)
    patient = make_patient(team=team)
    device, _ = make_device(patient)
    plan = services.plan_create(actor=clinician.user, patient=patient, template="ace-ccb-thiazide", reason="start")
    PlanVersion.objects.filter(pk=plan.pk).update(created_at=NOW - dt.timedelta(days=60))
    Device.objects.filter(pk=device.pk).update(registered_at=NOW - dt.timedelta(days=3), last_seen_at=None)
    store_estimates(patient, device, week_of(150, 95), now=NOW)
    suggestion = patient_therapy_evaluate(patient_id=patient.pk, now=NOW)
    services.suggestion_reject(actor=clinician.user, suggestion_id=suggestion.pk,
                               reason=f"words of {serial_prefix}'s clinician")
    OperatorAlert.objects.create(signal="therapy.evaluation_failing", scope=f"patient:{patient.pk}",
                                 severity="critical", message=f"evaluation failing for {serial_prefix}", last_seen_at=NOW)
    return clinician.user, device


def page_as(user) -> str:
    client = Client()
    client.force_login(user)
    answer = client.get("/clinic/model-health/")
    assert answer.status_code == 200
    return answer.content.decode()


def test_every_report_kind_renders_and_each_clinician_sees_only_their_teams_part(db):
    first, first_device = _team_with_a_silent_device("first")
    second, second_device = _team_with_a_silent_device("second")
    from monitoring import tasks

    tasks.compute_accuracy_reports()
    tasks.compute_drift_reports()
    reports.report_pipeline()
    reports.report_agreement()
    reports.report_population()
    assert {MonitoringReportKind.PIPELINE, MonitoringReportKind.AGREEMENT, MonitoringReportKind.POPULATION} <= set(
        MonitoringReport.objects.values_list("kind", flat=True))
    pipeline = MonitoringReport.objects.get(kind=MonitoringReportKind.PIPELINE)
    assert {d["serial"] for d in pipeline.payload["silent_devices"]} >= {first_device.serial, second_device.serial}

    seen_by_first, seen_by_second = page_as(first), page_as(second)
    assert first_device.serial in seen_by_first and second_device.serial not in seen_by_first
    assert second_device.serial in seen_by_second and first_device.serial not in seen_by_second
    assert "words of first" in seen_by_first and "words of second" not in seen_by_first
    assert "evaluation failing for first" in seen_by_first and "evaluation failing for second" not in seen_by_first
    everything = page_as(make_admin())
    assert all(text in everything for text in (first_device.serial, second_device.serial, "words of first",
                                               "words of second", "evaluation failing for second"))


def test_the_page_names_the_model_in_use_and_says_what_the_baseline_is(db):
    from monitoring.bp import registry
    from tests.monitoring.test_bp_registry import register

    model = registry.model_version_promote(actor=make_admin(), model=register("m", test_mae=4.0))
    page = page_as(make_admin())
    assert model.version in page and 'data-testid="active-model"' in page
    assert ("carry-forward baseline" in page) == registry.is_baseline(model)


def test_the_queue_opens_with_each_care_teams_control_rate(db):
    first, _ = _team_with_a_silent_device("first")
    reports.report_population()
    client = Client()
    client.force_login(first)
    page = client.get("/clinic/").content.decode()
    assert page.count('data-testid="control-rate"') == 1 and "of 1 controlled" in page
    assert "uncontrolled" in page and "without a usable mean" in page
