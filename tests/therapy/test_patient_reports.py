"""What the patient reports (doses, symptoms, side effects) and what it does: adherence in the
evidence, urgent items with visible alerts, a seek-care message, holds on record."""
import datetime as dt

import pytest
from django.utils import timezone

from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from tests.factories import make_clinician, make_patient, make_team
from tests.therapy.conftest import NOW, week_of
from therapy import services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Alert, LatestEvaluation, Suggestion, SuggestionStatus
from therapy.selectors import plan_current

pytestmark = pytest.mark.django_db
YESTERDAY = timezone.localdate(NOW) - dt.timedelta(days=1)


def evaluate(clinic):
    """Now, not NOW: reports are stamped when they are filed, after NOW."""
    return patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())


def report(clinic, symptom="", *, kind="symptom", detail="", drug=""):
    return services.symptom_report_record(actor=clinic["patient"].user, patient=clinic["patient"], kind=kind,
                                          symptom=symptom, detail=detail, drug=drug)


# --- Scenarios that read like the clinic --------------------------------------------------------

def test_uncontrolled_148_92_fresh_calibration_up_auto_allowed_and_doses_taken_is_released(clinic, plan, estimates, doses,
                                                                                           trusted_wearable):
    plan(auto_step_up=True, max_auto_rung=3, min_usable_window_share=0.7)
    estimates(week_of(148, 92))
    doses(taken=1.0)
    suggestion = evaluate(clinic)
    assert (suggestion.kind, suggestion.status, suggestion.routing_reasons) == ("step_up", SuggestionStatus.AUTO_RELEASED, [])
    assert suggestion.evidence["adherence"]["share"] == 1.0 and suggestion.evidence["adherence"]["scheduled"] == 7
    assert plan_current(clinic["patient"]).current_rung == 1


def test_the_same_with_70_percent_of_doses_taken_goes_to_review_for_low_adherence(clinic, plan, estimates, doses,
                                                                               trusted_wearable):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    doses(taken=5 / 7)
    suggestion = evaluate(clinic)
    assert suggestion.status == SuggestionStatus.PENDING_REVIEW
    assert suggestion.routing_reasons == [
        "low adherence: 71 % of doses taken over the look-back, below 80 %; more drug is not the answer to missed doses"
    ]


def test_a_hold_is_on_record_with_the_rule_that_held_it(clinic, plan, estimates):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(150, 95, days=2))
    assert evaluate(clinic) is None
    held = LatestEvaluation.objects.get(patient=clinic["patient"])
    assert held.outcome == "hold" and held.suggestion is None
    assert held.reasons[0] == "not enough data: 4 usable estimates in the last 7 days, the plan needs at least 12"
    assert held.evidence["n_estimates"] == 4


def test_a_red_flag_symptom_is_an_urgent_item_with_an_alert_telling_the_patient_to_seek_care(clinic, plan, estimates, doses):
    plan(auto_step_up=True, max_auto_rung=3, seek_care_instructions="Call 112 now, then the clinic on 555-0100.")
    estimates(week_of(128, 80))
    report(clinic, "chest pain", detail="since this morning")
    suggestion = evaluate(clinic)
    assert (suggestion.kind, suggestion.urgent, suggestion.status) == ("escalate", True, SuggestionStatus.PENDING_REVIEW)
    alert = Alert.objects.get(patient=clinic["patient"], closed_at=None)
    assert (alert.cause, alert.seek_care, alert.suggestion) == ("red-flag symptom", True, suggestion)
    assert alert.patient_message == "Call 112 now, then the clinic on 555-0100."
    assert "chest pain (since this morning)" in alert.message
    assert AuditEvent.objects.filter(action="alert.raise").count() == 1


def test_the_same_episode_never_raises_two_items_and_a_decision_closes_it(clinic, plan, estimates):
    plan()
    estimates(week_of(128, 80))
    report(clinic, "severe headache")
    first = evaluate(clinic)
    assert evaluate(clinic) == first  # re-evaluation: same question, same alert
    assert Alert.objects.count() == 1 and Suggestion.objects.count() == 1
    services.suggestion_reject(actor=clinic["clinician"], suggestion_id=first.pk, reason="migraine, known; reviewed by phone")
    alert = Alert.objects.get()
    assert (alert.closed_by, alert.closed_at is not None) == (clinic["clinician"], True)
    assert AuditEvent.objects.filter(action="alert.close").count() == 1
    # The decided report does not come back; a new one does.
    assert evaluate(clinic) is None
    report(clinic, "fainting")
    again = evaluate(clinic)
    assert again.kind == "escalate" and Alert.objects.filter(closed_at=None).get().cause == "red-flag symptom"


def test_a_new_cause_supersedes_a_pending_escalation_and_raises_its_own_alert(clinic, plan, estimates):
    plan()
    estimates(week_of(128, 80))
    report(clinic, kind="side_effect", detail="dry cough", drug="lisinopril")
    first = evaluate(clinic)
    estimates([(0.5, 190, 125), (0.3, 188, 122)])
    second = evaluate(clinic)
    assert second != first and second.kind == "escalate"
    assert sorted(a.cause for a in Alert.objects.filter(closed_at=None)) == ["crisis", "side effect"]
    assert set(Alert.objects.values_list("suggestion", flat=True)) == {second.pk}


def test_dizziness_on_standing_proposes_a_step_down_for_review_once(clinic, plan, estimates):
    plan(current_rung=2, auto_step_down=True, max_auto_rung=3)
    estimates(week_of(122, 78))
    report(clinic, "light-headedness on standing")
    suggestion = evaluate(clinic)
    assert (suggestion.kind, suggestion.to_rung, suggestion.status) == ("escalate", 1, SuggestionStatus.PENDING_REVIEW)
    services.suggestion_approve(actor=clinic["clinician"], suggestion_id=suggestion.pk)
    assert plan_current(clinic["patient"]).current_rung == 1
    assert evaluate(clinic) is None  # the same report does not step down again
    assert plan_current(clinic["patient"]).current_rung == 1


# --- Reporting: who, what, and what is refused ---------------------------------------------------

def test_dose_logging_is_once_per_dose_and_refuses_what_is_not_scheduled(clinic, plan):
    plan()
    patient, user = clinic["patient"], clinic["patient"].user
    entry, created = services.dose_log_record(actor=user, patient=patient, day=YESTERDAY, drug="Lisinopril", slot=1, taken=True)
    assert created and (entry.drug, entry.dose_mg) == ("lisinopril", 10.0)
    assert services.dose_log_record(actor=user, patient=patient, day=YESTERDAY, drug="lisinopril", slot=1, taken=True) == (entry, False)
    with pytest.raises(ApplicationError, match="already logged as taken") as refused:
        services.dose_log_record(actor=user, patient=patient, day=YESTERDAY, drug="lisinopril", slot=1, taken=False)
    assert refused.value.status_code == 409
    for day, drug, slot, field in [(YESTERDAY + dt.timedelta(days=2), "lisinopril", 1, "day"),
                                   (YESTERDAY, "amlodipine", 1, "drug"), (YESTERDAY, "lisinopril", 2, "drug")]:
        with pytest.raises(ApplicationError) as refused:
            services.dose_log_record(actor=user, patient=patient, day=day, drug=drug, slot=slot, taken=True)
        assert field in refused.value.extra["fields"]
    assert AuditEvent.objects.filter(action="dose.log").count() == 1


def test_only_the_patient_or_their_care_team_reports(clinic, plan):
    plan()
    stranger = make_patient(team=make_team()).user
    outsider = make_clinician(team=make_team()).user
    for actor in (stranger, outsider):
        with pytest.raises(ApplicationError) as refused:
            services.symptom_report_record(actor=actor, patient=clinic["patient"], kind="symptom", symptom="chest pain")
        assert refused.value.status_code == 403
        with pytest.raises(ApplicationError):
            services.dose_log_record(actor=actor, patient=clinic["patient"], day=YESTERDAY, drug="lisinopril", slot=1, taken=True)
    services.symptom_report_record(actor=clinic["clinician"], patient=clinic["patient"], kind="symptom", symptom="dizziness")


@pytest.mark.parametrize("fields, wrong", [
    ({"kind": "symptom", "symptom": "itchy"}, "symptom"),
    ({"kind": "symptom", "symptom": "other symptom"}, "detail"),
    ({"kind": "side_effect", "detail": "  "}, "detail"),
    ({"kind": "feeling"}, "kind"),
])
def test_a_bad_report_names_its_field_and_stores_nothing(clinic, plan, fields, wrong):
    plan()
    with pytest.raises(ApplicationError) as refused:
        services.symptom_report_record(actor=clinic["patient"].user, patient=clinic["patient"], **fields)
    assert wrong in refused.value.extra["fields"]
    assert not clinic["patient"].symptom_reports.exists()


def test_the_sweeper_evaluates_patients_whose_report_was_never_evaluated(clinic, plan, monkeypatch):
    from therapy import tasks

    plan()
    sent = []
    monkeypatch.setattr(tasks.evaluate_patient, "apply_async", lambda **options: sent.append(options))
    report(clinic, "chest pain")  # its own evaluation is never sent: the broker was down, say
    assert tasks.sweep_unevaluated_reports() == 1
    assert sent == [{"args": [clinic["patient"].pk], "queue": "celery"}]  # not behind the debounced ones
    patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    assert tasks.sweep_unevaluated_reports() == 0


def test_an_alert_is_snoozed_with_a_reason_for_at_most_a_week_and_returns_when_the_patient_worsens(clinic, plan, estimates):
    from therapy.selectors import alerts_open_for, review_queue_for

    plan()
    estimates(week_of(128, 80))
    report(clinic, kind="side_effect", detail="ankle swelling", drug="amlodipine")
    item = evaluate(clinic)
    alert = Alert.objects.get()
    for reason, days in (("", 2), ("known, reviewed by phone", 8), ("known", 0)):
        with pytest.raises(ApplicationError):
            services.alert_snooze(actor=clinic["clinician"], alert_id=alert.pk, reason=reason, days=days)
    with pytest.raises(ApplicationError, match="care team"):
        services.alert_snooze(actor=make_clinician(team=make_team()).user, alert_id=alert.pk, reason="x", days=1)
    services.alert_snooze(actor=clinic["clinician"], alert_id=alert.pk, reason="known, reviewed by phone", days=3)
    assert list(review_queue_for(clinic["clinician"])) == []
    assert alerts_open_for(clinic["clinician"], include_snoozed=False).count() == 0
    assert list(review_queue_for(clinic["clinician"], now=timezone.now() + dt.timedelta(days=3, minutes=1))) == [item]
    assert AuditEvent.objects.filter(action="alert.snooze").get().detail["reason"] == "known, reviewed by phone"
    # The patient worsens: a red flag brings everything back at once.
    report(clinic, "severe headache")
    worse = evaluate(clinic)
    assert list(review_queue_for(clinic["clinician"])) == [worse]
    assert alerts_open_for(clinic["clinician"], include_snoozed=False).count() == 2
    assert AuditEvent.objects.filter(action="alert.unsnooze").count() == 1


def test_a_report_is_evaluated_on_the_window_workers_queue_not_behind_the_debounced_ones(
        clinic, plan, monkeypatch, django_capture_on_commit_callbacks):
    """A red flag must not wait behind a burst of debounced evaluations on the low-priority
    therapy workers: the evaluation a report asks for goes to the default queue."""
    from therapy import tasks

    plan()
    sent = []
    # The broker is the edge: what would be published, and where to.
    monkeypatch.setattr(tasks.evaluate_patient, "apply_async",
                        lambda args=None, kwargs=None, **options: sent.append({"args": tuple(args), "kwargs": kwargs, **options}))
    with django_capture_on_commit_callbacks(execute=True):
        report(clinic, "chest pain")
    assert sent == [{"args": (clinic["patient"].pk,), "kwargs": {}, "queue": "celery"}]
    assert tasks.REPORT_EVALUATION_QUEUE == "celery"
