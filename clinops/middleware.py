"""Cross-cutting HTTP behaviour of every page and API answer."""
from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_cache_control


def no_store(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """`Cache-Control: no-store` on every answer the application makes (pages and API answers carry
    patient data: no browser or proxy may keep them); static files are answered by WhiteNoise
    before this runs, with their own long-lived caching."""
    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        patch_cache_control(response, no_store=True)
        return response

    return middleware
