"""Cross-cutting HTTP behaviour of every page and API answer."""
from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control

from clinops import metrics


def request_metrics(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """How long each answer took, by route name, method and status class (clinops/metrics.py)."""
    def middleware(request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = get_response(request)
        metrics.observe_request(request, response, time.perf_counter() - started)
        return response

    return middleware


def no_store(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """`Cache-Control: no-store` on every answer the application makes (pages and API answers carry
    patient data: no browser or proxy may keep them); static files are answered by WhiteNoise
    before this runs, with their own long-lived caching."""
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        patch_cache_control(response, no_store=True)
        return response

    return middleware


def own_not_found_page(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """The app's own 404 page in every mode. With DEBUG on (the demo) Django answers an unknown
    address or another team's patient with its technical page, which lists every URL pattern;
    a clinician or patient should see the same page as in production."""
    from clinops.views import not_found

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if (settings.DEBUG and response.status_code == 404 and not getattr(response, "clinops_page", False)
                and response.get("Content-Type", "").startswith("text/html")):
            return not_found(request)
        return response

    return middleware
