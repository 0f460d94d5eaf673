"""Who may see and do what: object-level rules (django-rules) and the device API-key check.

- a clinician sees only patients of their care teams;
- a patient sees only themself;
- a device may only write for the patient it is bound to, and never once revoked;
- an administrator sees everything.
Views check these through `user.has_perm(...)` or the selectors that scope querysets the same way.
"""
from __future__ import annotations

import re
from typing import Any

import rules
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from patients.models import CareTeam, Device, DeviceAPIKey, Patient, Role


@rules.predicate
def is_admin(user: Any) -> bool:
    return bool(getattr(user, "is_authenticated", False)) and (
        user.is_superuser or getattr(user, "role", None) == Role.ADMIN
    )


@rules.predicate
def is_clinician(user: Any) -> bool:
    return getattr(user, "role", None) == Role.CLINICIAN and hasattr(user, "clinician")


@rules.predicate
def is_patient_user(user: Any) -> bool:
    return getattr(user, "role", None) == Role.PATIENT


@rules.predicate
def is_in_patients_care_team(user: Any, patient: Patient | None) -> bool:
    if patient is None or not is_clinician(user):
        return False
    return CareTeam.objects.filter(clinicians=user.clinician, patients=patient).exists()


@rules.predicate
def is_the_patient(user: Any, patient: Patient | None) -> bool:
    return patient is not None and is_patient_user(user) and patient.user_id == user.pk


@rules.predicate
def is_in_device_patients_care_team(user: Any, device: Device | None) -> bool:
    return device is not None and is_in_patients_care_team(user, device.patient)


@rules.predicate
def owns_device(user: Any, device: Device | None) -> bool:
    return device is not None and is_the_patient(user, device.patient)


@rules.predicate
def device_is_bound_to(device: Any, patient: Patient | None) -> bool:
    return (
        isinstance(device, Device)
        and not device.is_revoked
        and patient is not None
        and device.patient_id == patient.pk
    )


rules.add_perm("patients.view_patient", is_admin | is_in_patients_care_team | is_the_patient)
rules.add_perm("patients.change_patient", is_admin | is_in_patients_care_team)
rules.add_perm("patients.view_device", is_admin | is_in_device_patients_care_team | owns_device)
rules.add_perm("patients.change_device", is_admin | is_in_device_patients_care_team)
# A device writes signal windows only for its own patient (checked as device_may_write_for).
rules.add_rule("device_may_write_for", device_is_bound_to)


def device_may_write_for(device: Device, patient: Patient) -> bool:
    return rules.test_rule("device_may_write_for", device, patient)


class DevicePrincipal:
    """The authenticated caller of a device route: a device, never a person."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_superuser = False
    role = "device"

    def __init__(self, device: Device) -> None:
        self.device = device
        self.pk = None

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def __str__(self) -> str:
        return f"device:{self.device.serial}"


API_KEY_CHARACTERS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class DeviceAPIKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>`: 401 for a missing or unknown key, 403 once revoked."""

    keyword = "Api-Key"

    def authenticate(self, request: Any) -> tuple[DevicePrincipal, DeviceAPIKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        keyword, _, key = header.partition(" ")
        if keyword.lower() != self.keyword.lower() or not key:
            return None
        prefix, dot, _ = key.partition(".")
        candidate = (
            DeviceAPIKey.objects.select_related("device", "device__patient")
            .filter(prefix=prefix)
            .first()
            # Keys are letters, digits and one dot; anything else is no key of ours, and is not
            # looked up (PostgreSQL refuses a NUL in a query).
            if dot and API_KEY_CHARACTERS.fullmatch(key)
            else None
        )
        if candidate is None or not candidate.is_valid(key):
            raise exceptions.AuthenticationFailed("Unknown device API key.")
        if candidate.revoked or candidate.device.is_revoked:
            raise exceptions.PermissionDenied("This device has been revoked; it may not upload.")
        if candidate.has_expired:
            raise exceptions.AuthenticationFailed("This device API key has expired.")
        return DevicePrincipal(candidate.device), candidate

    def authenticate_header(self, request: Any) -> str:
        return self.keyword


class IsDevice(permissions.BasePermission):
    message = "Only a registered device may call this route (Authorization: Api-Key <key>)."

    def has_permission(self, request: Any, view: Any) -> bool:
        return isinstance(request.user, DevicePrincipal)


def calling_device(request: Request) -> Device:
    """The device calling a route that IsDevice guards."""
    caller: object = request.user  # DRF's stubs know only people (User | AnonymousUser) as users
    # IsDevice lets a request through only when DeviceAPIKeyAuthentication made its user a device.
    assert isinstance(caller, DevicePrincipal)
    return caller.device


class IsPerson(permissions.BasePermission):
    """A logged-in person (clinician, patient, admin); devices are refused."""

    message = "Sign in (with your second factor, for clinicians where it is required)."

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated) or isinstance(user, DevicePrincipal):
            return False
        # The API asks a clinician's session for the same TOTP second factor as the web app.
        from django.conf import settings

        if settings.CLINOPS_OTP_REQUIRED_FOR_CLINICIANS and getattr(user, "role", None) == "clinician":
            return bool(getattr(user, "is_verified", lambda: False)())
        return True


class IsDeviceOrPerson(permissions.BasePermission):
    """The API's default (REST_FRAMEWORK DEFAULT_PERMISSION_CLASSES): a registered device, or a
    person as IsPerson has them, so that a route naming no permission of its own still asks a
    clinician's session for the second factor."""

    message = IsPerson.message

    def has_permission(self, request: Any, view: Any) -> bool:
        return IsDevice().has_permission(request, view) or IsPerson().has_permission(request, view)


# Registered with drf-spectacular when this module loads (PatientsConfig.ready).
class DeviceAPIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "patients.permissions.DeviceAPIKeyAuthentication"
    name = "DeviceApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "A device's key, issued at registration: `Authorization: Api-Key <prefix>.<secret>`.",
        }
