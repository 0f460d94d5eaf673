"""Free text from people (symptom drug and detail, snooze and reject reasons, plan reasons) is
checked before it is stored: too long, a NUL character or a lone surrogate is a 400 (or the form
shown again with the field's error) naming the field, the same on SQLite and PostgreSQL (which
refused NUL and over-long text with a DataError, a 500, losing the patient's report), and nothing
already stored changes."""
import pytest

from tests.therapy.conftest import NOW, clinic, estimates, plan, week_of  # noqa: F401 - fixtures
from tests.web.test_pages import logged_in
from therapy.evaluation import patient_therapy_evaluate
from therapy.models import Alert, Suggestion, SuggestionStatus, SymptomReport

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

BAD_TEXT = {"too long": "x" * 5000, "a NUL": "chest \x00 pain"}


@pytest.mark.parametrize("problem", sorted(BAD_TEXT))
def test_a_symptom_report_with_bad_text_is_shown_again_naming_the_field_and_nothing_is_stored(clinic, plan, problem):
    plan()
    page = logged_in(clinic["patient"].user).post("/portal/symptoms/", {
        "kind": "side_effect", "drug": BAD_TEXT[problem][:3000], "detail": "ankle swelling"})
    assert page.status_code == 200 and "drug" in page.context["errors"]
    assert not SymptomReport.objects.exists()


@pytest.mark.parametrize("problem", sorted(BAD_TEXT))
def test_bad_reasons_to_reject_or_snooze_are_refused_naming_the_field(clinic, plan, estimates, problem):
    plan(auto_step_up=True, max_auto_rung=3)
    estimates(week_of(150, 95) + [(0.6, 192, 124), (0.4, 188, 121)])
    item = patient_therapy_evaluate(patient_id=clinic["patient"].pk, now=NOW)
    alert = Alert.objects.get(patient=clinic["patient"], closed_at=None)
    client = logged_in(clinic["clinician"])
    rejected = client.post(f"/clinic/suggestions/{item.pk}/reject/", {"reason": BAD_TEXT[problem]}, HTTP_HX_REQUEST="true")
    assert rejected.status_code == 200 and "reason" in rejected.content.decode().lower()
    snoozed = client.post(f"/clinic/alerts/{alert.pk}/snooze/", {"reason": BAD_TEXT[problem], "days": "1"},
                          HTTP_HX_REQUEST="true")
    assert snoozed.status_code == 200
    alert.refresh_from_db()
    assert alert.snoozed_until is None and Suggestion.objects.get(pk=item.pk).status == SuggestionStatus.PENDING_REVIEW


def test_the_api_gives_the_same_400_for_an_over_long_detail(clinic, client_for):
    answer = client_for(clinic["patient"].user).post(
        f"/api/v1/patients/{clinic['patient'].pk}/symptom-reports/",
        {"kind": "side_effect", "detail": "x" * 5000}, format="json")
    assert answer.status_code == 400 and "detail" in str(answer.json())
    assert not SymptomReport.objects.exists()
