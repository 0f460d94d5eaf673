"""Escalations have their own workflow: the card shows the patient's phone number and what they
reported, and offers "patient contacted", "patient advised" (both keep it in the queue) and
"resolve" (closes it and its alerts, keeping the medicines or moving one rung), each with a note.
No red-flag or crisis item is snoozed out of sight while the patient is told to seek care, and the
patient reads that their care team has acted."""
import datetime as dt

import pytest
from django.utils import timezone

from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from patients.models import Patient
from tests.therapy.conftest import clinic, estimates, plan, week_of  # noqa: F401 - fixtures
from tests.web.test_pages import logged_in as signed_in
from therapy import services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Alert, EscalationAction, Suggestion, SuggestionStatus
from therapy.selectors import plan_current, review_queue_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def chest_pain(clinic, plan):
    plan()
    Patient.objects.filter(pk=clinic["patient"].pk).update(phone="+44 20 7946 0123")
    services.symptom_report_record(actor=clinic["patient"].user, patient=clinic["patient"], kind="symptom",
                                   symptom="chest pain", detail="tight band across the chest since breakfast")
    item = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    assert item.kind == "escalate" and item.status == SuggestionStatus.PENDING_REVIEW
    return item


def test_the_card_shows_phone_and_words_and_offers_the_escalation_actions_only(clinic, chest_pain):
    page = signed_in(clinic["clinician"]).get("/clinic/").content.decode()
    assert 'href="tel:+44 20 7946 0123"' in page
    assert "tight band across the chest since breakfast" in page
    assert f"/clinic/suggestions/{chest_pain.pk}/contacted/" in page and f"/suggestions/{chest_pain.pk}/resolved/" in page
    for action in ("approve", "modify", "reject"):
        assert f"/clinic/suggestions/{chest_pain.pk}/{action}/" not in page
    assert "/snooze/" not in page and "told to seek care now" in page
    assert "→" not in page  # no "rung 1 -> rung 1": an escalation proposes no step


def test_contacted_and_advised_keep_it_in_the_queue_and_resolving_closes_it(clinic, chest_pain):
    client = signed_in(clinic["clinician"])
    rung = plan_current(clinic["patient"]).current_rung
    answer = client.post(f"/clinic/suggestions/{chest_pain.pk}/contacted/", {"note": "reached by phone, pain eased"},
                         HTTP_HX_REQUEST="true")
    assert answer.status_code == 200 and "reached by phone, pain eased" in answer.content.decode()
    client.post(f"/clinic/suggestions/{chest_pain.pk}/advised/", {"note": "told to go to the emergency department"},
                HTTP_HX_REQUEST="true")
    assert list(review_queue_for(clinic["clinician"])) == [chest_pain]
    assert Alert.objects.filter(suggestion=chest_pain, closed_at=None).exists()
    refused = client.post(f"/clinic/suggestions/{chest_pain.pk}/resolved/", {"note": " "}, HTTP_HX_REQUEST="true")
    assert "Say what was said or done." in refused.content.decode()
    resolved = client.post(f"/clinic/suggestions/{chest_pain.pk}/resolved/",
                           {"note": "seen in the emergency department, ECG normal", "to_rung": str(rung)},
                           HTTP_HX_REQUEST="true")
    assert "Escalation resolved" in resolved.content.decode()
    chest_pain.refresh_from_db()
    assert chest_pain.status == SuggestionStatus.MODIFIED and plan_current(clinic["patient"]).current_rung == rung
    assert not Alert.objects.filter(suggestion=chest_pain, closed_at=None).exists()
    assert list(EscalationAction.objects.filter(suggestion=chest_pain).values_list("step", flat=True)) == [
        "contacted", "advised", "resolved"]
    assert AuditEvent.objects.filter(action__startswith="escalation.", object_id=str(chest_pain.pk)).count() == 3
    portal = signed_in(clinic["patient"].user).get("/portal/").content.decode()
    assert "Your care team has been in touch with you about the symptom you reported" in portal
    assert "Your care team has finished reviewing the symptom you reported" in portal
    assert "ECG normal" not in portal  # the clinician's note is for the care team
    assert "Seek care now" not in portal


def test_an_alert_that_sends_the_patient_to_seek_care_cannot_be_snoozed_out_of_sight(clinic, chest_pain):
    alert = Alert.objects.get(suggestion=chest_pain, closed_at=None)
    with pytest.raises(ApplicationError, match="told to seek care now"):
        services.alert_snooze(actor=clinic["clinician"], alert_id=alert.pk, reason="busy", days=1)
    # One snoozed before this rule (or by hand) stays in the queue and the counter all the same.
    Alert.objects.filter(pk=alert.pk).update(snoozed_until=timezone.now() + dt.timedelta(days=3), snooze_reason="old")
    assert list(review_queue_for(clinic["clinician"])) == [chest_pain]
    assert "Alerts <b>1</b>" in signed_in(clinic["clinician"]).get("/clinic/").content.decode()


def test_a_step_is_not_resolved_like_an_escalation(clinic, plan, estimates):
    plan()
    estimates(week_of(150, 95))
    step = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    assert step is not None and step.kind == "step_up"
    with pytest.raises(ApplicationError):
        services.escalation_act(actor=clinic["clinician"], suggestion_id=step.pk, step="resolved", note="n/a")
    assert Suggestion.objects.get(pk=step.pk).status == SuggestionStatus.PENDING_REVIEW


def test_a_failing_evaluation_cannot_be_snoozed_out_of_sight(clinic, plan, estimates, monkeypatch):  # noqa: F811
    from therapy import evaluation

    plan()
    estimates(week_of(130, 82))
    monkeypatch.setattr(evaluation, "propose_step", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken")))
    item = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    alert = Alert.objects.get(suggestion=item, cause="evaluation failing", closed_at=None)
    assert not alert.seek_care
    with pytest.raises(ApplicationError, match="failing evaluation"):
        services.alert_snooze(actor=clinic["clinician"], alert_id=alert.pk, reason="later", days=1)
    Alert.objects.filter(pk=alert.pk).update(snoozed_until=timezone.now() + dt.timedelta(days=3))
    assert list(review_queue_for(clinic["clinician"])) == [item]
