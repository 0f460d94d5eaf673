"""Reads for people and devices, scoped to what the asking user may see (same rules as permissions)."""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from patients.models import Device, Patient, Role


def patients_visible_to(user: Any) -> QuerySet[Patient]:
    """Patients this user may see: all for an admin, their care teams' for a clinician, themself for a patient."""
    if not getattr(user, "is_authenticated", False):
        return Patient.objects.none()
    if user.is_superuser or getattr(user, "role", None) == Role.ADMIN:
        return Patient.objects.all()
    role = getattr(user, "role", None)
    if role == Role.CLINICIAN and hasattr(user, "clinician"):
        return Patient.objects.filter(care_teams__clinicians=user.clinician).distinct()
    if role == Role.PATIENT:
        return Patient.objects.filter(user=user)
    return Patient.objects.none()


def devices_visible_to(user: Any) -> QuerySet[Device]:
    return Device.objects.filter(patient__in=patients_visible_to(user)).select_related("patient")
