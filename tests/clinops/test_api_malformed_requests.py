"""Bad input, in process: at least 1,000 malformed requests per API operation (every /api/v1/
operation of the OpenAPI schema, and FHIR's Patient/$everything); every answer is no 5xx, the
error envelope with field-level errors wherever the API could read the body or query, and nothing
stored for a refused request. Counted: test_every_operation_got_1000_malformed_requests, last in
this file, asserts at least REQUIRED_PER_OPERATION (1,000) per operation and prints the table.

Two generators, both through the whole Django stack (middleware, session, CSRF, DRF) in this
process: no server, no socket, no thread.

1. schemathesis 4.32.5 in negative mode (`CLINOPS_MALFORMED_EXAMPLES`, default 500 per operation,
   plus its deterministic coverage phase): the schema broken one location at a time (wrong types,
   numbers out of range, required fields left out, strings past maxLength, unknown enum values,
   ids that are not integers, malformed query values, methods the path lacks), sent by
   schemathesis' WSGI transport to Django's WSGIHandler with the live-server test's checks
   (test_api_schemathesis.py: its schema loader, hooks and clinic) plus field_level_errors.
   Integer path ids always address the clinic's rows here, so that a broken body reaches
   validation rather than a 404. schemathesis has nothing to break in GET /api/v1/device/ (no
   parameter, no body) and skips it; FHIR is not in the schema.
2. hypothesis, requests built byte by byte (`CLINOPS_RAW_EXAMPLES`, default 500 per operation,
   topped up to 1,000 with what schemathesis sent; all 1,000 for GET /api/v1/device/ and FHIR),
   for what a schema cannot say: bytes that are not JSON, truncated JSON, NaN/Infinity literals,
   5,000-digit integers, invalid UTF-8, a byte-order mark, deep nesting, a wrong Content-Type, a
   false `Content-Encoding: gzip`, one field of a valid body replaced by a value that very field
   refuses (the 400 must name it) or dropped, a batch of broken windows (each rejected by name),
   ids that are not ids, junk query strings, made-up API keys, no session, a wrong CSRF token,
   methods the route lacks. Sent with django.test.Client, which re-raises a view's exception, so
   a 5xx fails with its traceback and hypothesis' shrunk request.

Every request runs in a savepoint rolled back after it (state does not drift: the suggestion
stays pending, the spare device unrevoked), the rows of test_api_schemathesis.STORED are counted
before and after it (one query), and a refused request must leave them as they were.

Passes: all of it in the SQLite pass (schemathesis' part is not `integration`: the live-server
test is the HTTP-level proof in both passes). The hand-built part is `integration`, which puts it
in the PostgreSQL pass too, at RAW_PER_OPERATION_POSTGRES (150) per operation, for what
PostgreSQL does differently (NUL characters, jsonb, integer overflow); the count is asserted in
the SQLite pass.

Cost, measured with `python -m tests.run` on a 2-core machine shared with other test runs (load
3-4): SQLite pass ~4 min (schemathesis ~12,500 requests, ~11 ms each with their generation, ~2.3
min; by hand ~12,500, ~5 ms each and FHIR's ~30 ms, ~1.6 min); PostgreSQL pass ~45 s. Fixed seed
(`CLINOPS_FUZZ_SEED`), so CI is reproducible.

Found here and fixed in the product (the regression tests at the end keep them fixed): JSON nested
~1,000 deep on the session routes and inside a batch's windows (RecursionError), impossible or
out-of-range instants in FHIR's `_since`/`end`, and on PostgreSQL a NUL character in a plan's
`exclusions` and in an API key (DataError).
"""
from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.conf import settings as django_settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection, transaction
from django.test import Client
from django.utils import timezone
from django.utils.crypto import get_random_string
from hypothesis import HealthCheck, given, reject, seed, settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.fields import empty
from schemathesis.specs.openapi.checks import ignored_auth

from tests.clinops.test_api_schemathesis import (  # noqa: F401 - callers is a fixture used here
    EXCLUDED_CHECKS,
    KNOWN_IDS,
    RAW_SCHEMA,
    SEED,
    build_clinic,
    callers,
    error_responses_conform,
    is_device_only,
    load_schema,
    stored_counts,
)

MALFORMED_PER_OPERATION = int(os.environ.get("CLINOPS_MALFORMED_EXAMPLES", "500"))
RAW_PER_OPERATION = int(os.environ.get("CLINOPS_RAW_EXAMPLES", "500"))
# In the PostgreSQL pass, for what PostgreSQL does differently (the count is the SQLite pass's).
RAW_PER_OPERATION_POSTGRES = int(os.environ.get("CLINOPS_RAW_EXAMPLES_POSTGRES", "150"))
# The count README "Security" promises (>= 1,000 malformed requests), per operation, both generators together.
REQUIRED_PER_OPERATION = int(os.environ.get("CLINOPS_MALFORMED_REQUIRED", "1000"))

# Malformed requests sent and answered, per operation label ("POST /api/v1/windows/").
SCHEMATHESIS_SENT: Counter[str] = Counter()
RAW_SENT: Counter[str] = Counter()
RAW_KINDS: dict[str, Counter[str]] = {}

# 400s without field errors are only for a body that could not be read at all.
PARSE_ERRORS = ("JSON parse error", "Multipart form parse error", "Malformed request", "The body is not valid JSON",
                "The body is not valid gzip", "The body nests too deeply", "JSON holds the non-standard literal")


def real_rows(context, path_parameters: dict[str, Any]):
    """Integer ids address the clinic's rows (a malformed body then reaches validation); a
    malformed id (schemathesis' negative path cases) is sent as generated."""
    if path_parameters and all(isinstance(v, int) and k in KNOWN_IDS for k, v in path_parameters.items()):
        return st.just({k: KNOWN_IDS[k] for k in path_parameters})
    return st.just(path_parameters)


malformed = load_schema(RAW_SCHEMA, examples=MALFORMED_PER_OPERATION, mode="negative", path_parameters=real_rows)


@pytest.fixture
def clinic(db, fresh_cache, monkeypatch):
    """As in test_api_schemathesis, on the test's own transaction (each request is a savepoint)."""
    yield from build_clinic(monkeypatch)


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, without the connection cleanup around each request that would close
    the test's transaction (what django.test.Client does too)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def quiet_request_log():
    """No django.request record: its warning per 4xx (thousands here) costs time, and its rich
    traceback of a 5xx with a 900-deep body takes minutes. A 5xx still fails the test, with its
    exception (django.test.Client and schemathesis' WSGI transport re-raise it)."""
    logger = logging.getLogger("django.request")
    logger.disabled = True
    yield
    logger.disabled = False


def assert_error_envelope(status: int, body: Any, request: str) -> None:
    """{"message": str, "extra": {...}}; a 400 names the fields at fault ({"fields": {...}}, with
    DRF's field errors beside them) unless the body could not be parsed at all."""
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and isinstance(body.get("extra"), dict), (
        f"{request}: a {status} body is not the API's {{'message', 'extra'}}: {str(body)[:500]}")
    if status != 400:
        return
    fields = body["extra"].get("fields")
    if fields is None:
        assert body["message"].startswith(PARSE_ERRORS), f"{request}: a 400 without field errors: {body}"
        return
    assert isinstance(fields, dict) and fields, f"{request}: a 400 with empty field errors: {body}"
    if body["message"] == "Validation failed.":
        assert {k: v for k, v in body.items() if k not in ("message", "extra")} == fields, body


def field_level_errors(ctx, response, case) -> None:
    """schemathesis check: every 400 is the envelope with field-level errors (or a parse error)."""
    if response.status_code == 400:
        assert_error_envelope(400, response.json(), f"{case.method} {case.formatted_path}")


def in_process(callers: dict, operation) -> dict:
    """The live test's callers for schemathesis' WSGI transport: Werkzeug's client replaces a
    Cookie header with its own jar, so the session and CSRF cookies go in as cookies."""
    if is_device_only(operation):
        return {"headers": callers["device"]}
    clinician = callers["clinician"]
    cookies = dict(part.split("=", 1) for part in clinician["Cookie"].split("; "))
    return {"headers": {"X-CSRFToken": clinician["X-CSRFToken"]}, "cookies": cookies}


@malformed.parametrize()
def test_schemathesis_malformed_requests_are_refused(case, clinic, callers, wsgi_app, quiet_request_log):
    """The live test's checks (ignored_auth aside: it takes cookies passed as cookies for made-up
    credentials; the live test covers it) and field_level_errors; nothing stored when refused."""
    with transaction.atomic():
        before = stored_counts()
        response = case.call_and_validate(
            app=wsgi_app, **in_process(callers, case.operation),
            excluded_checks=[*EXCLUDED_CHECKS, ignored_auth], additional_checks=[error_responses_conform, field_level_errors],
        )
        if response.status_code >= 400:
            assert stored_counts() == before, f"{case.operation.label} answered {response.status_code} but stored rows"
        transaction.set_rollback(True)
    if case._meta is not None and case._meta.generation.mode.is_negative:
        SCHEMATHESIS_SENT[case.operation.label] += 1


# --- Requests built by hand --------------------------------------------------------------------

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
FHIR_EVERYTHING = "GET /fhir/Patient/{patient_id}/$everything"


@dataclass(frozen=True)
class Route:
    label: str
    method: str
    path: str  # template, e.g. /api/v1/patients/{patient_id}/doses/
    device: bool  # the device's API key (else the clinician's session)
    query: tuple[str, ...]  # declared query parameters
    methods: frozenset[str]  # the methods the path has
    statuses: frozenset[int]  # declared response statuses (FHIR: what it answers)
    fhir: bool = False

    @property
    def path_parameters(self) -> list[str]:
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]


def routes_of(raw: dict) -> list[Route]:
    found = []
    for path, item in raw["paths"].items():
        methods = frozenset(m.upper() for m in item if m.upper() in HTTP_METHODS)
        for method, operation in item.items():
            if method.upper() not in HTTP_METHODS:
                continue
            security = operation.get("security", [])
            found.append(Route(
                label=f"{method.upper()} {path}", method=method.upper(), path=path,
                device=all("DeviceApiKey" in requirement for requirement in security),
                query=tuple(p["name"] for p in operation.get("parameters", []) if p["in"] == "query"),
                methods=methods, statuses=frozenset(int(code) for code in operation["responses"] if code.isdigit()),
            ))
    found.append(Route(label=FHIR_EVERYTHING, method="GET", path="/fhir/Patient/{patient_id}/$everything", device=False,
                       query=("_since", "end"), methods=frozenset({"GET"}),
                       statuses=frozenset({200, 400, 403, 404, 405}), fhir=True))
    return found


ROUTES = routes_of(RAW_SCHEMA)
# Where schemathesis has nothing to break, the hand-built requests make the whole count.
RAW_ONLY = {"GET /api/v1/device/", FHIR_EVERYTHING}


def _window(sequence: int, recorded_at: dt.datetime) -> dict:
    samples = base64.b64encode(bytes(2 * 1000)).decode()  # 8 s at 125 Hz of int16 zeros
    channel = {"fs": 125.0, "data": samples, "dtype": "int16"}
    return {"sequence": sequence, "recorded_at": recorded_at.isoformat(), "duration_s": 8.0, "ecg": dict(channel),
            "ppg": dict(channel)}


def _bodies() -> dict[str, tuple[type[serializers.Serializer], Callable[[dict], dict]]]:
    """Per write operation: its input serializer, and a valid body (what the mutations break)."""
    from monitoring.ingest.apis import CuffReadingInput
    from monitoring.ingest.serializers import BatchInput, WindowInput
    from patients.apis import DeviceRevokeApi
    from therapy.apis import ApproveInput, DoseLogInput, ModifyInput, PlanInput, RejectInput, SymptomReportInput

    def cuff(ctx):
        return {"measured_at": (ctx["now"] - dt.timedelta(hours=1)).isoformat(), "sbp_mmhg": 138, "dbp_mmhg": 86}

    return {
        "POST /api/v1/windows/": (WindowInput, lambda ctx: _window(7000, ctx["now"] - dt.timedelta(minutes=2))),
        "POST /api/v1/windows/batch/": (BatchInput, lambda ctx: {"windows": [_window(7001, ctx["now"] - dt.timedelta(minutes=3))]}),
        "POST /api/v1/cuff-readings/": (CuffReadingInput, cuff),
        "POST /api/v1/patients/{patient_id}/cuff-readings/": (CuffReadingInput, cuff),
        "POST /api/v1/devices/{device_id}/revoke/": (DeviceRevokeApi.InputSerializer, lambda ctx: {"reason": "lost"}),
        "POST /api/v1/patients/{patient_id}/doses/": (DoseLogInput, lambda ctx: dict(ctx["dose"])),
        "POST /api/v1/patients/{patient_id}/plan/": (PlanInput, lambda ctx: {"reason": "tighter target", "target_sbp_mmhg": 130}),
        "POST /api/v1/patients/{patient_id}/symptom-reports/": (SymptomReportInput, lambda ctx: {"kind": "symptom", "symptom": "dizziness"}),
        "POST /api/v1/suggestions/{suggestion_id}/approve/": (ApproveInput, lambda ctx: {"note": "agreed"}),
        "POST /api/v1/suggestions/{suggestion_id}/modify/": (ModifyInput, lambda ctx: {"to_rung": 1, "reason": "slower"}),
        "POST /api/v1/suggestions/{suggestion_id}/reject/": (RejectInput, lambda ctx: {"reason": "not now"}),
    }


BODIES = _bodies()


@dataclass
class Malformed:
    """One hand-built request and what must come back."""

    kind: str  # what is wrong with it (reported per operation)
    method: str
    path: str
    query: str = ""
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False  # without the clinician's session
    csrf: bool = True  # with a matching CSRF token (session callers)
    expect: frozenset[int] = frozenset({400})
    must_name: str | None = None  # the field the 400 must name (a batch: one per window, "|"-joined)
    batch_rejected: int | None = None  # a batch of broken windows: 200, each rejected

    def describe(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return (f"[{self.kind}] {self.method} {self.path}{query} Content-Type: {self.content_type} "
                f"headers={self.headers} anonymous={self.anonymous} csrf={self.csrf} body={self.body[:300]!r}")


# Values nested this deep stand in for a field's value; json.dumps (which builds the bodies here)
# recurses once per level. Whole bodies nest up to 200,000 deep (syntax_errors).
SAFE_NESTING = 400

# Values a field may be sent instead of a good one; a mutation keeps only those that field refuses.
SPECIAL_STRINGS = [
    "", " ", "\t\n", "NaN", "nan", "Infinity", "-Infinity", "1e999", "-1e999", "0x1F", "1_000", "١٢٣", "１２", "true",
    "null", "None", "[]", "{}", "2026-02-30", "2026-11-23T25:61:00Z", "2026-11-23T12:99:00Z", "2026-11-23T10:00:00",
    "0000-00-00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "\x00", "a\x00b", "\ud800", "\u202e",
    "\ufeff", "AAAA====", "!!!!", "====", "A", "x" * 3000, "' OR 1=1 --", "<script>", "../../etc/passwd", "%00", "%s%n",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), st.integers(max_value=-(2**63)),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40), st.sampled_from(SPECIAL_STRINGS),
)
junk_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
deep_values = st.integers(2, SAFE_NESTING).map(lambda depth: json.loads("[" * depth + "]" * depth))
junk_text = st.one_of(st.text(max_size=40), st.sampled_from(SPECIAL_STRINGS), st.integers().map(str),
                      st.integers(min_value=2**63).map(str), st.floats().map(str))
# A header value as a server passes it on: Latin-1 without control characters (RFC 9110).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
# A path segment Django's <int:...> does not match ("/" left out: it would make another path).
not_an_id = st.one_of(
    st.text(min_size=1, max_size=20).filter(lambda s: "/" not in s and not (s.isascii() and s.isdigit())),
    st.sampled_from(["-1", "0x1", "1e3", "1.0", "١", "１", " 1", "1 ", "%00", "..", ".", "1;2", "null", "{id}"]),
)
NOT_JSON_TYPES = ["text/plain", "application/xml", "application/octet-stream", "text/html", "image/png",
                  "application/x-json-stream", "text/json"]




def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


def _refuses(serializer_class, name: str, value: Any) -> bool:
    """Whether the serializer's field refuses the value on its own (the error then names it)."""
    try:
        serializer_class().fields[name].run_validation(value)
    except serializers.ValidationError:
        return True
    return False


@st.composite
def broken_body(draw, serializer_class, valid: dict) -> tuple[str, dict | Any, str | None]:
    """A valid body with one field replaced by a value that field refuses, or dropped, or a
    non-object body; returns (kind, body, field the error must name)."""
    names = sorted(serializer_class().fields)
    choice = draw(st.sampled_from(["field-value", "field-value", "field-missing", "not-an-object"]))
    if choice == "not-an-object":
        return choice, draw(st.one_of(st.lists(junk_values, max_size=3), scalars)), None
    if choice == "field-missing":
        required = [n for n in names if serializer_class().fields[n].required and n in valid]
        if required:
            name = draw(st.sampled_from(required))
            return choice, {k: v for k, v in valid.items() if k != name}, name
    name = draw(st.sampled_from(names))
    original = valid.get(name, empty)
    if isinstance(original, dict) and draw(st.booleans()):
        # Inside a nested object (a window's channel): one of its fields replaced or dropped.
        inner = draw(st.sampled_from(sorted(original)))
        replaced = dict(original)
        if draw(st.booleans()):
            replaced.pop(inner)
        else:
            replaced[inner] = draw(junk_values)
        value = replaced
    else:
        value = draw(st.one_of(junk_values, deep_values))
    if not _refuses(serializer_class, name, value):
        reject()
    return "field-value", {**valid, name: value}, name


def syntax_errors(valid: dict, *, device: bool) -> st.SearchStrategy[tuple[str, bytes]]:
    """A body that is not (one) JSON document, or not UTF-8."""
    text = _json(valid)
    key = sorted(valid)[0]
    with_literal = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1" + b"0" * 5000]).map(
        lambda literal: _json({**valid, key: "__LITERAL__"}).replace(b'"__LITERAL__"', literal))
    max_depth = 200_000
    nested = st.tuples(st.integers(2, max_depth), st.booleans()).map(lambda d: b"[" * d[0] + (b"]" * d[0] if d[1] else b""))

    def not_json(data: bytes) -> bool:
        try:
            json.loads(data.decode("utf-8"))
        except ValueError:
            return True
        return False

    return st.one_of(
        st.integers(1, len(text) - 1).map(lambda i: ("truncated", text[:i])),
        st.sampled_from([b"}", b",", b"x", b"{}", b"\x00", b" garbage", b"]", b'"'])
        .map(lambda tail: ("trailing garbage", text + tail)),
        st.binary(min_size=1, max_size=300).filter(not_json).map(lambda data: ("not JSON", data)),
        st.integers(0, len(text)).map(lambda i: ("invalid UTF-8", text[:i] + b"\xff" + text[i:])),
        with_literal.map(lambda data: ("non-standard literal", data)),
        nested.map(lambda data: ("deep nesting", data)),
        st.just(("byte-order mark", b"\xef\xbb\xbf" + text)),
    )


@st.composite
def malformed_request(draw, route: Route, ctx: dict) -> Malformed:
    ids = {name: KNOWN_IDS[name] for name in route.path_parameters}
    path = route.path.format(**ids)
    body_spec = BODIES.get(route.label)
    valid = body_spec[1](ctx) if body_spec else None
    valid_bytes = _json(valid) if valid is not None else b""
    kinds = ["method", "credentials"]
    if route.path_parameters:
        kinds.append("path id")
    if route.method == "GET":
        kinds += ["query"] * 3
    if not route.device and route.method != "GET":
        kinds.append("csrf")
    if body_spec:
        kinds += ["body field"] * 4 + ["body syntax"] * 2 + ["content type", "gzip"]
        if route.label == "POST /api/v1/windows/batch/":
            kinds += ["batch items"] * 2 + ["batch size"]
    kind = draw(st.sampled_from(kinds))
    request = Malformed(kind=kind, method=route.method, path=path,
                        body=valid_bytes if route.method != "GET" else b"")

    if kind == "method":
        others = sorted(set(HTTP_METHODS) - route.methods)
        request.method = draw(st.sampled_from(others))
        request.expect = frozenset({405})
    elif kind == "credentials":
        if route.device:
            key = ctx["key"]
            prefix = key.partition(".")[0]
            request.headers["Authorization"] = draw(st.one_of(
                header_text.map(lambda s: f"Api-Key {prefix}.{s}"),
                header_text.map(lambda s: f"Api-Key {s}"),
                st.sampled_from([f"Bearer {key}", "Api-Key", f"Api-Key {prefix}.", f"Token {key}", f"Basic {key}",
                                 f"Api-Key {key[:-1]}", f"Api-Key .{key.partition('.')[2]}", ""]),
            ).filter(lambda value: value != f"Api-Key {key}"))
            request.expect = frozenset({401, 403})
        else:
            request.anonymous = True
            cookie = draw(st.one_of(st.just(None), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                                          exclude_characters=";,\"\\"), max_size=40)))
            if cookie is not None:
                request.headers["Cookie"] = f"{django_settings.SESSION_COOKIE_NAME}={cookie}"
            # 403, or 401 where the device key is the first way in (GET /api/v1/windows/{id}/).
            request.expect = frozenset({401, 403})
    elif kind == "csrf":
        request.csrf = False
        token = draw(st.one_of(st.none(), header_text))
        if token is not None:
            request.headers["X-CSRFToken"] = token
        request.expect = frozenset({403})
    elif kind == "path id":
        name = draw(st.sampled_from(route.path_parameters))
        segment = draw(st.one_of(not_an_id.map(lambda s: quote(s, safe="", errors="surrogatepass")),
                                 st.integers(min_value=2**63).map(str), st.integers(10**6, 2**62).map(str)))
        request.path = route.path.format(**{**ids, name: segment})
        request.expect = frozenset({404})
    elif kind == "query":
        names = st.sampled_from([*route.query, "unknown", "x" * 300, "", "limit[]", "$where"])
        pairs = draw(st.lists(st.tuples(names, junk_text), min_size=1, max_size=4))
        raw_tail = draw(st.sampled_from(["", "&%", "&%zz", "&%ff%fe=1", "&=", "&&&", "&a=%00", "&day=%E0%A4%A"]))
        request.query = urlencode(pairs, errors="surrogatepass") + raw_tail  # a lone surrogate: bad UTF-8
        # Reads are lenient with junk they do not know or cannot read as a filter (200); a value
        # they read and refuse is a 400 naming it.
        request.expect = frozenset({200, 400})
    elif kind == "body field":
        serializer_class, _ = body_spec
        what, body, name = draw(broken_body(serializer_class, valid))
        request.kind, request.body, request.must_name = f"body {what}", _json(body), name
        request.expect = frozenset({400})
    elif kind == "body syntax":
        what, request.body = draw(syntax_errors(valid, device=route.device))
        request.kind = f"body {what}"
        request.expect = frozenset({400})
    elif kind == "content type":
        types = list(NOT_JSON_TYPES)
        serializer_class = body_spec[0]
        if not route.device:
            # Session routes parse forms too: the JSON text as a form is a form without the
            # required fields (400), and a multipart body without its boundary does not parse.
            types.append("multipart/form-data")
            if any(f.required for f in serializer_class().fields.values()):
                types.append("application/x-www-form-urlencoded")
        request.content_type = draw(st.sampled_from(types))
        request.expect = frozenset({400, 415})
    elif kind == "gzip":
        request.headers["Content-Encoding"] = "gzip"
        zipped = gzip.compress(valid_bytes, mtime=0)
        if route.device:
            request.body = draw(st.one_of(
                st.just(valid_bytes),  # not gzip at all
                # cut short, before the closing brace is inflated (a cut gzip trailer alone inflates all of it)
                st.integers(0, len(zipped) // 2).map(lambda i: zipped[:i]),
                syntax_errors(valid, device=True).map(lambda broken: gzip.compress(broken[1], mtime=0)),
                st.just(gzip.compress(zipped, mtime=0)),  # zipped twice
            ))
        else:
            request.body = zipped  # DRF's JSONParser does not unzip: bytes that are not UTF-8
        request.expect = frozenset({400})
    elif kind == "batch items":
        from monitoring.ingest.serializers import WindowInput

        window = valid["windows"][0]
        items = draw(st.lists(broken_body(WindowInput, window), min_size=1, max_size=3))
        request.body = _json({"windows": [body for _, body, _ in items]})
        request.kind = "batch of broken windows"
        # A null item is rejected on its own, as any broken window (it once refused the whole batch).
        request.must_name = "|".join(name or "non_field_errors" for _, _, name in items)
        request.batch_rejected = len(items)
        request.expect = frozenset({200})
    elif kind == "batch size":
        window = valid["windows"][0]
        request.body = _json({"windows": draw(st.sampled_from([[], [window] * 101, {}, "windows", None]))})
        request.must_name = "windows"
        request.expect = frozenset({400})
    return request


def check_answer(route: Route, request: Malformed, response) -> None:
    status, described = response.status_code, request.describe()
    assert status < 500, f"{described}\n-> {status}"
    assert status in request.expect, f"{described}\n-> {status} (expected {sorted(request.expect)}): {response.content[:500]!r}"
    if status < 400 and request.batch_rejected is None:
        return
    if route.fhir:
        # Unknown /fhir/ URLs (a non-integer id) included: clinops.views.not_found.
        assert response["Content-Type"].startswith("application/fhir+json"), f"{described}\n-> {status}"
        outcome = json.loads(response.content)
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"], outcome
        return
    body = response.json()
    if request.batch_rejected is not None:
        assert (body["accepted"], body["duplicates"], body["rejected"]) == (0, 0, request.batch_rejected), body
        for result, name in zip(body["results"], request.must_name.split("|"), strict=True):
            assert result["result"] == "rejected" and name in result["errors"], (described, result)
        return
    assert_error_envelope(status, body, described)
    if status == 400 and request.must_name is not None:
        assert request.must_name in body["extra"]["fields"], f"{described}\n-> the 400 does not name {request.must_name}: {body}"
    if status == 400 and request.kind == "query":
        assert set(body["extra"]["fields"]) <= set(route.query), f"{described}\n-> {body}"


@pytest.fixture
def raw_context(clinic):
    from therapy.adherence import scheduled_doses
    from therapy.plans import ladder_of
    from therapy.selectors import plan_current

    patient, today = clinic["patient"], timezone.localdate()
    plan = plan_current(patient)
    dose = scheduled_doses(ladder_of(plan).rungs[plan.current_rung], today)[0]
    return {"now": timezone.now(), "key": clinic["key"],
            "dose": {"day": today.isoformat(), "drug": dose.drug, "slot": dose.slot, "taken": True}}


def clients(clinic) -> dict[str, Client]:
    """A clinician's session (with CSRF checked, as for a browser) and a client without one."""
    session = Client(enforce_csrf_checks=True)
    session.force_login(clinic["clinician"])
    return {"session": session, "anonymous": Client(enforce_csrf_checks=True)}


def send(clients: dict[str, Client], route: Route, request: Malformed, ctx: dict):
    client = clients["anonymous" if request.anonymous else "session"]
    headers = dict(request.headers)
    if route.device and "Authorization" not in headers and request.kind != "credentials":
        headers["Authorization"] = f"Api-Key {ctx['key']}"
    if not route.device and not request.anonymous and request.csrf:
        token = get_random_string(32)
        client.cookies[django_settings.CSRF_COOKIE_NAME] = token
        headers["X-CSRFToken"] = token
    elif not request.csrf:
        client.cookies[django_settings.CSRF_COOKIE_NAME] = get_random_string(32)
    path = f"{request.path}?{request.query}" if request.query else request.path
    return client.generic(request.method, path, request.body, content_type=request.content_type, headers=headers)


def run_raw(route: Route, clinic, ctx, examples: int) -> None:
    the_clients = clients(clinic)
    kinds = RAW_KINDS.setdefault(route.label, Counter())

    @seed(SEED)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=malformed_request(route, ctx))
    def one(request: Malformed) -> None:
        with transaction.atomic():
            before = stored_counts()
            response = send(the_clients, route, request, ctx)
            if response.status_code >= 400 or request.batch_rejected is not None:
                assert stored_counts() == before, f"{request.describe()}\n-> {response.status_code} but stored rows"
            transaction.set_rollback(True)
        check_answer(route, request, response)
        RAW_SENT[route.label] += 1
        kinds[request.kind] += 1

    one()


def raw_examples(route: Route) -> int:
    """RAW_PER_OPERATION, topped up to REQUIRED_PER_OPERATION with what schemathesis sent for the
    operation in this session (it runs first); all of it where schemathesis has nothing to break.
    In the PostgreSQL pass (no schemathesis, no count): RAW_PER_OPERATION_POSTGRES."""
    if connection.vendor == "postgresql":
        return RAW_PER_OPERATION_POSTGRES
    if route.label in RAW_ONLY:
        return REQUIRED_PER_OPERATION
    if route.label in SCHEMATHESIS_SENT:
        return max(RAW_PER_OPERATION, REQUIRED_PER_OPERATION - SCHEMATHESIS_SENT[route.label])
    return RAW_PER_OPERATION


@pytest.mark.integration
@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.label)
def test_hand_built_malformed_requests_are_refused(route, clinic, raw_context, quiet_request_log):
    run_raw(route, clinic, raw_context, raw_examples(route))


def test_the_valid_bodies_the_mutations_start_from_are_accepted(clinic, raw_context):
    """The hand-built mutations break one thing of a body the API accepts: each is accepted as is."""
    the_clients = clients(clinic)
    for route in ROUTES:
        if route.label not in BODIES:
            continue
        request = Malformed(kind="valid", method=route.method, path=route.path.format(
            **{name: KNOWN_IDS[name] for name in route.path_parameters}), body=_json(BODIES[route.label][1](raw_context)))
        with transaction.atomic():
            response = send(the_clients, route, request, raw_context)
            transaction.set_rollback(True)
        assert 200 <= response.status_code < 300, (route.label, response.status_code, response.content[:500])
        if route.label == "POST /api/v1/windows/batch/":
            assert response.json()["accepted"] == 1, response.json()


def test_every_operation_is_fuzzed_by_hand_and_every_write_has_a_valid_body():
    labels = {route.label for route in ROUTES}
    writes = {f"{m.upper()} {p}" for p, item in RAW_SCHEMA["paths"].items() for m, op in item.items()
              if m.upper() in HTTP_METHODS and "requestBody" in op}
    assert set(BODIES) == writes - {"POST /api/v1/suggestions/{suggestion_id}/acknowledge/"}
    assert len(labels) == len({f"{m.upper()} {p}" for p, item in RAW_SCHEMA["paths"].items() for m in item
                               if m.upper() in HTTP_METHODS}) + 1


# --- The 5xx found here, fixed in the product ----------------------------------------------------

def test_deeply_nested_json_on_a_session_route_is_a_parse_error(clinic, quiet_request_log):
    session = Client()  # CSRF not checked: the request reaches the parser (clinops.base.parsers)
    session.force_login(clinic["clinician"])
    response = session.post(f"/api/v1/suggestions/{KNOWN_IDS['suggestion_id']}/reject/", b"[" * 100_000,
                            content_type="application/json")
    assert response.status_code == 400 and "nests too deeply" in response.json()["message"]


def test_a_batch_window_nested_just_under_the_parsers_limit_is_rejected_not_a_500(clinic, quiet_request_log):
    client = Client()
    for depth in range(700, 1000, 7):  # where DRF's JSONField used to re-serialise it into a RecursionError
        response = client.post("/api/v1/windows/batch/", b'{"windows": [' + b"[" * depth + b"]" * depth + b"]}",
                               content_type="application/json", headers={"Authorization": f"Api-Key {clinic['key']}"})
        assert response.status_code in (200, 400), (depth, response.status_code)
        if response.status_code == 200:
            assert response.json()["rejected"] == 1


@pytest.mark.parametrize("query", ["_since=2026-13-45", "_since=2026-01-01T25:00:00Z", "end=0001-01-01",
                                   "end=0001-01-01T00:00:00%2B14:00", "_since=9999-12-31T23:59:59-14:00"])
def test_fhir_impossible_or_extreme_instants_are_a_400(clinic, query, quiet_request_log):
    session = clients(clinic)["session"]
    response = session.get(f"/fhir/Patient/{KNOWN_IDS['patient_id']}/$everything?{query}")
    assert response.status_code == 400


@pytest.mark.postgres
def test_nul_in_a_plans_exclusions_is_refused_on_postgresql(clinic):
    from therapy.models import PlanVersion

    session = Client()
    session.force_login(clinic["clinician"])
    before = PlanVersion.objects.count()
    response = session.post(f"/api/v1/patients/{KNOWN_IDS['patient_id']}/plan/", content_type="application/json",
                            data=b'{"reason": "x", "exclusions": [{"kind": "pregnancy", "detail": "a\\u0000"}]}')
    assert response.status_code == 400 and "exclusions" in response.json()["extra"]["fields"]
    assert PlanVersion.objects.count() == before


@pytest.mark.postgres
def test_nul_in_an_api_key_is_an_unknown_key_on_postgresql(clinic):
    assert Client().get("/api/v1/device/", headers={"Authorization": "Api-Key a\x00.b"}).status_code == 401


def test_every_operation_got_1000_malformed_requests(capsys):
    """Last in this file: the count per operation, both generators, asserted and printed (to the
    terminal, past pytest's capture)."""
    if not SCHEMATHESIS_SENT and not RAW_SENT:
        pytest.skip("run together with the fuzzing tests above")
    lines, short = [], []
    for route in ROUTES:
        total = SCHEMATHESIS_SENT[route.label] + RAW_SENT[route.label]
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(RAW_KINDS.get(route.label, Counter()).items()))
        lines.append(f"{route.label:60} schemathesis {SCHEMATHESIS_SENT[route.label]:5} + by hand "
                     f"{RAW_SENT[route.label]:5} = {total:5}  ({kinds})")
        if total < REQUIRED_PER_OPERATION:
            short.append(route.label)
    with capsys.disabled():
        print("\nMalformed requests sent per operation:\n" + "\n".join(lines))
    assert not short, f"fewer than {REQUIRED_PER_OPERATION} malformed requests for {short}:\n" + "\n".join(lines)
