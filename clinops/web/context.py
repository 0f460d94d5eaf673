"""Template context for every page: the open-alert counter the care team sees everywhere."""
from __future__ import annotations

from django.http import HttpRequest

from patients.models import Role
from therapy.selectors import alerts_open_for


def alert_counter(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    if not (user and user.is_authenticated and getattr(user, "role", None) in (Role.CLINICIAN, Role.ADMIN)):
        return {}

    return {"open_alert_count": alerts_open_for(user, include_snoozed=False).count()}
