from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from rest_framework_api_key.admin import APIKeyModelAdmin

from clinops.admin import ReadOnlyAdminMixin
from patients.models import CareTeam, Clinician, Device, DeviceAPIKey, Patient, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "role", "first_name", "last_name", "is_active"]
    list_filter = ["role", "is_active"]
    fieldsets = (*DjangoUserAdmin.fieldsets, ("ClinOps", {"fields": ("role",)}))
    # A role is given when the person is created (patients/services.py, audited), not edited here.
    readonly_fields = ["role"]


# People, teams, devices and keys change through patients/services.py, which writes the audit
# trail (and keeps one live key per device); the admin shows them read-only.
@admin.register(Clinician)
class ClinicianAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["__str__", "profession"]


@admin.register(Patient)
class PatientAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["medical_record_number", "family_name", "given_name", "date_of_birth", "sex", "consent_status"]
    list_filter = ["sex", "consent_status"]
    search_fields = ["medical_record_number", "family_name", "given_name"]


@admin.register(CareTeam)
class CareTeamAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    filter_horizontal = ["clinicians", "patients"]


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["serial", "make", "model", "firmware", "patient", "revoked_at", "last_seen_at"]
    list_filter = ["make", "model", "firmware"]
    search_fields = ["serial"]


@admin.register(DeviceAPIKey)
class DeviceAPIKeyAdmin(ReadOnlyAdminMixin, APIKeyModelAdmin):
    list_display = [*APIKeyModelAdmin.list_display, "device"]
