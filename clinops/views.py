"""Operational endpoints: /healthz for load balancers and operators, /metrics for Prometheus."""
from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from django.views.defaults import page_not_found
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from clinops.base.models import WorkerHeartbeat
from clinops.fhir.resources import operation_outcome
from clinops.fhir.views import fhir_response
from therapy.reports import broker_queue_lengths

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


# Marks Django's own 404 page so that clinops.middleware.own_not_found_page leaves it be: a flag set
# on the response object, which its class does not declare, hence set and read by name.
OWN_PAGE_FLAG = "clinops_page"


def not_found(request: HttpRequest, exception=None):
    """404 for an unknown URL: the API's error envelope under /api/, a FHIR OperationOutcome under
    /fhir/ (what a FHIR client parses, e.g. for `Patient/abc/$everything`), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"message": "Not found.", "extra": {}}, status=404)
    if request.path.startswith("/fhir/"):
        return fhir_response(operation_outcome("Not found.", code="not-found"), status=404)
    response = page_not_found(request, exception)
    setattr(response, OWN_PAGE_FLAG, True)
    return response


# --- /metrics ------------------------------------------------------------------------------------

class BrokerQueues:
    """Tasks waiting in each Celery queue (settings.CELERY_TASK_QUEUES), read from Redis when
    scraped: a number the web process can ask for itself, so it is never stored in a file."""

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._up(), self._waiting()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lengths = broker_queue_lengths()
        up = self._up()
        up.add_metric([], 0.0 if lengths is None else 1.0)
        yield up
        if lengths is not None:
            waiting = self._waiting()
            for queue, count in sorted(lengths.items()):
                waiting.add_metric([queue], float(count))
            yield waiting

    @staticmethod
    def _up() -> GaugeMetricFamily:
        return GaugeMetricFamily("clinops_broker_up", "1 when Redis (the Celery broker) told this scrape "
                                 "its queue lengths, 0 when it could not be asked.")

    @staticmethod
    def _waiting() -> GaugeMetricFamily:
        return GaugeMetricFamily("clinops_celery_queue_tasks_waiting", "Tasks waiting in a Celery queue "
                                 "(celery: windows and monitoring; therapy: evaluations due), at the scrape.",
                                 labels=["queue"])


_BROKER_QUEUES = BrokerQueues()
if not settings.PROMETHEUS_MULTIPROC_DIR:
    REGISTRY.register(_BROKER_QUEUES)


def exposition() -> bytes:
    """Every metric in Prometheus' text format: added up over this machine's processes in
    multiprocess mode, else this process's own."""
    if settings.PROMETHEUS_MULTIPROC_DIR:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
        registry.register(_BROKER_QUEUES)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


@csrf_exempt  # nothing is written; a POST is refused like any other caller without the token
def metrics_view(request: HttpRequest) -> HttpResponse:
    """`/metrics` for a scraper sending `Authorization: Bearer <METRICS_TOKEN>`: 401 without a bearer
    token, 403 with a wrong one (compared in constant time), and 404 while no token is configured,
    so an installation that does not use it shows nothing there."""
    expected = settings.METRICS_TOKEN
    if not expected:
        raise Http404
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given:
        refused = HttpResponse("A bearer token is required.\n", status=401, content_type="text/plain")
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    if not hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")):
        return HttpResponse("Wrong token.\n", status=403, content_type="text/plain")
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
