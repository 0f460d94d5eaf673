"""After a decision: a modification keeps the engine's proposal beside the clinician's choice (it
overwrote it: the patient page read "40 mg -> 40 mg"), the patient page shows who decided, when and
why, and an in-place decision refreshes the queue's and the header's counters."""
import pytest
from django.utils import timezone

from tests.therapy.conftest import clinic, estimates, plan, week_of  # noqa: F401 - fixtures
from tests.web.test_pages import logged_in as signed_in
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import SuggestionStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def step_up(clinic, plan, estimates):  # noqa: F811
    plan()
    estimates(week_of(150, 95))
    step = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=timezone.now())
    assert step.kind == "step_up" and step.status == SuggestionStatus.PENDING_REVIEW
    return step


def test_a_modification_keeps_the_proposal_and_the_patient_page_shows_both_and_why(clinic, step_up):
    client = signed_in(clinic["clinician"])
    proposed = step_up.to_regimen
    answer = client.post(f"/clinic/suggestions/{step_up.pk}/modify/",
                         {"to_rung": str(step_up.from_rung), "reason": "recheck with a cuff series first"},
                         HTTP_HX_REQUEST="true")
    assert answer.status_code == 200
    step_up.refresh_from_db()
    assert (step_up.status, step_up.to_rung, step_up.proposed_rung, step_up.proposed_regimen) == (
        SuggestionStatus.MODIFIED, step_up.from_rung, step_up.from_rung + 1, proposed)
    assert step_up.decided_by == clinic["clinician"] and step_up.decided_at is not None
    assert step_up.decision_reason == "recheck with a cuff series first"
    page = client.get(f"/clinic/patients/{clinic['patient'].pk}/").content.decode()
    assert f"proposed {step_up.from_regimen} → {proposed}" in page
    assert f"chosen: {step_up.to_regimen}" in page
    assert "recheck with a cuff series first" in page


def test_an_in_place_decision_refreshes_the_counters(clinic, step_up):
    answer = signed_in(clinic["clinician"]).post(f"/clinic/suggestions/{step_up.pk}/approve/", HTTP_HX_REQUEST="true")
    body = answer.content.decode()
    assert '<span id="queue-count" hx-swap-oob="true">0 waiting</span>' in body
    assert 'id="alert-counter"' in body and 'hx-swap-oob="true">Alerts <b>0</b>' in body
    queue = signed_in(clinic["clinician"]).get("/clinic/").content.decode()
    assert '<span id="queue-count">0 waiting</span>' in queue
