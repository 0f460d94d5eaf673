"""Who may call what: every route of the URL conf x every role -> the expected status.

The cases come from the URL conf (`django.urls.get_resolver()`, walked recursively), not from the
rules: a new route without a rule in RULES fails here (and `test_every_route_has_a_rule` names it),
and so does a rule for a route that no longer exists. Each route is called with GET, and with POST
when its view accepts POST (derived from the view: a class view's methods, or the method list of
`require_http_methods`/`require_POST`/`require_GET` on a function view; a function view without
one accepts POST). The Django admin is one rule family (`admin/`), sampled on three pages.

The roles (README "Who may see what"): anonymous; patient A and patient B; a clinician of A's care
team and a clinician of another team (B's); A's wearable, B's wearable and a revoked wearable of A
(`Authorization: Api-Key <key>`); an administrator. Ids in URLs are patient A's objects, so an
outsider gets the 404 the README promises. CLINOPS_OTP_REQUIRED_FOR_CLINICIANS is off in test
settings (so the clinician roles need no TOTP step); one more role, `clinician_no_otp`, is the
clinician of A's team with the setting on as in production and a session that passed the password
but not the TOTP code: the web app sends them to /login/otp/, the API answers 403.

Besides the status, every case checks:
- side effects: a POST expected to write (W(...) in RULES) must change the stored state (audit
  rows, signal windows, cuff readings), and every other request — each denied one, each GET —
  must leave it as it was;
- leaks: a 2xx answer to an outsider (patient B, the other team's clinician, the team's clinician
  without the second factor, B's wearable) never holds patient A's record number or an object of
  patient A (`"patient": <A's id>`).

The world is built once for the module in one transaction (rolled back at the end); each case
runs in its own savepoint (pytest-django's `db`), so a write in one case is gone for the next.
"""
from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import re
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

ROLES = ("anonymous", "patient_a", "patient_b", "clinician_in", "clinician_out", "clinician_no_otp",
         "device_a", "device_b", "device_revoked", "admin")
# Must learn nothing about patient A (the team's clinician not before the second factor).
OUTSIDERS = ("patient_b", "clinician_out", "clinician_no_otp", "device_b")
METHODS = ("GET", "POST")


# --- Expectations ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Redirect:
    """A 302 to `to` (exactly, or any location starting with it when prefix=True)."""

    to: str
    prefix: bool = False

    def __str__(self) -> str:
        return f"302 -> {self.to}{'...' if self.prefix else ''}"


@dataclass(frozen=True)
class W:
    """The request is allowed to write, and must: the status (or redirect) plus a changed state."""

    expect: int | Redirect

    def __str__(self) -> str:
        return f"{self.expect} (writes)"


Expect = int | Redirect | W

LOGIN = Redirect("/login/?next=", prefix=True)  # a web page asks an anonymous visitor to sign in
SIGN_IN = Redirect("/login/")
OTP = Redirect("/login/otp/")  # ... and a clinician without the second factor for it
ADMIN_LOGIN = Redirect("/admin/login/?next=", prefix=True)
HOME, QUEUE, PORTAL = Redirect("/"), Redirect("/clinic/"), Redirect("/portal/")
TO_PATIENT, HEALTH = Redirect("/clinic/patients/", prefix=True), Redirect("/clinic/model-health/")
SYMPTOMS = Redirect("/portal/symptoms/")


def row(*cells: Expect) -> dict[str, Expect]:
    """One matrix row, in the order of ROLES."""
    assert len(cells) == len(ROLES), f"a row has one cell per role ({len(ROLES)}), got {len(cells)}"
    return dict(zip(ROLES, cells))


def same(cell: Expect) -> dict[str, Expect]:
    return row(*[cell] * len(ROLES))


# --- The rules ------------------------------------------------------------------------------------
# Route name (namespace:name) -> method -> role -> expected. Ids in the URLs are patient A's.
# API routes with session authentication only (IsPerson): a device key is not looked at there, so a
# wearable is an anonymous caller (403, as DRF's session authentication has no challenge header);
# device routes (API-key authentication) answer 401 to anyone without a key, 403 to a revoked one.
# Web pages ignore the API key too: a wearable is an anonymous visitor (sent to sign in).

RULES: dict[str, dict[str, dict[str, Expect]]] = {
    #                         anon   pat A     pat B     clin in   clin out  no otp  dev A    dev B    dev rev  admin
    "healthz": {"GET": same(200)},
    # Prometheus: a bearer token, not a role (tests/clinops/test_metrics.py); with no METRICS_TOKEN
    # configured, as here, there is nothing at this address for anyone.
    "metrics": {"GET": same(404), "POST": same(404)},
    "favicon": {"GET": same(Redirect("/static/web/favicon", prefix=True))},
    "patients:patient-list": {
        "GET":            row(403,   200,      200,      200,      200,      403,    403,     403,     403,     200),
    },
    "patients:patient-detail": {
        "GET":            row(403,   200,      404,      200,      404,      403,    403,     403,     403,     200),
    },
    "patients:device-revoke": {  # A's wearable: the care team or an admin revokes it, not the patient
        "GET":            row(403,   405,      405,      405,      405,      403,    403,     403,     403,     405),
        "POST":           row(403,   403,      404,      W(200),   404,      403,    403,     403,     403,     W(200)),
    },
    "patients:device-self": {
        "GET":            row(401,   401,      401,      401,      401,      401,    200,     200,     403,     401),
    },
    "monitoring:window-upload": {
        "GET":            row(401,   401,      401,      401,      401,      401,    405,     405,     403,     401),
        "POST":           row(401,   401,      401,      401,      401,      401,    W(202),  W(202),  403,     401),
    },
    "monitoring:window-batch-upload": {
        "GET":            row(401,   401,      401,      401,      401,      401,    405,     405,     403,     401),
        "POST":           row(401,   401,      401,      401,      401,      401,    W(200),  W(200),  403,     401),
    },
    "monitoring:window-detail": {  # a window of A's wearable; patients see their BP, not raw windows
        "GET":            row(401,   404,      404,      200,      404,      403,    200,     404,     403,     200),
    },
    "monitoring:patient-cuff-readings": {
        "GET":            row(403,   405,      405,      405,      405,      403,    403,     403,     403,     405),
        "POST":           row(403,   W(201),   404,      W(201),   404,      403,    403,     403,     403,     W(201)),
    },
    "monitoring:device-cuff-readings": {
        "GET":            row(401,   401,      401,      401,      401,      401,    405,     405,     403,     401),
        "POST":           row(401,   401,      401,      401,      401,      401,    W(201),  W(201),  403,     401),
    },
    "therapy:patient-plan": {  # read: care team, patient, admin; write: the care team only
        "GET":            row(403,   200,      404,      200,      404,      403,    403,     403,     403,     200),
        "POST":           row(403,   403,      404,      W(201),   404,      403,    403,     403,     403,     403),
    },
    "therapy:patient-doses": {  # the patient and the care team
        "GET":            row(403,   200,      404,      200,      404,      403,    403,     403,     403,     200),
        "POST":           row(403,   W(201),   404,      W(201),   404,      403,    403,     403,     403,     403),
    },
    "therapy:patient-symptom-reports": {
        "GET":            row(403,   200,      404,      200,      404,      403,    403,     403,     403,     200),
        "POST":           row(403,   W(201),   404,      W(201),   404,      403,    403,     403,     403,     403),
    },
    "therapy:suggestion-list": {  # scoped: everyone signed in gets 200, an outsider without A's items
        "GET":            row(403,   200,      200,      200,      200,      403,    403,     403,     403,     200),
    },
    "therapy:suggestion-detail": {  # A's released change
        "GET":            row(403,   200,      404,      200,      404,      403,    403,     403,     403,     200),
    },
    "therapy:suggestion-approve": {  # A's pending step: the care team decides
        "GET":            row(403,   405,      405,      405,      405,      403,    403,     403,     403,     405),
        "POST":           row(403,   403,      404,      W(200),   404,      403,    403,     403,     403,     403),
    },
    "therapy:suggestion-modify": {
        "GET":            row(403,   405,      405,      405,      405,      403,    403,     403,     403,     405),
        "POST":           row(403,   403,      404,      W(200),   404,      403,    403,     403,     403,     403),
    },
    "therapy:suggestion-reject": {
        "GET":            row(403,   405,      405,      405,      405,      403,    403,     403,     403,     405),
        "POST":           row(403,   403,      404,      W(200),   404,      403,    403,     403,     403,     403),
    },
    "therapy:suggestion-acknowledge": {  # A's released change: the patient acknowledges
        "GET":            row(403,   405,      405,      405,      405,      403,    403,     403,     403,     405),
        "POST":           row(403,   W(200),   404,      403,      404,      403,    403,     403,     403,     403),
    },
    "therapy:alert-list": {
        "GET":            row(403,   200,      200,      200,      200,      403,    403,     403,     403,     200),
    },
    # The OpenAPI schema and its browsers are public (drf-spectacular's AllowAny): no patient data.
    "api-schema": {"GET": same(200)},
    "api-docs": {"GET": same(200)},
    "api-redoc": {"GET": same(Redirect("/api/v1/docs/"))},
    "fhir:patient-everything": {  # a wearable's key is authenticated here, and refused
        "GET":            row(403,   200,      404,      200,      404,      403,    403,     403,     403,     200),
    },
    # --- web: signing in ---
    "web:landing": {
        "GET":            row(SIGN_IN, PORTAL, PORTAL,   QUEUE,    QUEUE,    QUEUE,  SIGN_IN, SIGN_IN, SIGN_IN, QUEUE),
        "POST":           row(SIGN_IN, PORTAL, PORTAL,   QUEUE,    QUEUE,    QUEUE,  SIGN_IN, SIGN_IN, SIGN_IN, QUEUE),
    },
    "web:login": {  # an empty form is shown again; someone signed in is sent on
        "GET":            row(200,   HOME,     HOME,     HOME,     HOME,     HOME,   200,     200,     200,     HOME),
        "POST":           row(200,   HOME,     HOME,     HOME,     HOME,     HOME,   200,     200,     200,     HOME),
    },
    "web:otp": {  # a wrong code is refused with the form again
        "GET":            row(LOGIN, 200,      200,      200,      200,      200,    LOGIN,   LOGIN,   LOGIN,   200),
        "POST":           row(LOGIN, 200,      200,      200,      200,      200,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:logout": {"GET": same(405), "POST": same(SIGN_IN)},
    # --- web: the clinician app (clinicians and admins; a patient 403; outside the team 404) ---
    "web:queue": {
        "GET":            row(LOGIN, 403,      403,      200,      200,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:decide": {  # approve A's pending step; an admin is not the care team: refused, back to the queue
        "GET": same(405),
        "POST":           row(LOGIN, 403,      403,      W(QUEUE), 404,      OTP,    LOGIN,   LOGIN,   LOGIN,   QUEUE),
    },
    "web:patients": {
        "GET":            row(LOGIN, 403,      403,      200,      200,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:patient": {
        "GET":            row(LOGIN, 403,      403,      200,      404,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:patient-summary": {
        "GET":            row(LOGIN, 403,      403,      200,      404,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:plan": {  # an admin's save is refused by the service and shown as a form error (200)
        "GET":            row(LOGIN, 403,      403,      200,      404,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
        "POST":           row(LOGIN, 403,      403,      W(TO_PATIENT), 404,   OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:snooze": {  # the care team only; an admin is refused by the service, back to the queue
        "GET": same(405),
        "POST":           row(LOGIN, 403,      403,      W(QUEUE), 404,      OTP,    LOGIN,   LOGIN,   LOGIN,   QUEUE),
    },
    "web:model-health": {
        "GET":            row(LOGIN, 403,      403,      200,      200,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:autonomy": {  # the clinician's own teams; an admin sees every team
        "GET":            row(LOGIN, 403,      403,      200,      200,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:overdue": {  # the clinician's own teams' patients; an admin sees every patient
        "GET":            row(LOGIN, 403,      403,      200,      200,      OTP,    LOGIN,   LOGIN,   LOGIN,   200),
    },
    "web:suspension-lift": {  # per model version: a clinical lead (A's clinician leads team A), or an admin
        "GET": same(405),
        "POST":           row(LOGIN, 403,      403,      W(HEALTH), HEALTH,   OTP,    LOGIN,   LOGIN,   LOGIN,
                              W(HEALTH)),
    },
    # --- web: the patient portal (patients only, each for themself; clinicians and admins 403) ---
    "web:portal": {
        "GET":            row(LOGIN, 200,      200,      403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
    "web:portal-dose": {  # patient B has no plan, so no dose to log: refused, back to the portal
        "GET": same(405),
        "POST":           row(LOGIN, W(PORTAL), PORTAL,  403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
    "web:portal-acknowledge": {  # A's released change
        "GET": same(405),
        "POST":           row(LOGIN, W(PORTAL), 404,     403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
    "web:portal-cuff": {  # each patient enters a reading for themself
        "GET":            row(LOGIN, 200,      200,      403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
        "POST":           row(LOGIN, W(PORTAL), W(PORTAL), 403,    403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
    "web:portal-symptoms": {
        "GET":            row(LOGIN, 200,      200,      403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
        "POST":           row(LOGIN, W(SYMPTOMS), W(SYMPTOMS), 403, 403,     403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
    "web:portal-devices": {
        "GET":            row(LOGIN, 200,      200,      403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
    "web:portal-history": {
        "GET":            row(LOGIN, 200,      200,      403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
    "web:portal-summary": {
        "GET":            row(LOGIN, 200,      200,      403,      403,      403,    LOGIN,   LOGIN,   LOGIN,   403),
    },
}

# The Django admin is one rule family: every admin/ route is for staff only (anyone else is sent to
# the admin's sign-in; patients and clinicians are not staff). Sampled on the index, the patients'
# change list and patient A's change page (GET: people, devices and keys are read-only there).
ADMIN_PREFIX = "admin/"
ADMIN_RULE: dict[str, dict[str, Expect]] = {
    "GET": row(ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN,
               ADMIN_LOGIN, ADMIN_LOGIN, ADMIN_LOGIN, 200),
}
ADMIN_SAMPLES = ("admin:index", "admin:patients_patient_changelist", "admin:patients_patient_change")

# Cases where the matrix found someone let in who must not be: (route, role, method) -> what is wrong.
# Each is an xfail(strict=True) until the product is fixed (then it passes and must be removed here).
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


# --- The routes, from the URL conf --------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    key: str  # namespace:name, or the full pattern for an unnamed route
    pattern: str
    callback: Any

    @property
    def is_admin(self) -> bool:
        return self.pattern.startswith(ADMIN_PREFIX)


def walk(resolver: URLResolver, prefix: str = "", namespace: str | None = None):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = namespace
            if entry.namespace:
                inner = f"{namespace}:{entry.namespace}" if namespace else entry.namespace
            yield from walk(entry, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            pattern = prefix + str(entry.pattern)
            if entry.name:
                key = f"{namespace}:{entry.name}" if namespace else entry.name
            else:
                key = pattern
            yield Route(key=key, pattern=pattern, callback=entry.callback)


def all_routes() -> list[Route]:
    return list(walk(get_resolver()))


def accepted_methods(callback: Any) -> set[str]:
    """GET/POST as the view accepts them: a class view's handlers, or the list of
    require_http_methods (require_POST, require_GET) on a function view; otherwise both."""
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is not None:
        initkwargs = getattr(callback, "initkwargs", None) or getattr(callback, "view_initkwargs", None) or {}
        names = initkwargs.get("http_method_names", cls.http_method_names)
        return {m.upper() for m in names if hasattr(cls, m)} & set(METHODS)
    view = callback
    while view is not None:
        allowed = inspect.getclosurevars(view).nonlocals.get("request_method_list")
        if allowed is not None:
            return set(allowed) & set(METHODS)
        view = getattr(view, "__wrapped__", None)
    return set(METHODS)


def rule_for(route: Route) -> dict[str, dict[str, Expect]] | None:
    return ADMIN_RULE if route.is_admin else RULES.get(route.key)


def cases() -> list:
    params = []
    for route in all_routes():
        if route.is_admin and route.key not in ADMIN_SAMPLES:
            continue
        rule = rule_for(route)
        methods = list(rule) if rule else ["GET"]  # no rule: the GET cases fail and say so
        for method in methods:
            for role in ROLES:
                reason = KNOWN_BUGS.get((route.key, role, method))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                params.append(pytest.param(route.key, role, method, marks=marks, id=f"{route.key}[{role}-{method}]"))
    return params


# --- The world: patient A (team A) and patient B (team B), their devices, a plan, suggestions ----

@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    # Each refused web request logs a django.request warning with its traceback (~40 ms apiece
    # through the console renderer): hundreds here. Only this module's requests are quietened.
    request_log = logging.getLogger("django.request")
    level = request_log.level
    request_log.setLevel(logging.ERROR)
    try:
        with django_db_blocker.unblock():
            with transaction.atomic():
                yield build_world()
                transaction.set_rollback(True)
    finally:
        request_log.setLevel(level)


class MatrixClient(Client):
    """Django's test client with one request handler for the module: building the middleware
    chain (WhiteNoise scans the static files) costs more than most requests here."""

    shared_handler = None

    def __init__(self, **defaults):
        super().__init__(**defaults)
        if MatrixClient.shared_handler is None:
            MatrixClient.shared_handler = self.handler
        self.handler = MatrixClient.shared_handler


def build_world() -> SimpleNamespace:
    from django.core.cache import cache

    from clinops.base.audit import SYSTEM
    from monitoring.bp import registry
    from monitoring.models import AutonomySuspension, SignalWindow
    from patients import services as patient_services
    from tests.factories import make_admin, make_clinician, make_device, make_patient, make_team
    from tests.therapy.conftest import store_estimates, week_of
    from therapy import plans
    from therapy import services as therapy_services
    from therapy.adherence import scheduled_doses
    from therapy.evaluation import patient_therapy_evaluate
    from therapy.models import Alert, PlanVersion, Suggestion, SuggestionStatus
    from therapy.selectors import plan_current

    cache.clear()  # upload throttle counters of earlier runs
    now = timezone.now()
    team_a, team_b = make_team(), make_team()
    clinician_in, clinician_out = make_clinician(team=team_a), make_clinician(team=team_b)
    team_a.clinical_leads.add(clinician_in)
    patient_a, patient_b = make_patient(team=team_a), make_patient(team=team_b)
    device_a, key_a = make_device(patient_a)
    device_b, key_b = make_device(patient_b)
    device_revoked, key_revoked = make_device(patient_a)
    patient_services.device_revoke(actor=SYSTEM, device=device_revoked, reason="lost")
    admin = make_admin()

    # A's plan (set two months ago), a week of estimates from A's wearable, and the engine's step.
    plan = therapy_services.plan_create(actor=clinician_in.user, patient=patient_a, template="ace-ccb-thiazide",
                                        reason="start", auto_step_up=True, max_auto_rung=3)
    PlanVersion.objects.filter(pk=plan.pk).update(created_at=now - dt.timedelta(days=60))
    store_estimates(patient_a, device_a, week_of(148, 92), now=now)
    released = patient_therapy_evaluate(patient_id=patient_a.pk, now=now)
    assert released is not None and released.status == SuggestionStatus.PENDING_REVIEW
    # Approved: a change released to the patient (rung 0 -> 1), to see and acknowledge.
    therapy_services.suggestion_approve(actor=clinician_in.user, suggestion_id=released.pk)
    released.refresh_from_db()
    current = plan_current(patient_a)
    ladder = plans.ladder_of(current)
    # And a new pending step (1 -> 2) for the care team to decide, with an open alert.
    pending = Suggestion.objects.create(
        patient=patient_a, plan_version=current, kind=released.kind, from_rung=1, to_rung=2,
        from_regimen=ladder.describe(1), to_regimen=ladder.describe(2), evidence=released.evidence,
        estimate_ids=released.estimate_ids, model_versions=released.model_versions,
        policy_version=released.policy_version, auto_release=False, routing_reasons=["adherence unknown"],
        proposal_reasons=released.proposal_reasons, urgent=True, status=SuggestionStatus.PENDING_REVIEW,
    )
    # A side effect does not send the patient to seek care, so its alert may be snoozed.
    alert = Alert.objects.create(patient=patient_a, cause="side effect", message="side effect reported",
                                 seek_care=False, suggestion=pending)
    suspension = AutonomySuspension.objects.create(model_version=registry.model_active(), reason="drift")
    window = SignalWindow.objects.filter(device=device_a).order_by("pk").first()
    today = timezone.localdate(now)
    dose = scheduled_doses(ladder.rungs[current.current_rung], today)[0]

    # One session per person (a case that signs out deletes it in its own savepoint only).
    users = {"patient_a": patient_a.user, "patient_b": patient_b.user, "clinician_in": clinician_in.user,
             "clinician_out": clinician_out.user, "clinician_no_otp": clinician_in.user, "admin": admin}
    sessions = {}
    for role, user in users.items():
        signed_in = MatrixClient()
        signed_in.force_login(user)
        sessions[role] = signed_in.cookies[django_settings.SESSION_COOKIE_NAME].value

    # The plan editor's own form, as a clinician of the team gets it, with a reason.
    page = signed_in_as("clinician_in", sessions).get(reverse("web:plan", kwargs={"patient_id": patient_a.pk}))
    assert page.status_code == 200
    plan_form = {**page.context["form"].initial, "target_sbp_mmhg": 130, "reason": "matrix: high risk"}

    return SimpleNamespace(
        now=now, patient_a=patient_a, patient_b=patient_b, clinician_in=clinician_in, clinician_out=clinician_out,
        admin=admin, device_a=device_a, device_b=device_b, device_revoked=device_revoked,
        keys={"device_a": key_a, "device_b": key_b, "device_revoked": key_revoked},
        sessions=sessions,
        released=released, pending=pending, alert=alert, suspension=suspension, window=window,
        today=today, dose=dose, plan_form=plan_form,
    )


# URL kwargs, by name: patient A's objects (suggestion routes: the pending step, or the released
# change where that is what the route is for).
RELEASED_CHANGE_ROUTES = {"therapy:suggestion-detail", "therapy:suggestion-acknowledge", "web:portal-acknowledge"}
URL_KWARG = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>")


def url_kwargs(route: Route, w: SimpleNamespace) -> dict[str, Any]:
    values = {
        "patient_id": w.patient_a.pk,
        "device_id": w.device_a.pk,
        "window_id": w.window.pk,
        "suggestion_id": (w.released if route.key in RELEASED_CHANGE_ROUTES else w.pending).pk,
        "alert_id": w.alert.pk,
        "suspension_id": w.suspension.pk,
        "action": "approve",
        "object_id": str(w.patient_a.pk),  # admin change pages
    }
    wanted = [a or b for a, b in URL_KWARG.findall(route.pattern)]
    missing = [name for name in wanted if name not in values]
    assert not missing, f"{route.key}: no value for URL kwarg(s) {missing}; add one to url_kwargs()"
    return {name: values[name] for name in wanted}


def window_body(sequence: int) -> dict:
    """A valid 8-s ECG + PPG window at 125 Hz (JSON numbers); its content does not matter here."""
    n = 8 * 125
    recorded_at = (timezone.now() - dt.timedelta(minutes=2)).replace(microsecond=0)
    return {"sequence": sequence, "recorded_at": recorded_at.isoformat().replace("+00:00", "Z"), "duration_s": 8,
            "ecg": {"fs": 125, "samples": [0.0] * n}, "ppg": {"fs": 125, "samples": [0.0] * n}}


def cuff_body() -> dict:
    return {"measured_at": (timezone.now() - dt.timedelta(minutes=5)).isoformat(), "sbp_mmhg": 131, "dbp_mmhg": 84}


# POST bodies: valid for the roles allowed to write, and the same body for everyone else (a valid
# request must still be refused). API bodies are JSON, web bodies form fields.
def post_body(key: str, w: SimpleNamespace) -> dict:
    dose = {"day": w.today.isoformat(), "drug": w.dose.drug, "slot": w.dose.slot}
    bodies = {
        "patients:device-revoke": {"reason": "lost"},
        "monitoring:window-upload": window_body(10**9),
        "monitoring:window-batch-upload": {"windows": [window_body(10**9 + 1)]},
        "monitoring:patient-cuff-readings": cuff_body(),
        "monitoring:device-cuff-readings": cuff_body(),
        "therapy:patient-plan": {"reason": "matrix: high risk", "target_sbp_mmhg": 130},
        "therapy:patient-doses": {**dose, "taken": True},
        "therapy:patient-symptom-reports": {"kind": "side_effect", "detail": "dry cough"},
        "therapy:suggestion-approve": {"note": "agreed"},
        "therapy:suggestion-modify": {"to_rung": 2, "reason": "agreed"},
        "therapy:suggestion-reject": {"reason": "not now"},
        "therapy:suggestion-acknowledge": {},
        "web:login": {},
        "web:otp": {"token": "not-a-code"},
        "web:decide": {"note": "agreed"},
        "web:plan": w.plan_form,
        "web:snooze": {"reason": "known, handled", "days": "3"},
        "web:suspension-lift": {"reason": "checked the model"},
        "web:portal-dose": {**dose, "taken": "yes"},
        "web:portal-cuff": {"sbp_mmhg": "131", "dbp_mmhg": "84"},
        "web:portal-symptoms": {"kind": "side_effect", "detail": "dry cough"},
    }
    return bodies.get(key, {})


def signed_in_as(role: str, sessions: dict[str, str]) -> Client:
    client = MatrixClient()
    client.cookies[django_settings.SESSION_COOKIE_NAME] = sessions[role]
    return client


def client_for(role: str, w: SimpleNamespace) -> Client:
    if role == "anonymous":
        return MatrixClient()
    if role.startswith("device_"):
        return MatrixClient(HTTP_AUTHORIZATION=f"Api-Key {w.keys[role]}")
    return signed_in_as(role, w.sessions)


def stored_state() -> tuple[int, int, int]:
    """What a write changes: every service writes an audit row; windows and cuff readings are data."""
    from clinops.base.models import AuditEvent
    from monitoring.models import CuffReading, SignalWindow

    return AuditEvent.objects.count(), SignalWindow.objects.count(), CuffReading.objects.count()


def mentions_patient(body: bytes, content_type: str, patient) -> str | None:
    """Why this body reveals `patient` (their record number, or an object of theirs), or None."""
    if patient.medical_record_number.encode() in body:
        return f"holds {patient.medical_record_number}"
    if "json" not in content_type:
        return None

    def walk_json(value) -> bool:
        if isinstance(value, dict):
            return value.get("patient") == patient.pk or any(walk_json(v) for v in value.values())
        if isinstance(value, list):
            return any(walk_json(v) for v in value)
        return False

    try:
        data = json.loads(body)
    except ValueError:
        return None
    return f'holds an object with "patient": {patient.pk}' if walk_json(data) else None


def _matches(expected: Expect, response) -> bool:
    if isinstance(expected, W):
        expected = expected.expect
    if isinstance(expected, Redirect):
        location = response.headers.get("Location", "")
        return response.status_code == 302 and (
            location.startswith(expected.to) if expected.prefix else location == expected.to)
    return response.status_code == expected


# --- The tests ------------------------------------------------------------------------------------

ROUTES_BY_KEY = {route.key: route for route in all_routes()}


@pytest.mark.parametrize("route_key, role, method", cases())
def test_access(world, db, settings, route_key: str, role: str, method: str):
    if role == "clinician_no_otp":  # as in production; the session has passed the password only
        settings.CLINOPS_OTP_REQUIRED_FOR_CLINICIANS = True
    route = ROUTES_BY_KEY[route_key]
    rule = rule_for(route)
    assert rule is not None, f"no rule for {route.key} ({route.pattern}): add one to RULES"
    expected = rule[method][role]
    url = reverse(route.key, kwargs=url_kwargs(route, world))
    client = client_for(role, world)
    before = stored_state()
    if method == "GET":
        response = client.get(url)
    elif url.startswith("/api/"):
        response = client.post(url, json.dumps(post_body(route.key, world)), content_type="application/json")
    else:
        response = client.post(url, post_body(route.key, world))
    after = stored_state()

    got = response.status_code
    if got in (301, 302):
        got = f"{got} -> {response.headers.get('Location')}"
    assert _matches(expected, response), (
        f"{method} {url} as {role}: expected {expected}, got {got}: {response.content[:300]!r}")
    if isinstance(expected, W):
        assert after != before, f"{method} {url} as {role}: answered {got} but stored nothing"
    else:
        assert after == before, f"{method} {url} as {role}: answered {got} and changed the stored state"
    if role in OUTSIDERS and 200 <= response.status_code < 300:
        leak = mentions_patient(response.content, response.headers.get("Content-Type", ""), world.patient_a)
        assert leak is None, f"{method} {url} as {role}: the answer {leak} (patient A is not theirs)"


def test_every_route_has_a_rule():
    """A new route fails here until RULES says who may call it, with every method its view accepts."""
    problems = []
    for route in all_routes():
        if route.is_admin:
            continue
        rule = RULES.get(route.key)
        if rule is None:
            problems.append(f"{route.key} ({route.pattern}): no rule")
            continue
        wanted = {"GET"} | accepted_methods(route.callback)
        if set(rule) != wanted:
            problems.append(f"{route.key}: the rule covers {sorted(rule)}, it must cover {sorted(wanted)} "
                            "(GET, and each method the view accepts)")
        for method, cells in rule.items():
            if set(cells) != set(ROLES):
                problems.append(f"{route.key} {method}: roles {sorted(set(ROLES) ^ set(cells))} missing or unknown")
    assert not problems, "\n".join(problems)


def test_every_rule_names_a_route():
    """A rule for a route that no longer exists (renamed, removed) is a hole in the matrix."""
    keys = set(ROUTES_BY_KEY)
    stale = sorted(set(RULES) - keys) + sorted(set(ADMIN_SAMPLES) - keys)
    stale += sorted(f"KNOWN_BUGS {k}" for k in KNOWN_BUGS if k[0] not in keys)
    assert not stale, f"rules for routes that do not exist: {stale}"
    assert all(ROUTES_BY_KEY[name].is_admin for name in ADMIN_SAMPLES)
