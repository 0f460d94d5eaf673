"""Reads for therapy plans."""
from __future__ import annotations

from patients.models import Patient
from therapy.models import PlanVersion


def plan_current(patient: Patient) -> PlanVersion | None:
    """The patient's latest plan version (None before a clinician has set one)."""
    return PlanVersion.objects.filter(patient=patient).order_by("-version").first()
