"""FHIR routes: thin views over clinops.fhir.everything. Bodies are FHIR JSON
(`application/fhir+json`), errors included (an OperationOutcome)."""
from __future__ import annotations

import datetime as dt
import re

from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.utils import extend_schema
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.views import APIView

from clinops.base.errors import ApplicationError
from clinops.fhir import everything
from clinops.fhir.resources import operation_outcome
from patients.models import Role
from patients.permissions import DeviceAPIKeyAuthentication, IsPerson
from patients.selectors import patients_visible_to

FHIR_JSON = "application/fhir+json"
_ISSUE_CODE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported"}


def fhir_response(resource, *, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    # A patient's record: never kept by a shared cache or the browser's.
    return HttpResponse(resource.model_dump_json(), status=status, content_type=FHIR_JSON,
                        headers={"Cache-Control": "no-store", **(headers or {})})


INSTANT_YEARS = (1900, 2200)


def parse_instant(name: str, value: str | None) -> dt.datetime | None:
    """An ISO 8601 date-time (or a date: its midnight) from the query; naive means UTC."""
    if value is None or not value.strip():
        return None
    # An unencoded "+01:00" in a query string arrives as " 01:00": put the plus sign back.
    value = re.sub(r" (\d{2}:?\d{2})$", r"+\1", value.strip())
    try:  # a well-formed but impossible value (2026-13-45, 25:00) raises ValueError
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = dt.datetime.combine(day, dt.time())
    except ValueError:
        parsed = None
    if parsed is None:
        raise ApplicationError(f"{name} must be an ISO 8601 date-time, e.g. 2026-01-31T00:00:00Z.",
                               extra={"fields": {name: ["not an ISO 8601 date-time"]}})
    # The export's arithmetic (90 days back, UTC offsets) must not run off the calendar.
    if not INSTANT_YEARS[0] <= parsed.year <= INSTANT_YEARS[1]:
        raise ApplicationError(f"{name} must lie in the years {INSTANT_YEARS[0]} to {INSTANT_YEARS[1]}.",
                               extra={"fields": {name: [f"outside the years {INSTANT_YEARS[0]}-{INSTANT_YEARS[1]}"]}})
    return parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=dt.timezone.utc)


# Not in the OpenAPI schema of /api/v1/: FHIR routes answer FHIR resources (OperationOutcome for
# errors, not the API's {"message", "extra"}), described by the FHIR specification instead.
@extend_schema(exclude=True)
class PatientEverythingApi(APIView):
    """`GET /fhir/Patient/{id}/$everything`: the patient's record as a FHIR R4B `searchset` Bundle.

    Who: a signed-in person who may see the patient (their care team's clinicians, the patient
    themself, an administrator); anyone else gets 404 (ids reveal nothing). Devices are refused
    (403), so is a request without a session (403), as on the rest of the API.

    Query parameters (ISO 8601 date-times; a date means its midnight, no offset means UTC):
    - `_since`: observations (BP estimates, their windows, cuff readings) recorded at or after it;
      default 90 days before `end` (or now);
    - `end`: recorded before it (exclusive); default none.
    The therapy history (MedicationRequests, Provenance, plan AuditEvents) is always complete; at
    most `everything.MAX_ESTIMATES` estimates, the most recent (an OperationOutcome entry says so).
    """

    authentication_classes = [SessionAuthentication, DeviceAPIKeyAuthentication]
    permission_classes = [IsPerson]

    def get(self, request: Request, patient_id: int) -> HttpResponse:
        patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
        now = timezone.now()
        end = parse_instant("end", request.query_params.get("end"))
        since = parse_instant("_since", request.query_params.get("_since")) or (end or now) - everything.DEFAULT_SINCE
        if end is not None and end <= since:
            raise ApplicationError("end must be after _since.", extra={"fields": {"end": ["not after _since"]}})
        own_path = reverse("fhir:patient-everything", kwargs={"patient_id": patient.pk})
        base_url = request.build_absolute_uri(own_path[: own_path.index("Patient/")])
        bundle = everything.patient_everything(
            patient, since=since, end=end, now=now, base_url=base_url, self_url=request.build_absolute_uri(),
            for_patient=getattr(request.user, "role", None) == Role.PATIENT,
        )
        return fhir_response(bundle)

    # DRF's dispatch finalises whatever HttpResponse the hook returns (finalize_response asks no more);
    # the stubs type the hook by what the base class builds, a DRF Response.
    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        """The API's usual error handling (status, message), answered as a FHIR OperationOutcome."""
        response = super().handle_exception(exc)
        data = response.data if isinstance(response.data, dict) else {}
        message = str(data.get("message") or data.get("detail") or response.status_text)
        headers = {k: v for k, v in response.items() if k in ("WWW-Authenticate", "Retry-After")}
        return fhir_response(operation_outcome(message, code=_ISSUE_CODE.get(response.status_code, "exception")),
                             status=response.status_code, headers=headers)
