"""Cross-cutting HTTP behaviour of every page and API answer."""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable

import structlog
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control

from clinops.base import metrics
from clinops.views import OWN_PAGE_FLAG, not_found

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's (or the proxy's) own id is kept when it is a plain token of reasonable length (a uuid,
# nginx's $request_id); anything else could forge or garble log lines and is replaced.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{7,63}")


def request_id(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Every log line written while answering a request carries its `request_id`, and so do those of
    the tasks it sends (clinops/celery_app.py), so one upload can be followed from the API to the
    worker's estimate. The id is the caller's `X-Request-ID` when sane, else a new one, and is
    returned in the answer's `X-Request-ID`."""
    def middleware(request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # Bound for this request only: the previous values come back after it (a gunicorn thread
        # answers request after request).
        with structlog.contextvars.bound_contextvars(request_id=rid):
            response = get_response(request)
        response[REQUEST_ID_HEADER] = rid
        return response

    return middleware


def request_metrics(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """How long each answer took, by route name, method and status class (clinops/base/metrics.py)."""
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
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if (settings.DEBUG and response.status_code == 404 and not getattr(response, OWN_PAGE_FLAG, False)
                and response.get("Content-Type", "").startswith("text/html")):
            return not_found(request)
        return response

    return middleware
