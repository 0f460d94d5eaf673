"""The visit summary: one page a clinician prints for a visit, or a patient shows their doctor.

Read-only (a selector): the period's home cuff readings (measurements) and the wearable's
estimates (labelled as estimates; under the carry-forward baseline, as repeats of a cuff reading),
the regimen and its changes, adherence, reports, and — for the care team only — open alerts and
who decided what and why.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Avg, Count, Max, Min

from monitoring.selectors import bp_mean_since
from patients.models import Patient
from therapy import plans
from therapy.categories import CATEGORY_ADVICE, bp_category
from therapy.selectors import adherence_of, plan_current, released_changes

SUMMARY_DAYS = 30


def visit_summary(patient: Patient, *, now: dt.datetime, for_patient: bool, days: int = SUMMARY_DAYS) -> dict[str, Any]:
    """What the summary page shows of `patient` over the last `days` days (pressures in mmHg)."""
    since = now - dt.timedelta(days=days)
    plan = plan_current(patient)
    cuff = patient.cuff_readings.filter(measured_at__gte=since, measured_at__lte=now)
    cuff_figures = cuff.aggregate(n=Count("id"), sbp=Avg("sbp_mmhg"), dbp=Avg("dbp_mmhg"), sbp_min=Min("sbp_mmhg"),
                                  sbp_max=Max("sbp_mmhg"), dbp_min=Min("dbp_mmhg"), dbp_max=Max("dbp_mmhg"))
    category = bp_category(cuff_figures["sbp"], cuff_figures["dbp"])
    summary: dict[str, Any] = {
        "patient": patient,
        "for_patient": for_patient,
        "now": now,
        "since": since,
        "days": days,
        "plan": plan,
        "regimen": plans.ladder_of(plan).describe(plan.current_rung) if plan else None,
        "cuff": cuff_figures,
        "cuff_category": category,
        "cuff_category_words": CATEGORY_ADVICE.get(category, "") if category else "",
        "cuff_readings": list(cuff.select_related("cuff").order_by("-measured_at")[:60]),
        "wearable": bp_mean_since(patient, since=since),
        "changes": list(released_changes(patient.suggestions.all()).select_related("decided_by")[:10]),
        "adherence": adherence_of(patient, plan, now=now) if plan else None,
        "reports": list(patient.symptom_reports.filter(reported_at__gte=since).order_by("-reported_at")[:30]),
    }
    if not for_patient:
        summary["alerts"] = list(patient.alerts.filter(closed_at__isnull=True))
        summary["decisions"] = list(patient.suggestions.filter(decided_at__gte=since).select_related("decided_by")
                                    .order_by("-decided_at")[:20])
    return summary
