"""A lone surrogate, a NUL character and an over-long string in every field of every API write and
of every form of the web app, on SQLite and on PostgreSQL (which keeps neither NUL nor a lone
surrogate and refused over-long text with a DataError, a 500): never a 5xx, the field named in the
refusal, and nothing stored or changed by a refused request.

The API part is exhaustive, not sampled (test_api_malformed_requests.py samples these values among
many others): each leaf field of each write's valid body — nested ones too, a window's channels,
a plan's ladder and exclusions — and each top-level field the body leaves out. The web part reads
the forms off the pages each role is shown (so a new form is covered without a new line here) and
sends each of their fields broken the same way, as a browser would post them.
"""
from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import pytest
from django.db import transaction
from django.test import Client

from tests.clinops.test_api_malformed_requests import (  # noqa: F401 - clinic and raw_context are fixtures
    BODIES,
    ROUTES,
    Malformed,
    Route,
    _json,
    clients,
    clinic,
    raw_context,
    send,
)
from tests.clinops.test_api_schemathesis import KNOWN_IDS, stored_counts

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

OVER_LONG = "x" * 20_000  # past every field's limit (the longest free text takes 2,000)
BAD_TEXT = {"lone surrogate": "\ud800", "NUL": "chest\x00pain", "over-long": OVER_LONG}

# The plan write, with every field a hand-built plan can hold, so that their leaves are broken too.
FULL_PLAN = {
    "reason": "hand-built ladder", "ladder_name": "losartan first", "seek_care_instructions": "Call the ward.",
    "ladder": [[{"drug": "losartan", "dose_mg": 50, "frequency": "once daily"}],
               [{"drug": "losartan", "dose_mg": 100, "frequency": "once daily"}]],
    "exclusions": [{"kind": "pregnancy", "detail": "week 20"}],
}


Path = tuple[str | int, ...]


def leaves(value: Any, path: Path = ()) -> Iterator[Path]:
    """The paths of the scalar values inside a JSON body (dict keys and list indexes)."""
    if isinstance(value, dict):
        for key in sorted(value):
            yield from leaves(value[key], (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, (*path, index))
    else:
        yield path


def replaced(body: Any, path: Path, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(body, dict):
        return {**body, head: replaced(body.get(head), rest, new)}
    return [replaced(item, rest, new) if i == head else item for i, item in enumerate(body)]


def api_cases() -> Iterator[tuple[str, Path, str]]:
    """(operation, field path, bad value's name) for every leaf and every top-level field (a field
    holding an object or a list is also replaced whole)."""
    for label, (serializer_class, _) in sorted(BODIES.items()):
        example = valid_body(label, {"now": None, "dose": {"day": "", "drug": "", "slot": "", "taken": True}},
                             structure_only=True)
        paths = set(leaves(example)) | {(name,) for name in serializer_class().fields}
        for path in sorted(paths, key=lambda p: [str(x) for x in p]):
            for bad in BAD_TEXT:
                yield label, path, bad


def valid_body(label: str, ctx: dict, *, structure_only: bool = False) -> Any:
    if label == "POST /api/v1/patients/{patient_id}/plan/":
        return FULL_PLAN
    if structure_only and label in ("POST /api/v1/windows/", "POST /api/v1/windows/batch/", "POST /api/v1/cuff-readings/",
                                    "POST /api/v1/patients/{patient_id}/cuff-readings/"):
        import datetime as dt

        from django.utils import timezone
        ctx = {**ctx, "now": timezone.now() - dt.timedelta(minutes=1)}
    return BODIES[label][1](ctx)


def field_named(path: Path) -> str:
    """The name a refusal must give: the top-level field (a batch: the window's field)."""
    return str(path[2]) if path[0] == "windows" and len(path) > 2 else str(path[0])


@pytest.mark.parametrize(("label", "path", "bad"), list(api_cases()),
                         ids=lambda v: "/".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_every_api_field_refuses_bad_text_by_name_and_stores_nothing(label, path, bad, clinic, raw_context):
    route: Route = next(r for r in ROUTES if r.label == label)
    body = replaced(valid_body(label, raw_context), path, BAD_TEXT[bad])
    request = Malformed(kind=f"{bad} in {path}", method=route.method,
                        path=route.path.format(**{name: KNOWN_IDS[name] for name in route.path_parameters}),
                        body=_json(body))
    with transaction.atomic():
        before = stored_counts()
        answer = send(clients(clinic), route, request, raw_context)
        after = stored_counts()
        transaction.set_rollback(True)
    described = f"{request.describe()}\n-> {answer.status_code}: {answer.content[:400]!r}"
    assert answer.status_code < 500, described
    assert after == before, described
    name = field_named(path)
    if label == "POST /api/v1/windows/batch/" and len(path) > 2:
        assert answer.status_code == 200, described
        [result] = answer.json()["results"]
        assert result["result"] == "rejected" and name in result["errors"], described
    else:
        assert answer.status_code == 400 and name in answer.json()["extra"]["fields"], described


# --- The web app's forms ---------------------------------------------------------------------------

class Form:
    def __init__(self, page: str, action: str) -> None:
        self.page, self.action = page, action
        self.fields: dict[str, str] = {}  # what the browser would send as the page stands
        self.submitter: tuple[str, str] | None = None  # the first named submit button
        self.htmx = False  # posted by htmx (HX-Request: true) in the browser

    def __repr__(self) -> str:
        return f"<form on {self.page} posting to {self.action}: {sorted(self.fields)}>"


class Forms(HTMLParser):
    """The POST forms of a page with what a browser would send: inputs (checked boxes and radios
    only), selects (the selected option, else the first), textareas and the first named button."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page, self.forms = page, []
        self._form: Form | None = None
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and (a.get("method", "get").lower() == "post" or "hx-post" in a):
            self._form = Form(self.page, a.get("hx-post") or a.get("action") or self.page)
            self._form.htmx = "hx-post" in a
            self.forms.append(self._form)
        if self._form is not None and tag == "option" and self._select is not None:
            if "selected" in a or self._select not in self._form.fields:
                self._form.fields[self._select] = a.get("value", "")
        if self._form is None or not a.get("name"):
            return
        name, fields = a["name"], self._form.fields
        if tag == "input":
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    fields[name] = a.get("value", "on")
                elif kind == "radio":
                    fields.setdefault(name, a.get("value", "on"))
            elif kind not in ("submit", "button", "reset"):
                fields[name] = a.get("value", "")
        elif tag == "button" and a.get("type", "submit") == "submit" and self._form.submitter is None:
            self._form.submitter = (name, a.get("value", ""))
        elif tag == "select":
            self._select = name
        elif tag == "textarea":
            self._textarea = name
            fields[name] = ""

    def handle_data(self, data: str) -> None:
        if self._form is not None and self._textarea is not None:
            self._form.fields[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


# Values a person would type into the fields a page leaves empty, so that each form as sent is one
# the app accepts (the baseline) before one of its fields is broken.
FILLS = {"sbp_mmhg": "131", "dbp_mmhg": "84", "symptom": "dizziness", "detail": "dry cough", "reason": "checked",
         "note": "spoke with the patient",
         "token": "123456"}
# Navigation, not data: a bad value is ignored (the login goes to "/"), never stored.
NOT_STORED = {"next"}
# Raw bytes in a form body: a browser sends UTF-8, percent-encoded. A lone surrogate can only come as
# its (invalid) UTF-8 bytes, which Django decodes as U+FFFD: it never reaches the app as a surrogate.
RAW = {"lone surrogate": quote("\ud800", errors="surrogatepass"), "NUL": "chest%00pain", "over-long": OVER_LONG}


def state() -> tuple:
    """What a form may change: the stored rows (every service writes an audit row) and the states
    that change in place."""
    from monitoring.models import AutonomySuspension
    from therapy.models import Alert, Suggestion

    return (stored_counts(), sorted(Suggestion.objects.values_list("pk", "status")),
            sorted(Alert.objects.values_list("pk", "snoozed_until", "closed_at")),
            sorted(AutonomySuspension.objects.values_list("pk", "lifted_at")))


def body_of(form: Form, *, broken: str | None = None, bad: str = "") -> bytes:
    fields = {**form.fields, **{k: v for k, v in FILLS.items() if k in form.fields and not form.fields[k]}}
    if form.submitter:
        fields[form.submitter[0]] = form.submitter[1]
    parts = [f"{quote(k)}={RAW[bad] if k == broken else quote(v)}" for k, v in fields.items()]
    return "&".join(parts).encode()


def post(client: Client, form: Form, body: bytes):
    with transaction.atomic():
        before = state()
        answer = client.generic("POST", form.action, body, content_type="application/x-www-form-urlencoded",
                                headers={"HX-Request": "true"} if form.htmx else {})
        changed = state() != before
        transaction.set_rollback(True)
    return answer, changed


@pytest.fixture
def ward(db, monkeypatch):
    """Every form the app shows, on screen at once: a care team whose clinician is its clinical
    lead; a patient in crisis (a pending step, an open alert to snooze), a patient with a released
    change to acknowledge and doses to log today, and a suspension of the active model to lift."""
    import datetime as dt

    from django.utils import timezone

    from monitoring.bp import registry
    from monitoring.models import AutonomySuspension
    from tests.factories import make_clinician, make_device, make_patient, make_team
    from tests.therapy.conftest import store_estimates, week_of
    from therapy import services
    from therapy.evaluation import patient_therapy_evaluate
    from therapy.models import PlanVersion

    # Celery sends after commit are left out: nothing here commits, and no worker is needed.
    for module in ("monitoring.ingest.intake", "monitoring.bp.cuff_calibration", "therapy.services", "therapy.receivers"):
        monkeypatch.setattr(f"{module}.enqueue_on_commit", lambda *args, **kwargs: None)
    now = timezone.now()
    team = make_team()
    lead = make_clinician(team=team)
    team.clinical_leads.add(lead)

    def patient_with(values):
        patient = make_patient(team=team)
        device, _ = make_device(patient)
        services.plan_create(actor=lead.user, patient=patient, template="ace-ccb-thiazide", reason="start",
                             auto_step_up=True, max_auto_rung=3)
        PlanVersion.objects.filter(patient=patient).update(created_at=now - dt.timedelta(days=60))
        store_estimates(patient, device, values, now=now)
        return patient, patient_therapy_evaluate(patient_id=patient.pk, now=now)

    crisis, _ = patient_with(week_of(150, 95) + [(0.6, 192, 124), (0.4, 188, 121)])
    # A side effect joins the crisis item with an alert that may be snoozed (the crisis one may not).
    services.symptom_report_record(actor=crisis.user, patient=crisis, kind="side_effect", drug="lisinopril",
                                   detail="dry cough")
    patient_therapy_evaluate(patient_id=crisis.pk, now=timezone.now())
    patient_with(week_of(150, 94))  # a step waiting for review
    home, step = patient_with(week_of(148, 92))
    services.suggestion_approve(actor=lead.user, suggestion_id=step.pk)
    AutonomySuspension.objects.create(model_version=registry.model_active(), reason="drift of the PAT")
    return {"lead": lead.user, "crisis": crisis, "home": home}


def forms_seen(client: Client, pages: list[str]) -> list[Form]:
    found = []
    for page in pages:
        answer = client.get(page)
        assert answer.status_code == 200, (page, answer.status_code)
        parser = Forms(page)
        parser.feed(answer.content.decode())
        found += parser.forms
    return found


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def pages_of(role: str, ward: dict) -> tuple[Client, list[str]]:
    if role == "patient":
        return signed_in(ward["home"].user), ["/portal/", "/portal/cuff/", "/portal/symptoms/", "/portal/devices/",
                                              "/portal/history/"]
    crisis = ward["crisis"].pk
    return signed_in(ward["lead"]), ["/clinic/", "/clinic/patients/", f"/clinic/patients/{crisis}/",
                                     f"/clinic/patients/{crisis}/plan/", "/clinic/autonomy/", "/clinic/model-health/",
                                     "/login/otp/"]


EXPECTED_FORMS = {  # what each role must find, so that a page that stops showing a form fails here
    "patient": {"/portal/changes/", "/portal/doses/", "/portal/cuff/", "/portal/symptoms/", "/logout/"},
    "clinician": {"/snooze/", "/approve/", "/modify/", "/reject/", "/contacted/", "/advised/", "/resolved/", "/plan/",
                  "/lift/", "/login/otp/", "/logout/"},
}


@pytest.mark.parametrize("role", sorted(EXPECTED_FORMS))
def test_every_form_refuses_bad_text_and_stores_nothing(role, ward):
    client, pages = pages_of(role, ward)
    forms = [f for f in forms_seen(client, pages) if not f.action.endswith("/logout/")]
    seen = {part for part in EXPECTED_FORMS[role] for f in forms_seen(client, pages) if part in f.action}
    assert seen == EXPECTED_FORMS[role], f"forms not found: {EXPECTED_FORMS[role] - seen}"
    problems, sent = [], 0
    for form in forms:
        if not form.action.endswith("/login/otp/"):  # no code is right without the phone
            answer, changed = post(client, form, body_of(form))
            assert answer.status_code < 400 and changed, f"the form as filled must be accepted: {form} -> " \
                                                          f"{answer.status_code} {answer.content[:300]!r}"
        for field in sorted(form.fields):
            if field == "csrfmiddlewaretoken":
                continue
            for bad in RAW:
                answer, changed = post(client, form, body_of(form, broken=field, bad=bad))
                sent += 1
                if answer.status_code >= 500:
                    problems.append(f"{form.action} {field}={bad}: {answer.status_code}")
                elif changed and not (bad == "lone surrogate" or field in NOT_STORED):
                    problems.append(f"{form.action} {field}={bad}: stored ({answer.status_code})")
    assert not problems, "\n".join(problems)
    assert sent >= 3 * len(forms)


def test_the_sign_in_form_refuses_bad_text(ward):
    [form] = forms_seen(Client(), ["/login/"])
    assert {"username", "password"} <= set(form.fields)
    user = ward["home"].user
    filled = {**form.fields, "username": user.username, "password": "pw-patient"}
    good = Client().post("/login/", filled)
    assert good.status_code == 302
    for field in ("username", "password", "next"):
        for bad in RAW:
            body = "&".join(f"{quote(k)}={RAW[bad] if k == field else quote(v)}" for k, v in
                            {**filled, "next": "/portal/"}.items()).encode()
            answer = Client().generic("POST", "/login/", body, content_type="application/x-www-form-urlencoded")
            assert answer.status_code < 500, (field, bad)
            # A broken name or password signs no one in; a broken `next` is ignored.
            assert (answer.status_code == 302) == (field == "next"), (field, bad, answer.status_code)
