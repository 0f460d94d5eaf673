"""Prometheus metrics: every metric ClinOps exports is defined here (clinops/views.py serves them at
`/metrics`, with the broker's queue lengths read at the scrape).

Label values are route names, methods, status classes, queue names, outcomes and escalation causes,
never a patient, device, window or person id: a scrape holds no patient data.

gunicorn and Celery run several processes per machine. With PROMETHEUS_MULTIPROC_DIR set (one
directory per machine, shared by its web and worker processes), each process writes its values to
files of its own there (prometheus_client's multiprocess mode) and `/metrics` adds them up, so the
counters of a Celery pool process reach the scrape. Without it (demo, tests) each process keeps its
values in memory, and `/metrics` shows the web process's own.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import socket
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import Counter, Histogram, values

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


def escalation_causes_export(causes: Iterable[str]) -> None:
    """Export each escalation cause at 0 from the start (therapy's EscalationKind values, given by
    the therapy app as it loads: this base module may not import it)."""
    for cause in causes:
        ESCALATIONS_RAISED.labels(cause=cause)


# --- Recording: one call at each place where the event happens -------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(request: HttpRequest, response: HttpResponse, seconds: float) -> None:
    """One answered request; the route is the URL's name, never its path (which holds ids)."""
    match = getattr(request, "resolver_match", None)
    route = (match.view_name or "unnamed") if match is not None else "unmatched"
    method = request.method if request.method in _METHODS else "other"
    REQUEST_SECONDS.labels(route=route, method=method, status=f"{response.status_code // 100}xx").observe(seconds)


def count_window_verdicts(analyses: Iterable[Any]) -> None:
    """The quality gate's verdict on each window this process has just analysed and stored: usable
    or rejected. An analysis another worker stored first (no `created_now`) is that worker's count."""
    for analysis in analyses:
        if getattr(analysis, "created_now", False):
            WINDOWS_PROCESSED.labels(outcome="usable" if analysis.usable else "rejected").inc()


def count_window_failed() -> None:
    WINDOWS_PROCESSED.labels(outcome="failed").inc()


def observe_upload_to_estimate(received: Iterable[dt.datetime]) -> None:
    """Seconds from upload (each window's `received_at`) to now, for windows that just got a live
    estimate from this process (monitoring.bp.estimation reads the times)."""
    now = timezone.now()
    for at in received:
        UPLOAD_TO_ESTIMATE_SECONDS.observe(max(0.0, (now - at).total_seconds()))


def count_therapy_evaluation(*, failed: bool) -> None:
    THERAPY_EVALUATIONS.labels(outcome="failed" if failed else "completed").inc()


def count_escalation_raised(*, cause: str) -> None:
    """An alert newly raised for `cause` (an EscalationKind value): counted once its transaction
    commits, since a rolled-back alert was never raised."""
    transaction.on_commit(lambda: ESCALATIONS_RAISED.labels(cause=cause).inc())
