"""The device upload throttle (one Lua script in Redis) lets through and refuses exactly what DRF's
SimpleRateThrottle does, with the same Retry-After, and lets uploads through while Redis is down
(no database)."""
import itertools
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.throttling import SimpleRateThrottle

from monitoring.ingest import apis
from monitoring.ingest.apis import DeviceUploadThrottle
from patients.permissions import DevicePrincipal

_device_ids = itertools.count(10_000_000)


def _request(device_pk: int):
    return SimpleNamespace(user=DevicePrincipal(SimpleNamespace(pk=device_pk, serial="S")))


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _pair(rate: str, clock: _Clock):
    ours = type("Ours", (DeviceUploadThrottle,), {"rate": rate, "timer": clock})
    reference_cache = LocMemCache("reference", {})
    reference = type("Reference", (SimpleRateThrottle,), {
        "rate": rate, "timer": clock, "cache": reference_cache,
        "get_cache_key": lambda self, request, view: f"ref-{request.user.device.pk}",
    })
    return ours, reference


@settings(max_examples=40, deadline=None)
@given(limit=st.integers(1, 5), period=st.sampled_from(["s", "m"]),
       steps=st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=30))
def test_the_same_answers_and_retry_after_as_drf(limit, period, steps):
    clock = _Clock()
    ours, reference = _pair(f"{limit}/{period}", clock)
    request = _request(next(_device_ids))
    for step in steps:
        clock.now += step if period == "m" else step / 20
        a, b = ours(), reference()
        allowed = a.allow_request(request, None)
        assert allowed == b.allow_request(request, None)
        if not allowed:
            assert a.wait() == pytest.approx(b.wait())


def test_runs_in_redis_here():
    from django.core.cache import caches

    assert isinstance(caches["default"], RedisCache)
    assert apis._sliding_window_script(cache) is not None


def test_uploads_are_let_through_while_redis_is_down(monkeypatch):
    down = RedisCache("redis://127.0.0.1:9/0", {"OPTIONS": {"socket_connect_timeout": 0.2}})
    throttle = type("Down", (DeviceUploadThrottle,), {"rate": "1/min", "cache": down})
    request = _request(next(_device_ids))
    assert all(throttle().allow_request(request, None) for _ in range(3))
