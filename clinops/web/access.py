"""Who may open which part of the web app: the clinician app is for clinicians (and admins), the
portal for patients. A patient outside the caller's care answers 404, as in the API."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_htmx.middleware import HtmxDetails

from patients.models import Role, User

View = Callable[..., HttpResponse]


class SignedInRequest(HttpRequest):
    """What a view behind clinician_required or patient_required is given: login_required has let
    only a signed-in user through, and django-htmx's middleware has said whether htmx sent it."""

    user: User
    htmx: HtmxDetails


def _second_factor_missing(request: SignedInRequest) -> bool:
    """In production a clinician must have passed TOTP (django-otp) in this session."""
    # django-otp's OTPMiddleware gives each request's user is_verified() at run time; the User
    # model does not declare it, so no stub can.
    return settings.CLINOPS_OTP_REQUIRED_FOR_CLINICIANS and not request.user.is_verified()  # type: ignore[attr-defined]


def clinician_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapped(request: SignedInRequest, *args, **kwargs) -> HttpResponse:
        if request.user.role not in (Role.CLINICIAN, Role.ADMIN):
            raise PermissionDenied("The clinician app is for the care team.")
        if _second_factor_missing(request):
            return redirect("web:otp")
        return view(request, *args, **kwargs)
    return wrapped


def patient_required(view: View) -> View:
    @login_required
    @wraps(view)
    def wrapped(request: SignedInRequest, *args, **kwargs) -> HttpResponse:
        if request.user.role != Role.PATIENT or not hasattr(request.user, "patient"):
            raise PermissionDenied("The portal is for patients.")
        return view(request, *args, **kwargs)
    return wrapped
