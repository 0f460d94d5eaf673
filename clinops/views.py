"""Operational endpoints: /healthz for load balancers and operators."""
from __future__ import annotations

from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found

from clinops.fhir.resources import operation_outcome
from clinops.fhir.views import fhir_response
from clinops.models import WorkerHeartbeat

# Beat sends a heartbeat every 30 s; three missed ones mean no worker is consuming.
HEARTBEAT_STALE_AFTER_S = 90


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database, Redis and worker liveness. 200 when the web tier can serve, 503 otherwise."""
    checks: dict[str, object] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
        checks["database"] = f"error: {exc.__class__.__name__}"
    try:
        cache.set("healthz", "ok", 10)
        checks["redis"] = "ok" if cache.get("healthz") == "ok" else "error: read-back failed"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {exc.__class__.__name__}"
    # A worker of the default queue (windows, monitoring), and one of the therapy queue (the
    # evaluations): in production they may be different processes, and either can be missing.
    for check, probe in (("worker", "beat"), ("therapy_worker", "therapy")):
        if checks["database"] != "ok":
            checks[check] = "unknown: the database is unavailable"
        else:
            checks.update(_heartbeat_check(check, WorkerHeartbeat.objects.filter(probe=probe).first()))
    healthy = checks["database"] == "ok" and checks["redis"] == "ok"
    return JsonResponse({"status": "ok" if healthy else "degraded", "checks": checks}, status=200 if healthy else 503)


def _heartbeat_check(check: str, beat: WorkerHeartbeat | None) -> dict[str, object]:
    if beat is None:
        return {check: "no heartbeat yet"}
    age = (timezone.now() - beat.beat_at).total_seconds()
    return {check: "ok" if age <= HEARTBEAT_STALE_AFTER_S else f"stale: last beat {age:.0f} s ago",
            f"{check}_last_beat_age_s": round(age, 1)}


def not_found(request: HttpRequest, exception=None):
    """404 for an unknown URL: the API's error envelope under /api/, a FHIR OperationOutcome under
    /fhir/ (what a FHIR client parses, e.g. for `Patient/abc/$everything`), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"message": "Not found.", "extra": {}}, status=404)
    if request.path.startswith("/fhir/"):
        return fhir_response(operation_outcome("Not found.", code="not-found"), status=404)
    response = page_not_found(request, exception)
    response.clinops_page = True  # clinops.middleware.own_not_found_page leaves it be
    return response
