"""Prometheus metrics: every metric ClinOps exports is defined here, and `/metrics` serves them.

Label values are route names, methods, status classes, queue names, outcomes and escalation causes,
never a patient, device, window or person id: a scrape holds no patient data.

gunicorn and Celery run several processes per machine. With PROMETHEUS_MULTIPROC_DIR set (one
directory per machine, shared by its web and worker processes), each process writes its values to
files of its own there (prometheus_client's multiprocess mode) and `/metrics` adds them up, so the
counters of a Celery pool process reach the scrape. Without it (demo, tests) each process keeps its
values in memory, and `/metrics` shows the web process's own.
"""
from __future__ import annotations

import hmac
import os
import re
import socket
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest,
                               values)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from therapy.domain import EscalationKind

if TYPE_CHECKING:
    from monitoring.models import BPEstimate, WindowAnalysis

_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())


def _process_identifier() -> str:
    """Names this process's files in the shared directory. prometheus_client uses the pid alone, but
    compose.yaml's web and worker containers share the directory and each has its own pid numbering
    (every container has a pid 1): the host name (the container's) keeps their files apart."""
    return f"{_HOST}-{os.getpid()}"


# prometheus_client chose its mode from the environment when it was imported; the settings read the
# same variable (an empty value counts as unset there, and here).
values.ValueClass = (values.MultiProcessValue(process_identifier=_process_identifier)
                     if settings.PROMETHEUS_MULTIPROC_DIR else values.MutexValue)

# --- The metrics -----------------------------------------------------------------------------------

REQUEST_SECONDS = Histogram(
    "clinops_http_request_duration_seconds",
    "Time to answer an HTTP request (s), through every middleware, by route name (Django's URL name, "
    "'unmatched' for an unknown address), method and status class (2xx, 4xx, ...).",
    ["route", "method", "status"],
)
WINDOWS_PROCESSED = Counter(
    "clinops_windows_processed",
    "Signal windows the worker has finished with, by outcome: usable (verdict and features stored), "
    "rejected (by the quality gate, with its reasons), failed (the stored bytes could not be decoded "
    "or analysed).",
    ["outcome"],
)
UPLOAD_TO_ESTIMATE_SECONDS = Histogram(
    "clinops_upload_to_estimate_seconds",
    "Time from a window's upload being received (SignalWindow.received_at) to its BP estimate being "
    "stored (s); one observation per estimated window (its live estimate, not shadow models').",
    # The target is p95 <= 2 s; the tail reaches the sweeper's re-send of a lost task (10 min).
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
THERAPY_EVALUATIONS = Counter(
    "clinops_therapy_evaluations",
    "Therapy evaluations of a patient, by outcome: completed, or failed (the escalation checks then "
    "ran on their own and the failure became an urgent item; a lost database connection is retried "
    "and not counted).",
    ["outcome"],
)
ESCALATIONS_RAISED = Counter(
    "clinops_escalations_raised",
    "Alerts raised for a care team, by cause (crisis, confirmed low SBP, red-flag symptom, ...): a new "
    "open alert; a new episode of a cause already open updates that alert and is not counted again.",
    ["cause"],
)

# Every outcome and cause is exported from the start, at 0, so that rate() and alerts see a series
# before the first event.
for _outcome in ("usable", "rejected", "failed"):
    WINDOWS_PROCESSED.labels(outcome=_outcome)
for _outcome in ("completed", "failed"):
    THERAPY_EVALUATIONS.labels(outcome=_outcome)
for _kind in EscalationKind:
    ESCALATIONS_RAISED.labels(cause=_kind.value)


class BrokerQueues:
    """Tasks waiting in each Celery queue (settings.CELERY_TASK_QUEUES), read from Redis when
    scraped: a number the web process can ask for itself, so it is never stored in a file."""

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._up(), self._waiting()]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from monitoring.reports import _broker_queue_lengths

        lengths = _broker_queue_lengths()
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


# --- Recording: one call at each place where the event happens -------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(request: HttpRequest, response: HttpResponse, seconds: float) -> None:
    """One answered request; the route is the URL's name, never its path (which holds ids)."""
    match = getattr(request, "resolver_match", None)
    route = (match.view_name or "unnamed") if match is not None else "unmatched"
    method = request.method if request.method in _METHODS else "other"
    REQUEST_SECONDS.labels(route=route, method=method, status=f"{response.status_code // 100}xx").observe(seconds)


def count_window_verdicts(analyses: Iterable[WindowAnalysis]) -> None:
    """The quality gate's verdict on each window this process has just analysed and stored: usable
    or rejected. An analysis another worker stored first (no `created_now`) is that worker's count."""
    for analysis in analyses:
        if getattr(analysis, "created_now", False):
            WINDOWS_PROCESSED.labels(outcome="usable" if analysis.usable else "rejected").inc()


def count_window_failed() -> None:
    WINDOWS_PROCESSED.labels(outcome="failed").inc()


def observe_upload_to_estimate(estimates: Iterable[BPEstimate]) -> None:
    """Seconds from upload to now for each window among these estimates, just stored by this process,
    that got a live one. The windows' received_at is used when already loaded, else read in one query
    for them all."""
    windows = {e.window_id: e.window for e in estimates if not e.shadow}
    if not windows:
        return
    now = timezone.now()
    # A deferred field is absent from the instance's __dict__: reading it would cost a query per window.
    received = {pk: window.__dict__.get("received_at") for pk, window in windows.items()}
    unread = [pk for pk, at in received.items() if at is None]
    if unread:
        from monitoring.models import SignalWindow

        received.update(SignalWindow.objects.filter(pk__in=unread).values_list("pk", "received_at"))
    for at in received.values():
        if at is not None:
            UPLOAD_TO_ESTIMATE_SECONDS.observe(max(0.0, (now - at).total_seconds()))


def count_therapy_evaluation(*, failed: bool) -> None:
    THERAPY_EVALUATIONS.labels(outcome="failed" if failed else "completed").inc()


def count_escalation_raised(*, cause: str) -> None:
    """An alert newly raised for `cause` (an EscalationKind value): counted once its transaction
    commits, since a rolled-back alert was never raised."""
    transaction.on_commit(lambda: ESCALATIONS_RAISED.labels(cause=cause).inc())


# --- The endpoint ----------------------------------------------------------------------------------

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
