"""The model-health page for clinicians and operators: production accuracy, drift, subgroups,
pipeline health, clinician-AI agreement and the population reports, all read from stored reports
(computed by beat), with the open operator alerts and any suspension of automatic releases."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from clinops.base.errors import ApplicationError
from clinops.web.access import SignedInRequest, clinician_required
from monitoring.bp import registry
from monitoring.health.model_health import autonomy_suspension_lift
from monitoring.models import AutonomySuspension, MonitoringReportKind, OperatorAlert
from monitoring.selectors import latest_reports
from patients.models import Role
from patients.selectors import patients_visible_to
from patients.services import is_clinical_lead
from therapy.models import Suggestion


def _weekly_mae_chart(accuracy_reports) -> dict:
    """Weekly SBP/DBP MAE per model version, as chart columns (weeks as labels)."""
    weeks = sorted({w for r in accuracy_reports for w in r.payload.get("weeks", {})})
    series = []
    for report in accuracy_reports:
        by_week = report.payload.get("weeks", {})
        for channel in ("sbp", "dbp"):
            series.append({"label": f"{report.scope.removeprefix('model:')} {channel.upper()} MAE",
                           "values": [by_week.get(w, {}).get(channel, {}).get("mae_mmhg") for w in weeks]})
    return {"weeks": weeks, "series": series}


def pipeline_seen_by(payload: dict[str, Any], patient_ids: set[int] | None) -> dict[str, Any]:
    """The pipeline report as one viewer may see it: the whole-pipeline figures, and only the
    devices of `patient_ids` (None: every device, for an administrator). The stored report lists
    every team's device serials and patient ids."""
    if patient_ids is None:
        return payload
    mine = [d for d in payload.get("by_device", []) if d.get("patient_id") in patient_ids]
    silent = [d for d in payload.get("silent_devices", []) if d.get("patient_id") in patient_ids]
    return {**payload, "by_device": mine, "silent_devices": silent}


def agreement_seen_by(payload: dict[str, Any], suggestion_ids: set[int] | None) -> dict[str, Any]:
    """The agreement report with only the overrides (and their reasons) of the viewer's patients."""
    if suggestion_ids is None:
        return payload
    return {**payload, "recent_overrides": [o for o in payload.get("recent_overrides", [])
                                            if o.get("suggestion_id") in suggestion_ids]}


def _seen_by(reports: list, view: Callable[[dict[str, Any]], dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"scope": r.scope, "period_start": r.period_start, "period_end": r.period_end, "computed_at": r.computed_at,
             "payload": view(r.payload)} for r in reports]


@require_GET
@clinician_required
def model_health(request: SignedInRequest) -> HttpResponse:
    accuracy = latest_reports(MonitoringReportKind.ACCURACY)
    population = latest_reports(MonitoringReportKind.POPULATION)
    alerts = OperatorAlert.objects.filter(resolved_at__isnull=True).order_by("severity", "-raised_at")
    patient_ids = suggestion_ids = None
    if request.user.role == Role.CLINICIAN:
        teams = {f"team:{pk}" for pk in request.user.clinician.care_teams.values_list("pk", flat=True)}
        population = [r for r in population if r.scope in teams]
        patient_ids = set(patients_visible_to(request.user).values_list("pk", flat=True))
        suggestion_ids = set(Suggestion.objects.filter(patient_id__in=patient_ids).values_list("pk", flat=True))
        # An alert about one patient (a failing evaluation) is for that patient's care team.
        alerts = alerts.exclude(Q(scope__startswith="patient:")
                                & ~Q(scope__in=[f"patient:{pk}" for pk in patient_ids]))
    active = registry.model_active()
    context = {
        "active_model": active,
        "active_is_baseline": active is not None and registry.is_baseline(active),
        "alerts": alerts[:100],
        "suspensions": AutonomySuspension.objects.filter(lifted_at__isnull=True).select_related("model_version"),
        "lifted": AutonomySuspension.objects.filter(lifted_at__isnull=False).select_related("model_version", "lifted_by")
                  .order_by("-lifted_at")[:10],
        "may_lift": request.user.is_clinops_admin or is_clinical_lead(request.user),
        "accuracy": accuracy,
        "chart": _weekly_mae_chart(accuracy),
        "subgroups": latest_reports(MonitoringReportKind.SUBGROUPS),
        "drift": latest_reports(MonitoringReportKind.DRIFT),
        "pipeline": _seen_by(latest_reports(MonitoringReportKind.PIPELINE), lambda p: pipeline_seen_by(p, patient_ids)),
        "agreement": _seen_by(latest_reports(MonitoringReportKind.AGREEMENT), lambda p: agreement_seen_by(p, suggestion_ids)),
        "population": population,
    }
    return render(request, "web/clinic/model_health.html", context)


@require_POST
@clinician_required
def suspension_lift(request: SignedInRequest, suspension_id: int) -> HttpResponse:
    suspension = get_object_or_404(AutonomySuspension, pk=suspension_id)
    try:
        autonomy_suspension_lift(actor=request.user, suspension_id=suspension.pk, reason=request.POST.get("reason", ""))
        messages.success(request, f"Automatic releases may resume for {suspension.model_version.version}.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("web:model-health")
