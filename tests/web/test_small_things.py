"""Small things people meet first: the app's own 404 page in every mode (the demo runs with DEBUG
on, where Django's technical page listed every URL pattern), a favicon that exists, and a skip link."""
import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from tests.factories import make_clinician, make_patient, make_team

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [True, False])
def test_another_teams_patient_and_an_unknown_address_get_the_apps_own_404_page(settings, debug):
    settings.DEBUG = debug
    stranger = make_patient(team=make_team())
    client = Client()
    client.force_login(make_clinician(team=make_team()).user)
    for path in (f"/clinic/patients/{stranger.pk}/", "/no/such/page/"):
        answer = client.get(path)
        page = answer.content.decode()
        assert answer.status_code == 404 and 'data-testid="not-found"' in page, (path, page[:300])
        assert "URLconf" not in page and "Skip to content" in page
    api = client.get("/api/v1/no-such-thing/")
    assert api.status_code == 404 and api.json() == {"message": "Not found.", "extra": {}}


def test_the_favicon_address_leads_to_a_file_that_exists(db):
    answer = Client().get("/favicon.ico")
    assert answer.status_code == 302 and answer["Location"].startswith("/static/")
    assert finders.find(answer["Location"].removeprefix("/static/")) is not None
