"""A clinician sees only their care teams' patients; a patient sees only themself."""
import pytest
from django.urls import reverse

from patients.selectors import patients_visible_to
from tests.factories import make_admin, make_clinician, make_patient, make_team

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic():
    team_a, team_b = make_team("A"), make_team("B")
    return {
        "clinician_a": make_clinician(team=team_a),
        "clinician_b": make_clinician(team=team_b),
        "patient_a": make_patient(team=team_a),
        "patient_a2": make_patient(team=team_a),
        "patient_b": make_patient(team=team_b),
    }


def detail(patient):
    return reverse("patients:patient-detail", args=[patient.pk])


def test_clinician_of_the_care_team_sees_the_patient(clinic, client_for):
    response = client_for(clinic["clinician_a"].user).get(detail(clinic["patient_a"]))
    assert response.status_code == 200
    assert response.json()["medical_record_number"] == clinic["patient_a"].medical_record_number


def test_clinician_of_another_team_gets_404(clinic, client_for):
    response = client_for(clinic["clinician_b"].user).get(detail(clinic["patient_a"]))
    assert response.status_code == 404


def test_patient_sees_themself(clinic, client_for):
    response = client_for(clinic["patient_a"].user).get(detail(clinic["patient_a"]))
    assert response.status_code == 200


def test_patient_gets_404_for_another_patient(clinic, client_for):
    response = client_for(clinic["patient_a"].user).get(detail(clinic["patient_a2"]))
    assert response.status_code == 404


def test_anonymous_caller_is_refused(clinic, api_client):
    assert api_client.get(detail(clinic["patient_a"])).status_code in {401, 403}


def test_patient_list_holds_only_the_care_teams_patients(clinic, client_for):
    response = client_for(clinic["clinician_a"].user).get(reverse("patients:patient-list"))
    ids = {row["id"] for row in response.json()["results"]}
    assert ids == {clinic["patient_a"].pk, clinic["patient_a2"].pk}


def test_patient_list_of_a_patient_is_only_themself(clinic, client_for):
    response = client_for(clinic["patient_b"].user).get(reverse("patients:patient-list"))
    assert [row["id"] for row in response.json()["results"]] == [clinic["patient_b"].pk]


def test_admin_sees_every_patient(clinic, client_for):
    response = client_for(make_admin()).get(reverse("patients:patient-list"))
    assert response.json()["count"] == 3


def test_object_rules_agree_with_the_scoped_selector(clinic):
    people = [clinic["clinician_a"].user, clinic["clinician_b"].user, clinic["patient_a"].user, clinic["patient_b"].user]
    patients = [clinic["patient_a"], clinic["patient_a2"], clinic["patient_b"]]
    for user in people:
        visible = set(patients_visible_to(user))
        for patient in patients:
            assert user.has_perm("patients.view_patient", patient) == (patient in visible), (user, patient)


def test_a_patient_may_not_change_their_own_record(clinic):
    patient = clinic["patient_a"]
    assert not patient.user.has_perm("patients.change_patient", patient)
    assert clinic["clinician_a"].user.has_perm("patients.change_patient", patient)
    assert not clinic["clinician_b"].user.has_perm("patients.change_patient", patient)


def test_clinician_loses_access_when_removed_from_the_team(clinic, client_for):
    from clinops.base.audit import SYSTEM
    from patients import services

    team = clinic["patient_a"].care_teams.get()
    services.care_team_remove_clinician(actor=SYSTEM, team=team, clinician=clinic["clinician_a"])
    assert client_for(clinic["clinician_a"].user).get(detail(clinic["patient_a"])).status_code == 404
