"""The clinician app: review queue with one-click decisions (htmx), patient list with triage,
patient page. Views are thin: a selector or a service, then a template."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TypedDict

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from clinops.base.errors import ApplicationError
from clinops.base.models import AuditEvent
from clinops.web.access import SignedInRequest, clinician_required
from clinops.web.forms import PatientListFilter, PlanForm
from monitoring.models import Calibration, MonitoringReportKind
from monitoring.selectors import bp_trend, latest_reports
from patients.models import CareTeam
from patients.selectors import patients_visible_to
from therapy import plans, services
from therapy.domain import LADDER_TEMPLATES
from therapy.models import PlanVersion, Suggestion, SuggestionKind, SuggestionStatus, SymptomReport
from therapy.plan_advice import plan_warnings
from therapy.selectors import (
    OVERDUE_NO_CUFF_DAYS,
    OVERDUE_NO_READING_DAYS,
    OVERDUE_UNACKNOWLEDGED_DAYS,
    active_model_for_advice,
    alerts_open_for,
    automatic_releases,
    autonomy_counts,
    home_evidence_of,
    overdue_for,
    patients_with_triage,
    plan_current,
    review_queue_for,
    suggestions_visible_to,
)
from therapy.summary import visit_summary
from therapy.triage import Triage

QUEUE_PAGE = 100
TREND_DAYS = 30


# What a clinician does about an escalation, with the note each asks for.
ESCALATION_STEPS = [
    ("contacted", "Patient contacted", "What you heard from the patient"),
    ("advised", "Patient advised", "What you advised"),
    ("resolved", "Resolve", "How it was resolved"),
]


class _QueueCard(TypedDict):
    """What a queue card shows beside the suggestion's own fields."""

    rung_choices: list[tuple[int, str]]  # (rung, label)
    reports: list[SymptomReport]
    escalation_steps: list[tuple[str, str, str]]  # as ESCALATION_STEPS


def _shown_on(item: Suggestion, extras: Mapping[str, object]) -> None:
    # The queue's templates read a card's extras off the suggestion itself (item.reports, ...):
    # attributes of this page that the model does not declare, so they are set by name.
    for name, value in extras.items():
        setattr(item, name, value)


def _for_review(items: list[Suggestion]) -> list[Suggestion]:
    """Queue items with what the card shows: the rungs a clinician may choose (the current one and
    its neighbours) and, for an escalation, the symptom reports that raised it (one query)."""
    report_ids = {int(source.removeprefix("report:")) for item in items for e in item.escalations or []
                  for source in e.get("sources", []) if str(source).startswith("report:")}
    reports = SymptomReport.objects.in_bulk(report_ids)
    for item in items:
        ladder = plans.ladder_of(item.plan_version)
        raised_by = [reports[int(source.removeprefix("report:"))] for e in item.escalations or []
                     for source in e.get("sources", []) if str(source).startswith("report:")
                     and int(source.removeprefix("report:")) in reports]
        card: _QueueCard = {
            "rung_choices": [(i, ladder.label(i)) for i in range(item.from_rung - 1, item.from_rung + 2)
                             if ladder.has(i)],
            "reports": list(dict.fromkeys(raised_by)),
            "escalation_steps": ESCALATION_STEPS if item.kind == SuggestionKind.ESCALATE else [],
        }
        _shown_on(item, card)
        # review_queue_for prefetches them (to_attr); a card shown on its own fetches them here.
        if not hasattr(item, "open_alerts"):
            _shown_on(item, {"open_alerts": list(item.alerts.filter(closed_at=None))})
    return items


@require_GET
@clinician_required
def queue(request: SignedInRequest) -> HttpResponse:
    items = _for_review(list(review_queue_for(request.user)[:QUEUE_PAGE]))
    return render(request, "web/clinic/queue.html", {"items": items, "control": _control_rates(request.user)})


def _control_rates(user) -> list[dict]:
    """Per care team of the user (every team for an administrator), from its newest population
    report (hourly, by beat): controlled / uncontrolled / no usable data, and how many of the
    uncontrolled had no change proposed or made in the report's window (therapeutic inertia)."""
    teams = CareTeam.objects.order_by("name") if user.is_clinops_admin else user.clinician.care_teams.order_by("name")
    reports = {r.scope: r for r in latest_reports(MonitoringReportKind.POPULATION)}
    cards = []
    for team in teams:
        report = reports.get(f"team:{team.pk}")
        if report is None:
            cards.append({"team": team, "report": None})
            continue
        counts = report.payload.get("counts", {})
        cards.append({"team": team, "report": report, "patients": report.payload.get("patients", 0),
                      "controlled": counts.get("controlled", 0), "uncontrolled": counts.get("uncontrolled", 0),
                      "no_data": sum(counts.get(k, 0) for k in ("escalated", "device_silent", "insufficient_data")),
                      "escalated": counts.get("escalated", 0),
                      "inertia": report.payload.get("inertia", {}).get("without_change", 0),
                      "window_days": report.payload.get("inertia", {}).get("window_days", 30)})
    return cards


def _escalation(step: str):
    return lambda user, s, post: services.escalation_act(
        actor=user, suggestion_id=s.pk, step=step, note=post.get("note", ""),
        to_rung=_rung(post) if post.get("to_rung", "") != "" else None)


DECISIONS = {
    "approve": lambda user, s, post: services.suggestion_approve(actor=user, suggestion_id=s.pk, note=post.get("note", "")),
    "modify": lambda user, s, post: services.suggestion_modify(actor=user, suggestion_id=s.pk, to_rung=_rung(post),
                                                               reason=post.get("reason", "")),
    "reject": lambda user, s, post: services.suggestion_reject(actor=user, suggestion_id=s.pk, reason=post.get("reason", "")),
    # An escalation's own workflow: contacting and advising keep it in the queue; resolving closes it.
    "contacted": _escalation("contacted"),
    "advised": _escalation("advised"),
    "resolved": _escalation("resolved"),
}


def _rung(post) -> int:
    try:
        return int(post.get("to_rung", ""))
    except ValueError:
        raise ApplicationError("Choose a rung.", extra={"fields": {"to_rung": ["required"]}}) from None


@require_POST
@clinician_required
def decide(request: SignedInRequest, suggestion_id: int, action: str) -> HttpResponse:
    """Approve, modify or reject one pending suggestion. With htmx the item is replaced in place by
    the outcome (or re-shown with the error); without, back to the queue."""
    suggestion = get_object_or_404(suggestions_visible_to(request.user), pk=suggestion_id)
    if action not in DECISIONS:
        raise PermissionDenied("Unknown decision.")
    try:
        decided = DECISIONS[action](request.user, suggestion, request.POST)
    except ApplicationError as exc:
        if not request.htmx:
            messages.error(request, exc.message)
            return redirect("web:queue")
        suggestion.refresh_from_db()
        [item] = _for_review([suggestion])
        return render(request, "web/clinic/_queue_item.html", {"item": item, "error": exc.message})
    if request.htmx:
        if decided.status == SuggestionStatus.PENDING_REVIEW:  # contacted or advised: still in the queue
            [item] = _for_review([decided])
            return render(request, "web/clinic/_queue_item.html", {"item": item, "done": action})
        # The queue's and the header's counters are refreshed with it (htmx out-of-band swaps).
        return render(request, "web/clinic/_decided.html",
                      {"item": decided, "queue_count": review_queue_for(request.user)[:QUEUE_PAGE].count()})
    messages.success(request, f"{decided.get_status_display()}: {decided.patient}.")
    return redirect("web:queue")


PATIENTS_PAGE = 50


@require_GET
@clinician_required
def patient_list(request: SignedInRequest) -> HttpResponse:
    """The care teams' patients, most urgent first: triage, search and filters, 50 a page."""
    filters = PatientListFilter(request.GET, queryset=patients_visible_to(request.user), user=request.user)
    rows = patients_with_triage(filters.qs, now=timezone.now())
    counts = {t: sum(1 for r in rows if r.triage is t) for t in Triage}
    wanted = request.GET.get("triage", "")
    if wanted in {t.value for t in Triage}:
        rows = [r for r in rows if r.triage.value == wanted]
    page = Paginator(rows, PATIENTS_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    template = "web/clinic/_patient_rows.html" if request.htmx else "web/clinic/patients.html"
    return render(request, template, {"page": page, "rows": page.object_list, "counts": counts, "filters": filters,
                                      "triage": wanted, "triages": list(Triage), "query": query.urlencode()})


@require_GET
@clinician_required
def overdue(request: SignedInRequest) -> HttpResponse:
    """Follow-up: the care teams' patients overdue for a reading, a cuff reading or an acknowledgement."""
    lists = overdue_for(request.user)
    sections = [
        ("no_reading", f"No reading for {OVERDUE_NO_READING_DAYS} days", "neither the wearable nor a cuff sent anything",
         lists["no_reading"]),
        ("no_cuff", f"No home cuff reading for {OVERDUE_NO_CUFF_DAYS} days", "no home series can be complete: the "
         "wearable alone never releases a change", lists["no_cuff"]),
        ("unacknowledged", f"Change not acknowledged for {OVERDUE_UNACKNOWLEDGED_DAYS} days",
         "the patient has not confirmed reading a released change", lists["unacknowledged"]),
    ]
    return render(request, "web/clinic/overdue.html", {"sections": sections})


@require_POST
@clinician_required
def snooze(request: SignedInRequest, alert_id: int) -> HttpResponse:
    """Snooze an alert with a reason for 1-7 days; the item leaves the queue until then."""
    alert = get_object_or_404(alerts_open_for(request.user), pk=alert_id)
    try:
        days = float(request.POST.get("days", "0"))
        services.alert_snooze(actor=request.user, alert_id=alert.pk, reason=request.POST.get("reason", ""), days=days)
    except (ValueError, ApplicationError) as exc:
        message = exc.message if isinstance(exc, ApplicationError) else "Choose how many days."
        if request.htmx:
            [item] = _for_review([alert.suggestion])
            return render(request, "web/clinic/_queue_item.html", {"item": item, "error": message})
        messages.error(request, message)
        return redirect("web:queue")
    alert.refresh_from_db()
    if request.htmx:
        return render(request, "web/clinic/_snoozed.html",
                      {"alert": alert, "queue_count": review_queue_for(request.user)[:QUEUE_PAGE].count()})
    messages.success(request, f"Snoozed until {alert.snoozed_until:%d %b %H:%M}.")
    return redirect("web:queue")


@clinician_required
def plan_edit(request: SignedInRequest, patient_id: int) -> HttpResponse:
    """Change the plan (a new version, with a required reason), or start it from a template."""
    patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
    plan = plan_current(patient)
    ladder = plans.ladder_of(plan) if plan else LADDER_TEMPLATES["ace-ccb-thiazide"]
    chosen = request.POST.get("template") if request.method == "POST" else None
    shown = LADDER_TEMPLATES.get(chosen or "", ladder)
    rungs = [shown.describe(i) for i in range(len(shown.rungs))]
    if request.method == "POST":
        form = PlanForm(request.POST, rungs=rungs)
        if form.is_valid():
            settings = form.plan_settings()
            try:
                if form.cleaned_data["template"] or plan is None:
                    services.plan_create(actor=request.user, patient=patient, reason=form.cleaned_data["reason"],
                                         template=form.cleaned_data["template"] or "ace-ccb-thiazide", **settings)
                else:
                    services.plan_change(actor=request.user, patient=patient, reason=form.cleaned_data["reason"], **settings)
            except ApplicationError as exc:
                form.add_error(None, exc.message)
                for field, problems in exc.extra.get("fields", {}).items():
                    form.add_error(field if field in form.fields else None, "; ".join(problems))
            else:
                messages.success(request, "The plan is saved as a new version.")
                return redirect("web:patient", patient_id=patient.pk)
    else:
        # The reason is for this change, never the last version's.
        initial = {name: getattr(plan, name) for name in PlanForm.base_fields
                   if plan and hasattr(plan, name) and name not in ("reason", "template")}
        if plan:
            initial["min_usable_window_share"] = round(plan.min_usable_window_share * 100)
            initial["exclusions"] = [e["kind"] for e in plan.exclusions]
            # str(): a plan stored before its fields were checked strictly may hold other shapes.
            initial["exclusion_detail"] = ", ".join(str(e.get("detail", "")) for e in plan.exclusions if e.get("detail"))
        else:
            initial.update(_plan_defaults())
        form = PlanForm(initial=initial, rungs=rungs)
    return render(request, "web/clinic/plan.html", {"patient": patient, "plan": plan, "form": form, "rungs": rungs,
                                                    "warnings": _plan_warnings(form, plan)})


def _plan_warnings(form: PlanForm, plan) -> list[str]:
    """What the bounds shown mean with the active model (those posted, else the saved plan's)."""
    if form.is_bound and form.is_valid():
        draft = PlanVersion(**{**_plan_defaults(), **form.plan_settings()})
    elif plan is not None:
        draft = plan
    else:
        draft = PlanVersion(**_plan_defaults() | {"min_usable_window_share": 0.7})
    try:
        return plan_warnings(plans.rules_of(draft), plans.bounds_of(draft), active_model_for_advice())
    except (ValueError, TypeError):
        return []  # the form names what is wrong with the values


def _plan_defaults() -> dict:
    values = {f.name: f.get_default() for f in PlanVersion._meta.get_fields()
              if f.name in PlanForm.base_fields and hasattr(f, "get_default")}
    values["min_usable_window_share"] = round(values["min_usable_window_share"] * 100)
    values["exclusions"] = []
    return values


@require_GET
@clinician_required
def patient_detail(request: SignedInRequest, patient_id: int) -> HttpResponse:
    patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
    plan = plan_current(patient)
    now = timezone.now()
    ladder = plans.ladder_of(plan) if plan else None
    # A dose change is a plan version that moved the rung (a new target or bound is not one).
    versions = list(patient.plan_versions.order_by("version").only("version", "current_rung", "created_at"))
    rung_changes = [{"t": round(v.created_at.timestamp()), "label": f"v{v.version}: rung {v.current_rung + 1}"}
                    for before, v in zip(versions, versions[1:]) if v.current_rung != before.current_rung]
    context = {
        "patient": patient,
        "plan": plan,
        "home": home_evidence_of(patient, plan, now=now) if plan else None,
        "cuff_readings": patient.cuff_readings.select_related("cuff").order_by("-measured_at")[:20],
        "rungs": [(i, ladder.describe(i)) for i in range(len(ladder.rungs))] if ladder else [],
        "trend": {**bp_trend(patient, since=now - dt.timedelta(days=TREND_DAYS)), "rung_changes": rung_changes,
                  "target": [plan.target_sbp_mmhg, plan.target_dbp_mmhg] if plan else None},
        "suggestions": patient.suggestions.select_related("plan_version", "decided_by").order_by("-created_at")[:50],
        "devices": patient.devices.order_by("-registered_at"),
        "calibrations": Calibration.objects.filter(patient=patient).select_related("cuff_reading").order_by("-calibrated_at")[:20],
        "reports": patient.symptom_reports.order_by("-reported_at")[:50],
        "alerts": patient.alerts.filter(closed_at__isnull=True),
        "evaluation": getattr(patient, "latest_evaluation", None),
        "audit": AuditEvent.objects.filter(patient=patient).order_by("-at")[:50],
        "pending": patient.suggestions.filter(status=SuggestionStatus.PENDING_REVIEW).first(),
    }
    return render(request, "web/clinic/patient.html", context)


@require_GET
@clinician_required
def patient_summary(request: SignedInRequest, patient_id: int) -> HttpResponse:
    """The printable summary for a visit (the browser prints it or saves it as PDF)."""
    patient = get_object_or_404(patients_visible_to(request.user), pk=patient_id)
    return render(request, "web/summary.html", visit_summary(patient, now=timezone.now(), for_patient=False))


AUTONOMY_DAYS = 90


@require_GET
@clinician_required
def autonomy(request: SignedInRequest) -> HttpResponse:
    """What the autonomy did, per care team: every automatic release of the last 90 days with its
    evidence and the bounds that allowed it, and the share of steps released automatically."""
    since = timezone.now() - dt.timedelta(days=AUTONOMY_DAYS)
    visible = patients_visible_to(request.user)
    clinician = getattr(request.user, "clinician", None)
    teams = (CareTeam.objects.filter(clinicians=clinician) if clinician else CareTeam.objects.all()).order_by("name")
    sections = []
    for team in teams:
        patients = visible.filter(care_teams=team)
        sections.append({"team": team, "counts": autonomy_counts(patients, since=since),
                         "releases": automatic_releases(patients, since=since)})
    return render(request, "web/clinic/autonomy.html", {"sections": sections, "days": AUTONOMY_DAYS})
