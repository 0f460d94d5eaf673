"""The patient portal: their BP against their target in plain words, their regimen today, changes
to acknowledge, dose logging (one tap per dose), cuff readings, symptom reports, devices.
Nothing clinical-internal (routing reasons, model details) is shown here."""
from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from clinops.errors import ApplicationError
from clinops.web.access import patient_required
from monitoring import services as monitoring_services
from monitoring.models import CuffSource
from monitoring.selectors import bp_mean_since, bp_trend
from therapy import plans, services
from therapy.adherence import scheduled_doses
from therapy.domain import RED_FLAG_SYMPTOMS, Symptom
from therapy.models import DEFAULT_SEEK_CARE_INSTRUCTIONS, DoseLog, Suggestion, SuggestionStatus
from therapy.selectors import adherence_of, plan_current, released_changes



def _in_words(mean: dict, plan) -> str:
    """E.g. "Your average this week: 138/86, above your target of 135/85." """
    if not mean["n"]:
        return "No readings from your wearable this week yet."
    sbp, dbp = round(mean["sbp"]), round(mean["dbp"])
    if plan is None:
        return f"Your average this week: {sbp}/{dbp}."
    target = f"{plan.target_sbp_mmhg:g}/{plan.target_dbp_mmhg:g}"
    above = mean["sbp"] >= plan.target_sbp_mmhg or mean["dbp"] >= plan.target_dbp_mmhg
    return f"Your average this week: {sbp}/{dbp}, {'above' if above else 'below'} your target of {target}."


def _doses_today(patient, plan, day: dt.date) -> list[dict]:
    if plan is None:
        return []
    logged = {(d.drug, d.slot): d.taken for d in DoseLog.objects.filter(patient=patient, day=day)}
    return [{"dose": d, "taken": logged.get((d.drug, d.slot))}
            for d in scheduled_doses(plans.ladder_of(plan).rungs[plan.current_rung], day)]


@patient_required
def home(request: HttpRequest) -> HttpResponse:
    patient = request.user.patient
    plan = plan_current(patient)
    now = timezone.now()
    today = timezone.localdate(now)
    context = {
        "patient": patient,
        "plan": plan,
        "regimen": plans.ladder_of(plan).describe(plan.current_rung) if plan else None,
        "bp_words": _in_words(bp_mean_since(patient, since=now - dt.timedelta(days=7)), plan),
        "trend": {**bp_trend(patient, since=now - dt.timedelta(days=30)),
                  "target": [plan.target_sbp_mmhg, plan.target_dbp_mmhg] if plan else None, "rung_changes": []},
        "to_acknowledge": released_changes(patient.suggestions.all()).exclude(status=SuggestionStatus.ACKNOWLEDGED)
                                                                        .order_by("-updated_at"),
        "seek_care": patient.alerts.filter(closed_at__isnull=True, seek_care=True).first(),
        "today": today,
        "doses": _doses_today(patient, plan, today),
        "adherence": adherence_of(patient, plan, now=now) if plan else None,
    }
    return render(request, "web/portal/home.html", context)


@require_POST
@patient_required
def dose_log(request: HttpRequest) -> HttpResponse:
    """One tap: this dose taken (or missed). htmx swaps the dose's row."""
    patient = request.user.patient
    error = None
    try:
        day = dt.date.fromisoformat(request.POST.get("day", ""))
        slot = int(request.POST.get("slot", ""))
    except ValueError:
        day, slot, error = timezone.localdate(), 0, "That dose could not be read; please try again."
    if error is None:
        try:
            services.dose_log_record(actor=request.user, patient=patient, day=day, drug=request.POST.get("drug", ""),
                                     slot=slot, taken=request.POST.get("taken") != "no")
        except ApplicationError as exc:
            error = exc.message
    if not request.htmx:
        if error:
            messages.error(request, error)
        return redirect("web:portal")
    plan = plan_current(patient)
    row = next((r for r in _doses_today(patient, plan, day) if r["dose"].drug == request.POST.get("drug")
                and r["dose"].slot == slot), None)
    return render(request, "web/portal/_dose.html", {"row": row, "error": error, "today": day})


@require_POST
@patient_required
def acknowledge(request: HttpRequest, suggestion_id: int) -> HttpResponse:
    suggestion = get_object_or_404(Suggestion.objects.filter(patient=request.user.patient), pk=suggestion_id)
    try:
        services.suggestion_acknowledge(actor=request.user, suggestion_id=suggestion.pk)
        messages.success(request, "Thank you: your care team can see you have read this change.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("web:portal")


@patient_required
def cuff_reading(request: HttpRequest) -> HttpResponse:
    patient = request.user.patient
    errors: dict[str, str] = {}
    if request.method == "POST":
        values = {}
        for name, low, high in (("sbp_mmhg", 60, 260), ("dbp_mmhg", 30, 160)):
            try:
                values[name] = float(request.POST.get(name, ""))
                if not low <= values[name] <= high:
                    errors[name] = f"Enter a number between {low} and {high}."
            except ValueError:
                errors[name] = "Enter the number shown on your cuff."
        if not errors and values["dbp_mmhg"] >= values["sbp_mmhg"]:
            errors["dbp_mmhg"] = "The lower number (diastolic) must be below the upper number (systolic)."
        if not errors:
            try:
                monitoring_services.cuff_reading_record(actor=request.user, patient=patient, source=CuffSource.PATIENT,
                                                        measured_at=timezone.now(), **values)
            except ApplicationError as exc:
                errors["form"] = exc.message
            else:
                messages.success(request, "Reading saved. It helps your wearable's estimates stay accurate.")
                return redirect("web:portal")
    readings = patient.cuff_readings.order_by("-measured_at")[:10]
    return render(request, "web/portal/cuff.html", {"errors": errors, "readings": readings, "post": request.POST})


@patient_required
def symptoms(request: HttpRequest) -> HttpResponse:
    patient = request.user.patient
    errors: dict = {}
    if request.method == "POST":
        kind = request.POST.get("kind", "symptom")
        try:
            report = services.symptom_report_record(
                actor=request.user, patient=patient, kind=kind, symptom=request.POST.get("symptom", ""),
                drug=request.POST.get("drug", ""), detail=request.POST.get("detail", ""))
        except ApplicationError as exc:
            errors = {"form": exc.message, **{k: "; ".join(v) for k, v in exc.extra.get("fields", {}).items()}}
        else:
            if report.symptom in {s.value for s in RED_FLAG_SYMPTOMS}:
                plan = plan_current(patient)
                return render(request, "web/portal/seek_care.html", {
                    "report": report, "advice": plan.seek_care_instructions if plan else DEFAULT_SEEK_CARE_INSTRUCTIONS})
            messages.success(request, "Thank you. Your care team will see this report.")
            return redirect("web:portal-symptoms")
    plan = plan_current(patient)
    drugs = [d.drug for d in plans.ladder_of(plan).rungs[plan.current_rung].doses] if plan else []
    return render(request, "web/portal/symptoms.html", {
        "errors": errors, "symptoms": [s.value for s in Symptom], "red_flags": sorted(s.value for s in RED_FLAG_SYMPTOMS),
        "drugs": drugs, "reports": patient.symptom_reports.order_by("-reported_at")[:20], "post": request.POST})


@patient_required
def devices(request: HttpRequest) -> HttpResponse:
    return render(request, "web/portal/devices.html", {"devices": request.user.patient.devices.order_by("-registered_at")})


@patient_required
def history(request: HttpRequest) -> HttpResponse:
    patient = request.user.patient
    changes = released_changes(patient.suggestions.all())
    return render(request, "web/portal/history.html", {"changes": changes, "plan": plan_current(patient)})
