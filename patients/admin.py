from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from rest_framework_api_key.admin import APIKeyModelAdmin

from patients.models import CareTeam, Clinician, Device, DeviceAPIKey, Patient, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "role", "first_name", "last_name", "is_active"]
    list_filter = ["role", "is_active"]
    fieldsets = (*DjangoUserAdmin.fieldsets, ("ClinOps", {"fields": ("role",)}))


@admin.register(Clinician)
class ClinicianAdmin(admin.ModelAdmin):
    list_display = ["__str__", "profession"]


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = ["medical_record_number", "family_name", "given_name", "date_of_birth", "sex", "consent_status"]
    list_filter = ["sex", "consent_status"]
    search_fields = ["medical_record_number", "family_name", "given_name"]


@admin.register(CareTeam)
class CareTeamAdmin(admin.ModelAdmin):
    filter_horizontal = ["clinicians", "patients"]


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["serial", "make", "model", "firmware", "patient", "revoked_at", "last_seen_at"]
    list_filter = ["make", "model", "firmware"]
    search_fields = ["serial"]
    readonly_fields = ["revoked_at", "revoked_reason"]


@admin.register(DeviceAPIKey)
class DeviceAPIKeyAdmin(APIKeyModelAdmin):
    list_display = [*APIKeyModelAdmin.list_display, "device"]
