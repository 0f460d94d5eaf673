"""What the autonomy did, as its users meet it: the clinician's list of automatic releases per care
team with their evidence and bounds, the patient page's wearable trust, the plan editor's warning,
and the patient's reason in words."""
import pytest

from monitoring.bp import registry
from tests.factories import make_clinician, make_team
from tests.therapy.conftest import (  # noqa: F401 - fixtures
    AGREEING,
    NOW,
    clinic,
    doses,
    estimates,
    plan,
    store_agreement,
    week_of,
)
from tests.web.test_pages import logged_in
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import SuggestionStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def released(clinic, plan, estimates, doses):  # noqa: F811
    """An automatic step up on a wearable trusted for this patient."""
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(148, 92))
    store_agreement(clinic["patient"], AGREEING)
    doses(taken=1.0)
    suggestion = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    assert suggestion.status == SuggestionStatus.AUTO_RELEASED
    return suggestion


def test_the_care_team_sees_each_automatic_release_with_its_evidence_and_bounds(clinic, released):
    page = logged_in(clinic["clinician"]).get("/clinic/autonomy/")
    html = page.content.decode()
    assert page.status_code == 200
    assert html.count('data-testid="automatic-release"') == 1
    assert "1</b> released automatically, <b>0</b> decided by a clinician" in html and "100 % automatic" in html
    assert "wearable estimates" in html and "6 prospective pairs in 60 days" in html
    assert "automatic up up to rung 4" in html and "trusted after 5 pairs in 60 days" in html


def test_another_care_team_sees_none_of_it(clinic, released):
    outsider = logged_in(make_clinician(team=make_team()).user)
    html = outsider.get("/clinic/autonomy/").content.decode()
    assert 'data-testid="automatic-release"' not in html and "No automatic release in this period." in html


def test_the_patient_page_shows_the_wearables_agreement_and_trust(clinic, released):
    html = logged_in(clinic["clinician"]).get(f"/clinic/patients/{clinic['patient'].pk}/").content.decode()
    assert "6 pairs; SBP bias +1.0, SD 2.4" in html and ">trusted</span>" in html
    assert "Every bound held: released automatically." in html


def test_the_patient_reads_why_their_medicine_changed(clinic, released):
    html = logged_in(clinic["patient"].user).get("/portal/").content.decode()
    assert ("Your wearable&#x27;s estimates averaged 148/92 over the last week, above your target of 135/85, so your "
            "dose goes up one step. It was made automatically, within the limits your care team set for you.") in html


def test_the_plan_editor_warns_when_the_baseline_model_can_never_release(clinic, plan):  # noqa: F811
    plan(auto_step_up=True)
    from clinops.base.audit import SYSTEM
    from monitoring.models import BPModelVersion
    from tests.monitoring.test_bp_registry import register

    baseline = register("baseline", test_mae=6.0)
    BPModelVersion.objects.filter(pk=baseline.pk).update(hyperparameters={"estimator": "carry_forward_baseline"})
    baseline.refresh_from_db()
    registry.model_version_promote(actor=SYSTEM, model=baseline)
    html = logged_in(clinic["clinician"]).get(f"/clinic/patients/{clinic['patient'].pk}/plan/").content.decode()
    assert 'data-testid="plan-warnings"' in html and "is the carry-forward baseline" in html
