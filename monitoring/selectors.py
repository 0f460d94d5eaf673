"""Reads of signal windows, scoped to who may see them."""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from clinops.permissions import DevicePrincipal
from monitoring.models import SignalWindow
from patients.models import Role
from patients.selectors import patients_visible_to


def windows_visible_to(caller: Any) -> QuerySet[SignalWindow]:
    """A device sees its own windows; clinicians of the care team and admins see the patient's.

    Patients see their BP, not raw windows (portal issue), so they get none here.
    """
    windows = SignalWindow.objects.select_related("device").prefetch_related("analyses").defer("raw")
    if isinstance(caller, DevicePrincipal):
        return windows.filter(device=caller.device)
    if getattr(caller, "role", None) == Role.PATIENT:
        return windows.none()
    return windows.filter(patient__in=patients_visible_to(caller))
