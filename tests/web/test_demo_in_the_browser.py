"""The demo shows the loop: on a database `seed_demo` alone made (weeks of history through the
production services), a clinician finds an automatic release with its evidence and the bounds that
allowed it, the patient sees the change and why in words, and every role's pages open at desktop
and phone widths with no console error and nothing scrolling sideways."""
import pytest
from django.core.management import call_command
from playwright.sync_api import Page, expect

from patients.models import CareTeam
from tests.web.helpers import DESKTOP, PHONE, save_screenshots
from therapy.models import Suggestion

pytestmark = [pytest.mark.django_db(transaction=True)]
PASSWORD = "clinops-demo"


def sign_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def watched(browser, size: dict) -> tuple[Page, list[str]]:
    """A page at `size` collecting every console error and failed response (>= 500)."""
    page = browser.new_context(viewport=size).new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{page.url}: console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("response", lambda r: problems.append(f"{r.url}: HTTP {r.status}") if r.status >= 500 else None)
    return page, problems


def fits_the_width(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


WIDEST = """() => [...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .slice(0, 8).map(e => `${e.tagName.toLowerCase()}.${e.className}: ${Math.round(e.getBoundingClientRect().right)} px`)"""


def visit(page: Page, base_url: str, paths: list[str], name: str) -> None:
    """Open each page: no error status, nothing wider than the viewport; screenshots of the last
    one at both widths (once, from the desktop pass) in var/artifacts/screenshots/."""
    for path in paths:
        response = page.goto(f"{base_url}{path}")
        assert response.status < 400, (path, response.status)
        assert fits_the_width(page), (f"{path} scrolls sideways at {page.viewport_size['width']} px: "
                                      f"{page.evaluate(WIDEST)}")
    if page.viewport_size == DESKTOP:
        save_screenshots(page, name)


def test_the_demo_shows_an_automatic_release_to_its_clinician_and_the_reason_to_its_patient(
        live_server, browser, tmp_path):
    call_command("seed_demo", keys_file=str(tmp_path / "keys.json"))
    released = (Suggestion.objects.filter(auto_release=True).select_related("patient__user", "plan_version")
                .order_by("-created_at").first())
    assert released is not None and released.evidence["source"] == "cuff series", "the demo released nothing"
    team = CareTeam.objects.get(patients=released.patient)
    clinician = team.clinicians.select_related("user").first().user.username
    patient = released.patient
    name = f"{patient.given_name} {patient.family_name}"

    for size in (DESKTOP, PHONE):
        page, problems = watched(browser, size)
        sign_in(page, live_server.url, clinician)
        page.goto(f"{live_server.url}/clinic/autonomy/")
        release = page.get_by_test_id("automatic-release").filter(has_text=name).first
        expect(release).to_contain_text(released.to_regimen)
        expect(release.get_by_test_id("evidence-source")).to_contain_text("home cuff series")
        expect(release.get_by_test_id("bounds")).to_contain_text("automatic up")
        expect(page.get_by_test_id("autonomy-share").first).to_contain_text("released automatically")
        assert fits_the_width(page)
        visit(page, live_server.url, ["/clinic/", "/clinic/patients/", f"/clinic/patients/{patient.pk}/",
                                      f"/clinic/patients/{patient.pk}/plan/", "/clinic/model-health/",
                                      "/clinic/autonomy/"], "demo-clinician")
        page.goto(f"{live_server.url}/clinic/patients/{patient.pk}/")
        expect(page.get_by_test_id("home-evidence")).to_contain_text("Home cuff series")
        expect(page.locator("#trend canvas")).to_have_count(1)
        page.context.close()
        assert not problems, problems

        page, problems = watched(browser, size)
        sign_in(page, live_server.url, patient.user.username)
        page.goto(f"{live_server.url}/portal/history/")
        expect(page.locator("main")).to_contain_text(released.to_regimen)
        expect(page.get_by_test_id("change-reason").first).to_contain_text("Your home cuff readings averaged")
        expect(page.get_by_test_id("change-reason").first).to_contain_text("It was made automatically")
        visit(page, live_server.url, ["/portal/cuff/", "/portal/symptoms/", "/portal/history/", "/portal/devices/",
                                      "/portal/"], "demo-patient")
        page.context.close()
        assert not problems, problems

        page, problems = watched(browser, size)
        sign_in(page, live_server.url, "admin")
        visit(page, live_server.url, ["/clinic/", "/clinic/patients/", "/clinic/model-health/", "/clinic/autonomy/"],
              "demo-admin")
        expect(page.get_by_test_id("autonomy-team")).to_have_count(CareTeam.objects.count())
        page.context.close()
        assert not problems, problems
