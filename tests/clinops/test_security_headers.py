"""Security headers and cookies: a Content Security Policy on every page (no inline script, no
framing, no plugins), frame denial, referrer policy and nosniff everywhere; under production
settings also HSTS and secure, HttpOnly session and CSRF cookies. Secrets come from the
environment only."""
import json
import os
import subprocess
import sys

import pytest
from django.test import Client

from tests.clinops.test_production_settings import GOOD_ENV, ROOT

pytestmark = [pytest.mark.django_db]


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


@pytest.mark.parametrize("url", ["/login/", "/api/v1/schema/", "/healthz", "/no-such-page/"])
def test_every_answer_carries_the_content_security_policy_and_frame_denial(url):
    response = Client().get(url)
    csp = policy(response)
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]  # nothing inline
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "no-store" in response["Cache-Control"]  # patient data is never kept by a browser or proxy


def test_pages_and_api_answers_with_patient_data_are_not_stored_and_the_api_speaks_json_only(client_for):
    from tests.factories import make_patient

    patient = make_patient()
    own = client_for(patient.user)
    for url in ("/portal/", f"/api/v1/patients/{patient.pk}/", f"/fhir/Patient/{patient.pk}/$everything"):
        answer = own.get(url, HTTP_ACCEPT="text/html,application/json")
        assert answer.status_code == 200 and "no-store" in answer["Cache-Control"], url
    api = own.get(f"/api/v1/patients/{patient.pk}/", HTTP_ACCEPT="text/html")
    assert api.status_code == 406 or api["Content-Type"].startswith("application/json")


def test_only_the_api_documentation_page_allows_inline_styles():
    csp = policy(Client().get("/api/v1/docs/"))
    assert "'unsafe-inline'" in csp["style-src"] and csp["script-src"] == ["'self'"]
    assert "'unsafe-inline'" not in policy(Client().get("/login/"))["style-src"]


def test_the_api_documentation_page_loads_nothing_from_other_origins():
    page = Client().get("/api/v1/docs/").content.decode()
    assert "https://" not in page and "http://" not in page.replace("http://www.w3.org", "")
    assert "<script src=\"/static/" in page  # the bundled (sidecar) UI, served here
    assert Client().get("/api/v1/redoc/")["Location"] == "/api/v1/docs/"


PRODUCTION_PROBE = r"""
import json
import django
django.setup()
from django.conf import settings
from django.test import Client
client = Client(HTTP_HOST="clinops.example.org")
plain = client.get("/login/")
secure = client.get("/login/", secure=True)
cookie = secure.cookies["csrftoken"]
print(json.dumps({
    "redirect": [plain.status_code, plain.get("Location")],
    "hsts": secure.get("Strict-Transport-Security"),
    "csp": secure.get("Content-Security-Policy"),
    "frame": secure.get("X-Frame-Options"),
    "csrf_cookie": {"secure": bool(cookie["secure"]), "httponly": bool(cookie["httponly"]), "samesite": cookie["samesite"]},
    "session_cookie": [settings.SESSION_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY, settings.SESSION_COOKIE_SAMESITE],
    "secret_key": settings.SECRET_KEY,
    "database_password": settings.DATABASES["default"]["PASSWORD"],
}))
"""


def test_production_answers_with_hsts_secure_cookies_and_the_secrets_it_was_given():
    env = {**{k: v for k, v in os.environ.items() if k not in GOOD_ENV}, **GOOD_ENV,
           "DATABASE_URL": "postgres://clinops:from-the-environment@db.internal:5432/clinops"}
    result = subprocess.run([sys.executable, "-c", PRODUCTION_PROBE], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["redirect"] == [301, "https://clinops.example.org/login/"]
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert "frame-ancestors 'none'" in seen["csp"] and seen["frame"] == "DENY"
    assert seen["csrf_cookie"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert seen["session_cookie"] == [True, True, "Lax"]
    assert seen["secret_key"] == GOOD_ENV["SECRET_KEY"] and seen["database_password"] == "from-the-environment"
