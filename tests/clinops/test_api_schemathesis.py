"""The live API against its own OpenAPI schema: schemathesis sends valid and malformed requests to
every operation over HTTP (pytest-django's live_server: a real threaded server on the test
database), and every answer must be no 5xx, conform to the schema where the schema documents its
status, be the API's error envelope where it does not, and leave nothing stored when it refuses.

Callers: a clinician of a care team (session cookie + CSRF) for the session operations, the
patient's wearable (`Authorization: Api-Key ...`) for the device-only ones; schemathesis'
ignored_auth check replays each operation without them and with made-up ones (401/403 required).
Path ids are random (404s, which must conform too) or, for about half the cases, real rows: the
team's patient, a spare device, a processed window, a pending suggestion.

Cost: EXAMPLES_PER_OPERATION fuzzed requests per operation (22 operations), plus schemathesis'
examples and coverage phases (a fixed few hundred in all). At 50 the file takes about 1-1.5 min
per pass. Over HTTP a request costs several times what it costs in process, so the
1,000 malformed requests (README "Security") per route are sent by test_api_malformed_requests.py, in process, with
this file's schema loader, hooks, clinic and checks (CLINOPS_FUZZ_EXAMPLES=1000 here takes
roughly 25 min per pass: a nightly job at most).
"""
from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import pytest
import requests
import schemathesis
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django.utils.crypto import get_random_string
from hypothesis import strategies as st
from rest_framework import serializers
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.specs.openapi.checks import positive_data_acceptance, response_schema_conformance

from tests.factories import make_clinician, make_device, make_patient, make_team

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Requests hypothesis generates per operation in the fuzzing phase (valid and malformed).
EXAMPLES_PER_OPERATION = int(os.environ.get("CLINOPS_FUZZ_EXAMPLES", "50"))
# Fixed, so that CI is reproducible; set CLINOPS_FUZZ_SEED to explore other inputs.
SEED = int(os.environ.get("CLINOPS_FUZZ_SEED", "20261123"))

# Checks left out of schemathesis' default set (every other one runs: not_a_server_error,
# status_code_conformance — every operation declares its error statuses with the Error envelope,
# clinops.base.schema.declare_error_responses — and response_schema_conformance included):
# - positive_data_acceptance: a schema-valid window can still be refused with a field error
#   (channel length = rate x duration, time in range), which the schema cannot express.
EXCLUDED_CHECKS = [positive_data_acceptance]
# Undeclared statuses allowed, only with the error envelope: none beyond the declared ones but a
# method the operation does not have (schemathesis' probes). Never a 5xx.
UNDECLARED_ERRORS_ALLOWED = {405}

# Rows a refused request must not create (counted before and after each refused request).
STORED = [
    "monitoring.SignalWindow", "monitoring.CuffReading", "monitoring.Calibration",
    "therapy.PlanVersion", "therapy.DoseLog", "therapy.SymptomReport", "therapy.Alert",
    "clinops.AuditEvent", "patients.Device",
]


def generated_schema() -> dict:
    """The schema drf-spectacular generates, as plain JSON."""
    from drf_spectacular.generators import SchemaGenerator

    return json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))


def load_schema(raw: dict, *, examples: int, mode: str, path_parameters=None):
    """The schema loaded for fuzzing at collection, so that each operation is its own test;
    test_the_served_schema_is_the_one_fuzzed_and_valid checks that the live server serves the
    same. (schemathesis.pytest.from_fixture, which would fetch it from the live server, fails on
    pytest 9.2: it sets Node._nodeid, which pytest no longer has.) filter_failure is registered on
    it, and path_parameters (default flatmap_path_parameters) as its flatmap_path_parameters hook."""
    config = schemathesis.Config.from_dict({
        "seed": SEED,
        "suppress-health-check": ["all"],  # a live server is slow for hypothesis' taste; that is fine
        "generation": {
            "max-examples": examples,
            "mode": mode,  # "all": valid and malformed requests; "negative": malformed only
            # Credentials are ours (the callers fixture), not generated: made-up ones only reach 401.
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
        # Reads are lenient with malformed query strings by design: DRF's LimitOffsetPagination
        # falls back to its defaults (offset=null -> 0) and django-filter's boolean filters read
        # anything but true/false as "no filter" (urgent=null), so such a GET answers 200 with the
        # unfiltered page. Not a 5xx and not a schema violation of the response, so
        # negative_data_rejection is checked on the writes only; every other check runs on reads.
        "operations": [{"include-method": "GET", "checks": {"negative_data_rejection": {"enabled": False}}}],
    })
    loaded = schemathesis.openapi.from_dict(json.loads(json.dumps(raw)), config=config)
    loaded.hook("flatmap_path_parameters")(path_parameters or flatmap_path_parameters)
    loaded.hook(filter_failure)
    return loaded


KNOWN_IDS: dict[str, int] = {}  # real rows a path may address; set by the clinic fixture


def is_device_only(operation) -> bool:
    return all("DeviceApiKey" in requirement for requirement in operation.definition.raw.get("security", []))


def flatmap_path_parameters(context, path_parameters: dict[str, Any]):
    # About half the cases address real rows; the others keep their random (mostly unknown) ids.
    if not path_parameters or not all(isinstance(v, int) and k in KNOWN_IDS for k, v in path_parameters.items()):
        return st.just(path_parameters)
    return st.sampled_from([path_parameters, {k: KNOWN_IDS[k] for k in path_parameters}])


def filter_failure(context, failure, case, response) -> bool:
    """Keep every failure but two kinds of malformed body that the API accepted, both a reading of
    the body the schema cannot express:
    - DRF's fields read it as a valid one (a CharField trims surrounding whitespace, Python's idea
      of it included, and reads a number as text; an IntegerField reads "5" and 5.0; a BooleanField
      reads "true" and 1);
    - a form body (multipart or urlencoded; DRF's default parsers): a form carries text only, so a
      value schemathesis made an array, a number or null arrives as text ("null", "[1]"), an empty
      optional field as no field, and a body that is not an object as a form without fields."""
    if not isinstance(failure, AcceptedNegativeData):
        return True
    if case.media_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return False
    body = case.operation.get_body_for_media_type(case.media_type)
    if body is None or not isinstance(case.body, dict):
        return True
    object_schema = _resolved(body.optimized_schema, body.optimized_schema)
    fields = {"string": serializers.CharField, "integer": serializers.IntegerField,
              "number": serializers.FloatField, "boolean": serializers.BooleanField}
    as_read = dict(case.body)
    for name, property_schema in object_schema.get("properties", {}).items():
        property_schema = _resolved(property_schema, body.optimized_schema)
        field = None if "enum" in property_schema else fields.get(property_schema.get("type"))
        if field is not None and name in as_read:
            try:
                as_read[name] = field().to_internal_value(as_read[name])
            except (serializers.ValidationError, TypeError, ValueError):
                pass
    return not body.is_valid(as_read)


def _resolved(subschema: dict, bundle: dict) -> dict:
    """A subschema of schemathesis' bundled body schema with its top-level $ref followed."""
    ref = subschema.get("$ref", "")
    if ref.startswith("#/x-bundled/"):
        return bundle.get("x-bundled", {}).get(ref.rsplit("/", 1)[1], {})
    return subschema


RAW_SCHEMA = generated_schema()
schema = load_schema(RAW_SCHEMA, examples=EXAMPLES_PER_OPERATION, mode="all")


@pytest.fixture
def clinic(transactional_db, fresh_cache, monkeypatch):
    yield from build_clinic(monkeypatch)


def build_clinic(monkeypatch):
    """A care team with a clinician and a patient with a plan, a wearable (whose key uploads), a
    spare device (the one the revoke route may revoke), a processed window and a pending suggestion
    (a generator for a fixture; KNOWN_IDS holds their ids meanwhile)."""
    from monitoring.ingest.apis import DeviceUploadThrottle
    from monitoring.models import SignalWindow
    from tests.therapy.conftest import store_estimates, week_of
    from therapy import services as therapy_services
    from therapy.evaluation import patient_therapy_evaluate
    from therapy.models import PlanVersion

    # The API's work runs for real; only the Celery sends after commit are recorded, so that no task
    # for rows this test's flush removes is left in the shared broker for a later test's worker.
    sent: list[tuple[str, tuple]] = []
    for module in ("monitoring.ingest.intake", "monitoring.bp.cuff_calibration", "therapy.services", "therapy.receivers"):
        monkeypatch.setattr(f"{module}.enqueue_on_commit", lambda task, *args, **kw: sent.append((task.name, args)))
    # The upload throttle (DEVICE_UPLOAD_RATE, 120/min per key) would answer most of a run with 429.
    # DRF copies the rates into the throttle class at import, so the `settings` fixture cannot reach them.
    monkeypatch.setattr(DeviceUploadThrottle, "THROTTLE_RATES", {"device_upload": "1000000/min"})

    team = make_team()
    clinician = make_clinician(team=team)
    patient = make_patient(team=team)
    device, key = make_device(patient)
    spare, _ = make_device(patient)
    therapy_services.plan_create(actor=clinician.user, patient=patient, template="ace-ccb-thiazide", reason="start",
                                 auto_step_up=True, max_auto_rung=3)
    PlanVersion.objects.filter(patient=patient).update(created_at=timezone.now() - dt.timedelta(days=60))
    store_estimates(patient, device, week_of(148, 92), now=timezone.now())
    suggestion = patient_therapy_evaluate(patient_id=patient.pk, now=timezone.now())
    assert suggestion is not None and suggestion.status == "pending_review"
    window = SignalWindow.objects.filter(patient=patient).first()
    KNOWN_IDS.update(patient_id=patient.pk, device_id=spare.pk, window_id=window.pk, suggestion_id=suggestion.pk)
    yield {"clinician": clinician.user, "patient": patient, "device": device, "key": key, "sent": sent}
    KNOWN_IDS.clear()


@pytest.fixture
def callers(clinic):
    """Request headers per caller: what a browser sends for the clinician (the session cookie, and
    the CSRF cookie + header that DRF's SessionAuthentication requires for unsafe methods), and the
    device's key. Passed to call_and_validate as explicit headers, so that schemathesis'
    ignored_auth check knows them and replays each operation without them and with made-up ones."""
    client = Client()
    client.force_login(clinic["clinician"])
    token = get_random_string(32)
    session_key = client.cookies[settings.SESSION_COOKIE_NAME].value
    return {
        "clinician": {"Cookie": f"{settings.SESSION_COOKIE_NAME}={session_key}; {settings.CSRF_COOKIE_NAME}={token}",
                      "X-CSRFToken": token},
        "device": {"Authorization": f"Api-Key {clinic['key']}"},
    }


def routes(case) -> bool:
    """Whether Django's URL patterns match the path: <int:...> takes digits only, so a path with
    another id never reaches the API and gets Django's own (HTML) 404 page."""
    return all(isinstance(v, int) and v >= 0 for v in (case.path_parameters or {}).values())


def error_responses_conform(ctx, response, case) -> None:
    """Beside status_code_conformance: a declared status is fine (its body is checked by
    response_schema_conformance); an undeclared one must be an expected 4xx with the API's error
    envelope {"message": str, "extra": {...}}."""
    if case.method.upper() != case.operation.method.upper():
        return None  # schemathesis' probes with other methods (OPTIONS: DRF's metadata; else 405)
    declared = {str(code) for code in case.operation.responses.status_codes}
    if str(response.status_code) in declared or "default" in declared:
        return None
    assert response.status_code in UNDECLARED_ERRORS_ALLOWED, (
        f"{response.status_code} is neither declared for {case.operation.label} ({sorted(declared)}) "
        f"nor an expected client error"
    )
    if response.status_code == 404 and not routes(case):
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    assert isinstance(body, dict) and isinstance(body.get("message"), str) and isinstance(body.get("extra"), dict), (
        f"a {response.status_code} body is not the API's {{'message', 'extra'}}: {response.text[:500]}"
    )
    return None


def stored_counts() -> dict[str, int]:
    """Rows per STORED model, in one query (it runs twice per request of the in-process fuzzing)."""
    from django.apps import apps
    from django.db import connection

    tables = [connection.ops.quote_name(apps.get_model(label)._meta.db_table) for label in STORED]
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {table})" for table in tables))
        return dict(zip(STORED, cursor.fetchone(), strict=True))


@schema.parametrize()
def test_the_live_api_conforms_to_its_schema(case, clinic, callers, live_server):
    before = stored_counts()
    response = case.call_and_validate(
        base_url=live_server.url, headers=callers["device" if is_device_only(case.operation) else "clinician"], timeout=30,
        excluded_checks=EXCLUDED_CHECKS, additional_checks=[error_responses_conform],
    )
    if response.status_code >= 400:
        assert stored_counts() == before, f"{case.operation.label} answered {response.status_code} but stored rows"


def test_accepted_writes_conform_to_their_schema(clinic, callers, live_server):
    """Random bodies are rarely accepted (a window must hold rate x duration samples of a recent
    time), so every write is also sent once as a client would, and its 2xx answer validated."""
    from monitoring.ingest.devicesim import window_payload
    from monitoring.signals.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed
    from therapy.adherence import scheduled_doses
    from therapy.plans import ladder_of
    from therapy.selectors import plan_current

    recording = with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, "v140s"))
    windows = [w for _, w in zip(range(2), iter_windows(recording, window_s=30))]
    now = timezone.now().replace(microsecond=0)
    upload = [window_payload(w, sequence=1000 + i, recorded_at=now - dt.timedelta(minutes=5 - i)) for i, w in enumerate(windows)]
    patient, today = clinic["patient"], timezone.localdate().isoformat()
    dose = scheduled_doses(ladder_of(plan := plan_current(patient)).rungs[plan.current_rung], timezone.localdate())[0]
    recent = (now - dt.timedelta(hours=1)).isoformat()
    ids = {"patient_id": patient.pk}

    def send(method, path, status, body=None, path_parameters=None):
        payload = {} if body is None else {"body": body, "media_type": "application/json"}
        case = schema[path][method].Case(path_parameters=path_parameters or {}, **payload)
        headers = callers["device" if is_device_only(case.operation) else "clinician"]
        response = case.call_and_validate(base_url=live_server.url, headers=headers, timeout=30,
                                          excluded_checks=EXCLUDED_CHECKS, additional_checks=[error_responses_conform])
        assert response.status_code == status, (method, path, response.status_code, response.text[:500])
        return response.json()

    window_id = send("POST", "/api/v1/windows/", 202, upload[0])["id"]
    send("POST", "/api/v1/windows/", 200, upload[0])  # the same sequence again: the original
    batch = send("POST", "/api/v1/windows/batch/", 200, {"windows": [upload[1], upload[0], {"sequence": 7}]})
    assert (batch["accepted"], batch["duplicates"], batch["rejected"]) == (1, 1, 1)
    send("GET", "/api/v1/windows/{window_id}/", 200, path_parameters={"window_id": window_id})
    send("GET", "/api/v1/device/", 200)
    send("POST", "/api/v1/cuff-readings/", 201, {"measured_at": recent, "sbp_mmhg": 138, "dbp_mmhg": 86})
    send("POST", "/api/v1/patients/{patient_id}/cuff-readings/", 201,
         {"measured_at": recent, "sbp_mmhg": 141, "dbp_mmhg": 88}, ids)
    send("POST", "/api/v1/patients/{patient_id}/doses/", 201,
         {"day": today, "drug": dose.drug, "slot": dose.slot, "taken": True}, ids)
    send("POST", "/api/v1/patients/{patient_id}/doses/", 200,
         {"day": today, "drug": dose.drug, "slot": dose.slot, "taken": True}, ids)
    send("GET", "/api/v1/patients/{patient_id}/doses/", 200, path_parameters=ids)
    send("POST", "/api/v1/patients/{patient_id}/symptom-reports/", 201, {"kind": "symptom", "symptom": "chest pain"}, ids)
    send("GET", "/api/v1/patients/{patient_id}/symptom-reports/", 200, path_parameters=ids)
    send("POST", "/api/v1/suggestions/{suggestion_id}/modify/", 200, {"to_rung": 1, "reason": "agreed, slower"},
         {"suggestion_id": KNOWN_IDS["suggestion_id"]})
    send("POST", "/api/v1/suggestions/{suggestion_id}/reject/", 409, {"reason": "too late"},
         {"suggestion_id": KNOWN_IDS["suggestion_id"]})
    send("POST", "/api/v1/patients/{patient_id}/plan/", 201, {"reason": "tighter target", "target_sbp_mmhg": 130}, ids)
    send("GET", "/api/v1/patients/{patient_id}/plan/", 200, path_parameters=ids)
    send("GET", "/api/v1/alerts/", 200)
    send("POST", "/api/v1/devices/{device_id}/revoke/", 200, {"reason": "lost"}, {"device_id": KNOWN_IDS["device_id"]})


def test_the_served_schema_is_the_one_fuzzed_and_valid(live_server):
    """What /api/v1/schema/ serves is the schema above, and it is a valid OpenAPI 3 document."""
    from drf_spectacular.validation import validate_schema

    served = requests.get(f"{live_server.url}/api/v1/schema/?format=json", timeout=30)
    assert served.status_code == 200
    validate_schema(served.json())
    assert served.json() == RAW_SCHEMA


def test_the_checks_left_out_are_neither_server_errors_nor_response_bodies():
    assert not_a_server_error not in EXCLUDED_CHECKS and response_schema_conformance not in EXCLUDED_CHECKS


def test_an_unknown_api_url_answers_the_error_envelope_not_an_html_page(client):
    response = client.get("/api/v1/patients/not-a-number/")
    assert response.status_code == 404 and response.json() == {"message": "Not found.", "extra": {}}
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")
