"""Smoke tests of the browser harness: a real chromium logs in to the admin through live_server."""
from __future__ import annotations

import re

import pytest
from django.templatetags.static import static
from playwright.sync_api import expect

from tests.factories import make_admin
from tests.web.helpers import DESKTOP, PHONE, SCREENSHOT_DIR, admin_login, save_screenshots

pytestmark = pytest.mark.browser


def test_admin_logs_in_and_sees_the_admin_index(page, live_server):
    admin = make_admin()  # an ORM write while playwright's loop is up: needs the async-unsafe switch

    admin_login(page, live_server.url, username=admin.username, password="pw-admin")

    expect(page).to_have_url(f"{live_server.url}/admin/")
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    expect(page.locator("#user-tools")).to_contain_text(admin.username)
    expect(page.locator("#login-form")).to_have_count(0)
    paths = save_screenshots(page, "admin-index")
    assert [p.name for p in paths] == [f"admin-index-{DESKTOP['width']}.png", f"admin-index-{PHONE['width']}.png"]
    assert all(p.parent == SCREENSHOT_DIR and p.stat().st_size > 1000 for p in paths)


def test_wrong_password_stays_on_the_login_page(page, live_server):
    admin = make_admin()

    admin_login(page, live_server.url, username=admin.username, password="not-the-password")

    expect(page).to_have_url(re.compile(r"/admin/login/"))
    expect(page.locator(".errornote")).to_be_visible()
    expect(page.get_by_role("heading", name="Site administration")).to_have_count(0)


def test_vendored_uplot_is_served_and_runs_in_the_page(page, live_server):
    js_url = f"{live_server.url}{static('vendor/uplot/uPlot.iife.min.js')}"
    css_url = f"{live_server.url}{static('vendor/uplot/uPlot.min.css')}"
    js = page.request.get(js_url)
    assert js.status == 200, js_url
    assert js.text().startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert page.request.get(css_url).status == 200, css_url
    assert page.request.get(f"{live_server.url}{static('vendor/uplot/missing.js')}").status == 404

    page.goto(f"{live_server.url}/admin/login/")
    page.add_script_tag(url=js_url)
    page.add_style_tag(url=css_url)
    assert page.evaluate("typeof uPlot") == "function"
    # It draws: a two-series chart renders a canvas.
    page.evaluate(
        """() => new uPlot({width: 300, height: 150, series: [{}, {stroke: "red"}]},
                           [[1, 2, 3], [120, 135, 128]], document.body)"""
    )
    expect(page.locator(".uplot canvas")).to_have_count(1)


def test_the_api_documentation_asks_no_other_origin_and_logs_no_error(page, live_server):
    """Swagger UI (and Redoc's old address, which leads there) loads only what this server serves:
    Redoc's bundle fetched its logo from cdn.redoc.ly, which the CSP refused."""
    elsewhere, errors = [], []
    page.on("request", lambda request: elsewhere.append(request.url)
            if not request.url.startswith((live_server.url, "data:", "blob:")) else None)
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    for path in ("/api/v1/docs/", "/api/v1/redoc/"):
        page.goto(f"{live_server.url}{path}")
        expect(page).to_have_url(f"{live_server.url}/api/v1/docs/")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("ClinOps")
        expect(page.locator(".opblock-tag").first).to_be_visible()
    assert elsewhere == [] and errors == [], (elsewhere, errors)
