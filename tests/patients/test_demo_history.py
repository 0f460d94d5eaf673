"""`manage.py seed_demo` alone (no broker, no worker) leaves weeks of each demo patient's history,
written through the production services at simulated times, in which the loop has run: an
automatic release, steps waiting for review, holds, an escalation."""
import datetime as dt

import pytest
from django.core.management import call_command
from django.db.models import Max, Min
from django.utils import timezone

from clinops.base.audit import audit_trail_verify
from clinops.base.models import AuditEvent
from clinops.base.tasks import enqueue_on_commit, tasks_not_sent
from monitoring.models import AgreementPair, BPEstimate, Calibration, CuffReading, SignalWindow, WindowStatus
from patients.models import CuffModel, Patient
from therapy.models import (
    Alert,
    DoseLog,
    LatestEvaluation,
    PlanVersion,
    Suggestion,
    SuggestionKind,
    SuggestionStatus,
    SymptomReport,
)

pytestmark = pytest.mark.django_db

FOUR_WEEKS = dt.timedelta(days=28)
HISTORY_ROWS = (SignalWindow, BPEstimate, Calibration, AgreementPair, CuffReading, DoseLog, SymptomReport, Suggestion,
                Alert, PlanVersion)


def span(rows, name: str) -> dt.timedelta:
    bounds = rows.aggregate(first=Min(name), last=Max(name))
    return bounds["last"] - bounds["first"]


def test_seed_demo_leaves_weeks_of_history_in_which_the_loop_has_run(tmp_path, monkeypatch):
    from celery.app.task import Task

    sent = []
    monkeypatch.setattr(Task, "apply_async", lambda self, *a, **k: sent.append(self.name))
    started = timezone.now()
    call_command("seed_demo", keys_file=str(tmp_path / "keys.json"))
    assert sent == [], "the seed runs the tasks' steps itself: nothing is sent to a broker"

    # Every demo patient: weeks of windows, estimates and home cuff readings (written then: the
    # rows' own creation times are simulated too), the plan started about 6 weeks back.
    for patient in Patient.objects.all():
        windows = SignalWindow.objects.filter(patient=patient)
        assert span(windows, "recorded_at") >= FOUR_WEEKS
        assert windows.aggregate(first=Min("received_at"))["first"] <= started - FOUR_WEEKS
        assert not windows.filter(status=WindowStatus.RECEIVED).exists(), "every window processed"
        assert span(BPEstimate.objects.filter(patient=patient, shadow=False), "recorded_at") >= FOUR_WEEKS
        readings = CuffReading.objects.filter(patient=patient)
        assert span(readings, "measured_at") >= FOUR_WEEKS
        assert not readings.filter(cuff__isnull=True).exists() and not readings.filter(pulse_bpm__isnull=True).exists()
        assert set(readings.values_list("arm", "position")) == {("left", "sitting")}
        assert AgreementPair.objects.filter(patient=patient).count() >= 20
        assert DoseLog.objects.filter(patient=patient).exists()
        first_plan = PlanVersion.objects.filter(patient=patient).order_by("version").first()
        assert dt.timedelta(days=41) <= started - first_plan.created_at <= dt.timedelta(days=43)
    assert CuffModel.objects.filter(validated=True).count() == 1
    assert CuffReading.objects.filter(cuff__make="Unbranded").exists(), "one patient measures with an unvalidated cuff"

    # A dose change released automatically, within bounds: a complete home cuff series above
    # target from a validated cuff, >= 28 days into the plan, adherence >= 80 %; the rung moved.
    released = Suggestion.objects.filter(status=SuggestionStatus.AUTO_RELEASED)
    assert released.exists()
    for suggestion in released:
        assert suggestion.auto_release and suggestion.kind == SuggestionKind.STEP_UP and not suggestion.routing_reasons
        assert suggestion.evidence["source"] == "cuff series" and suggestion.evidence["cuff_series"]["complete"]
        assert suggestion.evidence["cuff_series"]["n_unvalidated"] == 0
        assert suggestion.evidence["adherence"]["share"] >= 0.8
        plans = PlanVersion.objects.filter(patient=suggestion.patient).order_by("version")
        assert suggestion.created_at - plans.first().created_at >= FOUR_WEEKS
        moved = plans.get(reason=f"automatic release of suggestion {suggestion.pk}")
        assert moved.current_rung == suggestion.to_rung and moved.created_by is None

    # Steps waiting for a clinician, each with its reasons.
    waiting = Suggestion.objects.filter(status=SuggestionStatus.PENDING_REVIEW, urgent=False)
    assert waiting.exists() and all(s.routing_reasons for s in waiting)
    reasons = [r for s in waiting for r in s.routing_reasons]
    assert any("atrial fibrillation" in r for r in reasons)
    assert any("not allowed by this plan" in r for r in reasons)
    # A clinician decided some on the way (and the patient acknowledged).
    assert Suggestion.objects.filter(status=SuggestionStatus.ACKNOWLEDGED).exists()

    # Holds with the rule that held them.
    holds = LatestEvaluation.objects.filter(outcome="hold")
    assert holds.exists() and all(h.reasons for h in holds)

    # An escalation: a crisis confirmed on the cuff and a red-flag symptom, with open alerts.
    escalation = Suggestion.objects.get(kind=SuggestionKind.ESCALATE, urgent=True,
                                        status=SuggestionStatus.PENDING_REVIEW)
    assert {e["kind"] for e in escalation.escalations} >= {"crisis"}
    assert Alert.objects.filter(patient=escalation.patient, closed_at__isnull=True, seek_care=True).exists()
    assert any("not marked validated" in r for r in escalation.routing_reasons)

    # The audit trail is intact and in time order (the clock only moved forward).
    assert audit_trail_verify() == []
    times = list(AuditEvent.objects.order_by("id").values_list("at", flat=True))
    assert times == sorted(times) and times[-1] <= timezone.now()

    # A second run keeps the clinic and its history: it only rotates the device keys.
    before = {model.__name__: model.objects.count() for model in HISTORY_ROWS}
    call_command("seed_demo", keys_file=str(tmp_path / "keys.json"))
    assert {model.__name__: model.objects.count() for model in HISTORY_ROWS} == before
    assert Patient.objects.count() == 6


def test_tasks_not_sent_keeps_enqueue_on_commit_from_sending(django_capture_on_commit_callbacks):
    from monitoring.tasks import process_window

    with django_capture_on_commit_callbacks() as callbacks:
        with tasks_not_sent():
            enqueue_on_commit(process_window, 1)
    assert callbacks == []
    with django_capture_on_commit_callbacks() as callbacks:
        enqueue_on_commit(process_window, 1)  # outside the block: sent on commit as always
    assert len(callbacks) == 1


def test_demo_devices_take_turns_when_streaming():
    from monitoring.ingest.devicesim import staggered_offsets

    assert staggered_offsets(6, 300.0) == [0.0, 50.0, 100.0, 150.0, 200.0, 250.0]
    with pytest.raises(ValueError):
        staggered_offsets(6, 0)
