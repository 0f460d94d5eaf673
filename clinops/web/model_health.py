"""The model-health page for clinicians and operators: production accuracy, drift, subgroups,
pipeline health, clinician-AI agreement and the population reports, all read from stored reports
(computed by beat), with the open operator alerts and any suspension of automatic releases."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from clinops.errors import ApplicationError
from clinops.web.access import clinician_required
from monitoring.model_health import autonomy_suspension_lift
from monitoring.models import AutonomySuspension, OperatorAlert, ReportKind
from monitoring.selectors import latest_reports
from patients.models import Role
from patients.services import is_clinical_lead


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


@require_GET
@clinician_required
def model_health(request: HttpRequest) -> HttpResponse:
    accuracy = latest_reports(ReportKind.ACCURACY)
    population = latest_reports(ReportKind.POPULATION)
    if request.user.role == Role.CLINICIAN:
        teams = {f"team:{pk}" for pk in request.user.clinician.care_teams.values_list("pk", flat=True)}
        population = [r for r in population if r.scope in teams]
    context = {
        "alerts": OperatorAlert.objects.filter(resolved_at__isnull=True).order_by("severity", "-raised_at")[:100],
        "suspensions": AutonomySuspension.objects.filter(lifted_at__isnull=True).select_related("model_version"),
        "lifted": AutonomySuspension.objects.filter(lifted_at__isnull=False).select_related("model_version", "lifted_by")
                  .order_by("-lifted_at")[:10],
        "may_lift": request.user.is_clinops_admin or is_clinical_lead(request.user),
        "accuracy": accuracy,
        "chart": _weekly_mae_chart(accuracy),
        "subgroups": latest_reports(ReportKind.SUBGROUPS),
        "drift": latest_reports(ReportKind.DRIFT),
        "pipeline": latest_reports(ReportKind.PIPELINE),
        "agreement": latest_reports(ReportKind.AGREEMENT),
        "population": population,
    }
    return render(request, "web/clinic/model_health.html", context)


@require_POST
@clinician_required
def suspension_lift(request: HttpRequest, suspension_id: int) -> HttpResponse:
    suspension = get_object_or_404(AutonomySuspension, pk=suspension_id)
    try:
        autonomy_suspension_lift(actor=request.user, suspension_id=suspension.pk, reason=request.POST.get("reason", ""))
        messages.success(request, f"Automatic releases may resume for {suspension.model_version.version}.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("web:model-health")
