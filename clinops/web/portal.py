"""The patient portal: their BP against their target in plain words, their regimen today, changes
to acknowledge, dose logging (one tap per dose), cuff readings, symptom reports, devices.
Nothing clinical-internal (routing reasons, model details) is shown here."""
from __future__ import annotations

import datetime as dt

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from clinops.base.errors import ApplicationError
from clinops.web.access import SignedInRequest, patient_required
from monitoring.bp import cuff_calibration
from monitoring.models import Arm, CuffSource, Position
from monitoring.selectors import bp_mean_since, bp_trend
from patients.models import DeviceKind
from therapy import plans, services
from therapy.adherence import adherence_in_patient_words, scheduled_doses
from therapy.domain import RED_FLAG_SYMPTOMS, Symptom
from therapy.escalation import CONFIRMATION_WINDOW, CRISIS_DBP_MMHG, CRISIS_SBP_MMHG
from therapy.evidence import CuffSeries
from therapy.explain import change_explained
from therapy.models import DEFAULT_SEEK_CARE_INSTRUCTIONS, DoseLog, EscalationAction, Suggestion, SuggestionStatus
from therapy.selectors import adherence_of, home_evidence_of, plan_current, regimen_started_at, released_changes
from therapy.summary import visit_summary


def _in_words(mean: dict, plan, series: CuffSeries | None) -> list[str]:
    """The week in words, honest about what each number is: the home cuff readings (measurements)
    first, then the wearable's average (an estimate; or, under the carry-forward baseline, a repeat
    of the last cuff reading, which measures nothing new)."""
    target = f"{plan.target_sbp_mmhg:g}/{plan.target_dbp_mmhg:g}" if plan else ""

    def against_target(sbp: float, dbp: float) -> str:
        if plan is None:
            return ""
        above = sbp >= plan.target_sbp_mmhg or dbp >= plan.target_dbp_mmhg
        return f", {'above' if above else 'below'} your target of {target}"

    words = []
    if series is not None and series.n_readings:
        cuff_sbp, cuff_dbp = series.mean_sbp_mmhg, series.mean_dbp_mmhg
        assert cuff_sbp is not None and cuff_dbp is not None  # a series' means are None only without readings
        words.append(f"Your home cuff readings this week: average {cuff_sbp:.0f}/{cuff_dbp:.0f} "
                     f"from {series.n_readings} readings on {series.n_days} days"
                     f"{against_target(cuff_sbp, cuff_dbp)}.")
        if not series.complete:
            words.append(f"Your weekly home series is not complete yet: {series.missing[0].split(': ', 1)[-1]}.")
    elif plan is not None:
        words.append("No home cuff readings this week: measure morning and evening, two readings a minute apart.")
    if not mean["n"]:
        words.append("No readings from your wearable this week yet.")
    elif mean["n_repeating_cuff"] == mean["n"]:
        words.append("Your wearable's numbers this week repeat your last cuff reading: they are not new measurements.")
    else:
        sbp, dbp = round(mean["sbp"]), round(mean["dbp"])
        words.append(f"Your wearable estimates your average this week at {sbp}/{dbp}{against_target(sbp, dbp)} "
                     "(an estimate, not a measurement).")
    return words


# The portal lets the patient answer for today and the days just before it (a missed reminder):
# the service accepts up to DOSE_LOG_MAX_AGE_DAYS, the page offers what memory holds.
PORTAL_DOSE_DAYS = 3


def _doses_on(patient, plan, day: dt.date) -> list[dict]:
    if plan is None:
        return []
    logged = {(d.drug, d.slot): d.taken for d in DoseLog.objects.filter(patient=patient, day=day)}
    return [{"dose": d, "taken": logged.get((d.drug, d.slot))}
            for d in scheduled_doses(plans.ladder_of(plan).rungs[plan.current_rung], day)]


def _dose_days(patient, plan, today: dt.date) -> list[dict]:
    """Today and the days before it on the current regimen, newest first, each with its doses."""
    if plan is None:
        return []
    started = regimen_started_at(patient)
    first = max(today - dt.timedelta(days=PORTAL_DOSE_DAYS - 1),
                timezone.localdate(started) if started else today)
    names = {0: "Today", 1: "Yesterday"}
    return [{"day": day, "name": names.get((today - day).days, f"{day:%A} {day.day} {day:%b}"),
             "rows": _doses_on(patient, plan, day)}
            for day in (today - dt.timedelta(days=n) for n in range((today - first).days + 1))]


def _adherence_words(patient, plan, today_rows: list[dict], *, now: dt.datetime) -> str:
    return adherence_in_patient_words(
        adherence_of(patient, plan, now=now), today_due=len(today_rows),
        today_taken=sum(1 for r in today_rows if r["taken"] is True),
        today_logged=sum(1 for r in today_rows if r["taken"] is not None))


def _explained(changes) -> list[Suggestion]:
    """Each released change with why it was made, in the patient's words (`explained`)."""
    out = []
    for change in changes.select_related("plan_version"):
        plan = change.plan_version
        change.explained = change_explained(
            kind=change.kind, status=change.status, auto_release=change.auto_release, evidence=change.evidence,
            target_sbp_mmhg=plan.target_sbp_mmhg, target_dbp_mmhg=plan.target_dbp_mmhg,
            reported=", ".join(e["reason"].split(": ", 1)[-1] for e in change.escalations
                               if e.get("kind") == "hypotension symptom"))
        out.append(change)
    return out


# What the patient reads when their care team acted on an escalation (the clinician's note is
# for the care team and stays there).
ACTED_IN_WORDS = {"contacted": "Your care team has been in touch with you about",
                  "advised": "Your care team gave you advice about",
                  "resolved": "Your care team has finished reviewing"}
ACTED_SHOWN_DAYS = 14
ESCALATION_IN_WORDS = {"crisis": "your very high reading", "confirmed low SBP": "your low reading",
                       "red-flag symptom": "the symptom you reported", "hypotension symptom": "the symptom you reported",
                       "side effect": "the side effect you reported"}


def _care_team_acted(patient, *, now: dt.datetime) -> list[dict]:
    """The care team's recent actions on the patient's reports and readings, newest first."""
    actions = (EscalationAction.objects.filter(suggestion__patient=patient, at__gte=now - dt.timedelta(days=ACTED_SHOWN_DAYS))
               .select_related("suggestion").order_by("-at")[:5])
    return [{"at": a.at, "words": ACTED_IN_WORDS[a.step],
             "what": " and ".join(dict.fromkeys(ESCALATION_IN_WORDS[e["kind"]] for e in a.suggestion.escalations or []
                                                if e.get("kind") in ESCALATION_IN_WORDS)) or "your readings"}
            for a in actions]


@require_GET
@patient_required
def home(request: SignedInRequest) -> HttpResponse:
    patient = request.user.patient
    plan = plan_current(patient)
    now = timezone.now()
    today = timezone.localdate(now)
    context = {
        "patient": patient,
        "plan": plan,
        "regimen": plans.ladder_of(plan).describe(plan.current_rung) if plan else None,
        "bp_words": _in_words(bp_mean_since(patient, since=now - dt.timedelta(days=7)), plan,
                              home_evidence_of(patient, plan, now=now).series if plan else None),
        "trend": {**bp_trend(patient, since=now - dt.timedelta(days=30)),
                  "target": [plan.target_sbp_mmhg, plan.target_dbp_mmhg] if plan else None, "rung_changes": []},
        "to_acknowledge": _explained(released_changes(patient.suggestions.all())
                                     .exclude(status=SuggestionStatus.ACKNOWLEDGED).order_by("-updated_at")),
        "seek_care": patient.alerts.filter(closed_at__isnull=True, seek_care=True).first(),
        "care_team_acted": _care_team_acted(patient, now=now),
        "last_cuff": patient.cuff_readings.order_by("-measured_at").first(),
        "today": today,
        "dose_days": (dose_days := _dose_days(patient, plan, today)),
        "adherence": _adherence_words(patient, plan, dose_days[0]["rows"], now=now) if dose_days else "",
    }
    context["reminders"] = _reminders(patient, plan, context, now=now)
    return render(request, "web/portal/home.html", context)


def _reminders(patient, plan, page: dict, *, now: dt.datetime) -> list[str]:
    """What the patient still has to do today, in their words: log doses, measure with the cuff
    this morning or evening (the weekly home series decides changes), read a released change."""
    if plan is None:
        return []
    out = []
    today_rows = page["dose_days"][0]["rows"] if page["dose_days"] else []
    left = sum(1 for r in today_rows if r["taken"] is None)
    if left:
        out.append(f"Log today's dose{'s' if left > 1 else ''}: {left} still to tap below.")
    local = timezone.localtime(now)
    morning = local.hour < 12
    start = local.replace(hour=0 if morning else 12, minute=0, second=0, microsecond=0)
    if not patient.cuff_readings.filter(measured_at__gte=start, measured_at__lte=now).exists():
        out.append(f"Measure with your cuff this {'morning' if morning else 'evening'}: two readings a minute apart, "
                   "then enter both.")
    if page["to_acknowledge"]:
        out.append("Read the change to your medicine below and tap \"I have read this\".")
    return out


@require_GET
@patient_required
def summary(request: SignedInRequest) -> HttpResponse:
    """A page to print or show the patient's doctor: the last 30 days of home cuff readings and
    wearable estimates (each labelled for what it is), the medicines and their changes, and the
    reports. Nothing of the care team's internal reasoning."""
    return render(request, "web/summary.html", visit_summary(request.user.patient, now=timezone.now(), for_patient=True))


@require_POST
@patient_required
def dose_log(request: SignedInRequest) -> HttpResponse:
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
    row = next((r for r in _doses_on(patient, plan, day) if r["dose"].drug == request.POST.get("drug")
                and r["dose"].slot == slot), None)
    now = timezone.now()
    # The words under the doses follow the answer (htmx out-of-band swap).
    adherence = _adherence_words(patient, plan, _doses_on(patient, plan, timezone.localdate(now)), now=now) if plan else ""
    return render(request, "web/portal/_dose.html", {"row": row, "error": error, "adherence_oob": adherence})


@require_POST
@patient_required
def acknowledge(request: SignedInRequest, suggestion_id: int) -> HttpResponse:
    suggestion = get_object_or_404(Suggestion.objects.filter(patient=request.user.patient), pk=suggestion_id)
    try:
        services.suggestion_acknowledge(actor=request.user, suggestion_id=suggestion.pk)
        messages.success(request, "Thank you: your care team can see you have read this change.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("web:portal")


@patient_required
def cuff_reading(request: SignedInRequest) -> HttpResponse:
    patient = request.user.patient
    cuffs = list(patient.devices.filter(kind=DeviceKind.CUFF, revoked_at__isnull=True).order_by("-registered_at"))
    errors: dict[str, str] = {}
    if request.method == "POST":
        values: dict = {}
        for name, low, high, required in (("sbp_mmhg", 60, 260, True), ("dbp_mmhg", 30, 160, True),
                                          ("pulse_bpm", 25, 250, False)):
            raw = request.POST.get(name, "").strip()
            if not raw and not required:
                continue
            try:
                values[name] = float(raw)
                if not low <= values[name] <= high:
                    errors[name] = f"Enter a number between {low} and {high}."
            except ValueError:
                errors[name] = "Enter the number shown on your cuff."
        if not errors and values["dbp_mmhg"] >= values["sbp_mmhg"]:
            errors["dbp_mmhg"] = "The lower number (diastolic) must be below the upper number (systolic)."
        arm, position = request.POST.get("arm", ""), request.POST.get("position", "")
        if arm not in {"", *Arm.values} or position not in {"", *Position.values}:
            errors["form"] = "Choose the arm and position from the lists."
        chosen = request.POST.get("cuff", "")
        cuff = next((c for c in cuffs if str(c.pk) == chosen), None)
        if chosen and cuff is None:  # not one of the patient's cuffs: never silently "another cuff"
            errors["cuff"] = "Choose your cuff from the list."
        if not errors:
            try:
                cuff_calibration.cuff_reading_record(actor=request.user, patient=patient, source=CuffSource.PATIENT,
                                                        measured_at=timezone.now(), arm=arm, position=position,
                                                        cuff=cuff, **values)
            except ApplicationError as exc:
                errors["form"] = exc.message
            else:
                if values["sbp_mmhg"] >= CRISIS_SBP_MMHG or values["dbp_mmhg"] >= CRISIS_DBP_MMHG:
                    confirmed = _crisis_confirmed_by_cuff(patient)
                    if confirmed:
                        plan = plan_current(patient)
                        return render(request, "web/portal/seek_care.html", {
                            "report": None, "readings": confirmed,
                            "advice": plan.seek_care_instructions if plan else DEFAULT_SEEK_CARE_INSTRUCTIONS})
                    messages.error(request, "This reading is very high. Sit quietly, wait one minute and measure "
                                            "again, then enter the second reading. If it is still this high, or you "
                                            "have chest pain, shortness of breath, weakness or trouble speaking, "
                                            "seek care now.")
                    return redirect("web:portal-cuff")
                messages.success(request, "Reading saved. " + _series_progress(patient))
                return redirect("web:portal")
    readings = patient.cuff_readings.select_related("cuff").order_by("-measured_at")[:10]
    return render(request, "web/portal/cuff.html", {"errors": errors, "readings": readings, "post": request.POST,
                                                    "cuffs": cuffs, "arms": Arm.choices, "positions": Position.choices})


def _crisis_confirmed_by_cuff(patient) -> str:
    """The patient's crisis-level cuff readings of the confirmation window in words ("192/124 and
    188/121"), when there are two; else "" (the first one asks for a repeat)."""
    since = timezone.now() - CONFIRMATION_WINDOW
    crisis = [r for r in patient.cuff_readings.filter(measured_at__gte=since).order_by("measured_at")
              if r.sbp_mmhg >= CRISIS_SBP_MMHG or r.dbp_mmhg >= CRISIS_DBP_MMHG]
    return " and ".join(f"{r.sbp_mmhg:.0f}/{r.dbp_mmhg:.0f}" for r in crisis[-2:]) if len(crisis) >= 2 else ""


def _series_progress(patient) -> str:
    """Where the patient's weekly home series stands, in words."""
    plan = plan_current(patient)
    if plan is None:
        return ""
    series = home_evidence_of(patient, plan, now=timezone.now()).series
    if series.complete:
        return f"Your home series this week is complete ({series.n_readings} readings on {series.n_days} days)."
    return f"Your home series this week: {series.n_readings} of {plan.series_min_readings} readings on " \
           f"{series.n_days} of {plan.series_min_days} days."


@patient_required
def symptoms(request: SignedInRequest) -> HttpResponse:
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


@require_GET
@patient_required
def devices(request: SignedInRequest) -> HttpResponse:
    return render(request, "web/portal/devices.html", {"devices": request.user.patient.devices.order_by("-registered_at")})


@require_GET
@patient_required
def history(request: SignedInRequest) -> HttpResponse:
    patient = request.user.patient
    changes = _explained(released_changes(patient.suggestions.all()))
    return render(request, "web/portal/history.html", {"changes": changes, "plan": plan_current(patient)})
