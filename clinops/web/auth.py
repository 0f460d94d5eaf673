"""Signing in: password (django-axes locks out repeated failures), then for clinicians a TOTP
second factor (django-otp) where CLINOPS_OTP_REQUIRED_FOR_CLINICIANS is on (production), optional
elsewhere. Each person lands on their own part of the app."""
from __future__ import annotations

import base64
import io

from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.db.models import Field
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from patients.models import Role


def landing(request: HttpRequest) -> HttpResponse:
    """/: patients to the portal, the care team to the review queue."""
    if not request.user.is_authenticated:
        return redirect("web:login")
    return redirect("web:portal" if request.user.role == Role.PATIENT else "web:queue")


def username_tried(request: HttpRequest, credentials: dict | None = None) -> str | None:
    """The name a sign-in attempt was made for, as django-axes records it against lockouts.

    Axes reads the raw posted name, not the form's checked one: a 20,000-character name would
    overflow its 255-character column on PostgreSQL (500) and NUL cannot be stored there at all.
    No real name is longer than the user model allows, so clipping to that length keeps every
    lockout that can match a person."""
    source = credentials if credentials else getattr(request, "data", request.POST)
    name = source.get("username") if source else None
    if not isinstance(name, str):
        return None
    username_field = get_user_model()._meta.get_field(get_user_model().USERNAME_FIELD)
    # USERNAME_FIELD names a column of the user model itself, never a relation pointing at it.
    assert isinstance(username_field, Field)
    limit = username_field.max_length or 150
    return name.replace("\x00", "")[:limit]


class LoginView(auth_views.LoginView):
    template_name = "web/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return "/"


def _same_site(request: HttpRequest, target: str) -> str:
    """`target` if it is a path on this site (as Django's login checks `next`), else "/": a link
    with ?next=https://elsewhere/ must not send a clinician off site after the second factor."""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                  require_https=request.is_secure()):
        return target
    return "/"


@login_required
def otp(request: HttpRequest) -> HttpResponse:
    """Verify a TOTP code; a clinician without an authenticator app enrols one first (QR code)."""
    device = TOTPDevice.objects.filter(user=request.user, confirmed=True).first()
    enrolling = device is None
    if enrolling:
        device = TOTPDevice.objects.filter(user=request.user, confirmed=False).first() or TOTPDevice.objects.create(
            user=request.user, name="authenticator app", confirmed=False)
    error = ""
    if request.method == "POST":
        if device.verify_token(request.POST.get("token", "").strip()):
            if enrolling:
                device.confirmed = True
                device.save(update_fields=["confirmed"])
            otp_login(request, device)
            return redirect(_same_site(request, request.GET.get("next", "")))
        error = "That code is not valid. Check the time on your phone and try the current code."
    context = {"enrolling": enrolling, "error": error}
    if enrolling:
        import qrcode
        import qrcode.image.svg

        image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage)
        buffer = io.BytesIO()
        image.save(buffer)
        context["qr_svg_b64"] = base64.b64encode(buffer.getvalue()).decode()
        context["secret"] = base64.b32encode(device.bin_key).decode()
    return render(request, "web/otp.html", context)
