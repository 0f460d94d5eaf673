"""Clinician decisions (approve, modify, reject) and patient acknowledgement, all audited; the
rung moves only when a change is approved or released."""
import pytest

from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from tests.factories import make_clinician, make_team
from tests.therapy.conftest import NOW, week_of
from therapy import services
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import SuggestionStatus
from therapy.selectors import plan_current

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(clinic, plan, estimates):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    return patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)


def test_approving_releases_the_step_and_moves_the_rung(clinic, pending):
    decided = services.suggestion_approve(actor=clinic["clinician"], suggestion_id=pending.pk, note="agreed")
    assert decided.status == SuggestionStatus.APPROVED
    plan = plan_current(clinic["patient"])
    assert (plan.current_rung, plan.created_by) == (1, clinic["clinician"])
    assert AuditEvent.objects.filter(action="suggestion.approve").get().actor_user == clinic["clinician"]


def test_modifying_chooses_another_rung_with_a_reason(clinic, pending):
    with pytest.raises(ApplicationError) as refused:
        services.suggestion_modify(actor=clinic["clinician"], suggestion_id=pending.pk, to_rung=0, reason=" ")
    assert "reason" in refused.value.extra["fields"]
    with pytest.raises(ApplicationError) as refused:
        services.suggestion_modify(actor=clinic["clinician"], suggestion_id=pending.pk, to_rung=2, reason="faster")
    assert "to_rung" in refused.value.extra["fields"]  # never skip a rung
    decided = services.suggestion_modify(actor=clinic["clinician"], suggestion_id=pending.pk, to_rung=0,
                                         reason="recheck with a cuff first")
    assert (decided.status, decided.to_rung) == (SuggestionStatus.MODIFIED, 0)
    assert plan_current(clinic["patient"]).current_rung == 0  # nothing changes for the patient


def test_rejecting_needs_a_reason_and_changes_nothing(clinic, pending):
    with pytest.raises(ApplicationError):
        services.suggestion_reject(actor=clinic["clinician"], suggestion_id=pending.pk, reason="")
    services.suggestion_reject(actor=clinic["clinician"], suggestion_id=pending.pk, reason="white-coat effect suspected")
    assert plan_current(clinic["patient"]).current_rung == 0
    assert AuditEvent.objects.filter(action="suggestion.reject").get().detail == {"reason": "white-coat effect suspected"}


def test_only_the_care_team_decides_and_only_once(clinic, pending):
    outsider = make_clinician(team=make_team()).user
    with pytest.raises(ApplicationError, match="care team"):
        services.suggestion_approve(actor=outsider, suggestion_id=pending.pk)
    services.suggestion_approve(actor=clinic["clinician"], suggestion_id=pending.pk)
    with pytest.raises(ApplicationError, match="only a pending one"):
        services.suggestion_reject(actor=clinic["clinician"], suggestion_id=pending.pk, reason="changed my mind")


def test_the_patient_acknowledges_a_released_change_and_nobody_else_can(clinic, pending):
    with pytest.raises(ApplicationError):
        services.suggestion_acknowledge(actor=clinic["patient"].user, suggestion_id=pending.pk)  # not released yet
    services.suggestion_approve(actor=clinic["clinician"], suggestion_id=pending.pk)
    with pytest.raises(ApplicationError, match="own change"):
        services.suggestion_acknowledge(actor=clinic["clinician"], suggestion_id=pending.pk)
    acknowledged = services.suggestion_acknowledge(actor=clinic["patient"].user, suggestion_id=pending.pk)
    assert acknowledged.status == SuggestionStatus.ACKNOWLEDGED
    assert AuditEvent.objects.filter(action="suggestion.acknowledge").get().detail == {"was": "approved"}
