from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from rest_framework_api_key.admin import APIKeyModelAdmin

from clinops.base.admin import ReadOnlyAdminMixin
from clinops.base.audit import audit_record
from clinops.base.errors import ApplicationError
from patients import services
from patients.models import CareTeam, Clinician, CuffModel, Device, DeviceAPIKey, Patient, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "role", "first_name", "last_name", "is_active"]
    list_filter = ["role", "is_active"]
    assert DjangoUserAdmin.fieldsets is not None  # Django's UserAdmin declares its fieldsets
    fieldsets = (*DjangoUserAdmin.fieldsets, ("ClinOps", {"fields": ("role",)}))
    # A role and its privileges are given when the person is created (patients/services.py,
    # audited), never edited here: a patient made superuser would read every patient's record.
    readonly_fields = ["role", "is_superuser", "is_staff", "groups", "user_permissions", "last_login", "date_joined"]

    def has_add_permission(self, request) -> bool:
        return False  # people are created through the services, with their role and audit row

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        obj.admin_changed_fields = sorted(form.changed_data)  # named in the audit row by log_change
        super().save_model(request, obj, form, change)

    def log_change(self, request, obj, message):
        """Every change an administrator makes to a person (names, e-mail, active, password) is
        audited in the same transaction, naming the fields, never their values."""
        changed = getattr(obj, "admin_changed_fields", None)
        if changed is None:  # the password form saves without save_model
            changed = ["password"]
        audit_record(actor=request.user, action="user.admin_change", target=obj,
                     patient=getattr(obj, "patient", None), detail={"changed": changed})
        return super().log_change(request, obj, message)


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
    list_display = ["serial", "kind", "make", "model", "firmware", "patient", "revoked_at", "last_seen_at"]
    list_filter = ["kind", "make", "model", "firmware"]
    search_fields = ["serial"]


class CuffValidationForm(forms.ModelForm):
    class Meta:
        model = CuffModel
        fields = ["validated", "validation_reference"]


@admin.register(CuffModel)
class CuffModelAdmin(admin.ModelAdmin):
    """Cuff models are listed as patients' cuffs are registered; an administrator marks one
    validated (or withdraws the mark) here, through the audited service."""

    form = CuffValidationForm
    list_display = ["make", "model", "validated", "validation_reference", "changed_at", "changed_by"]
    list_filter = ["validated"]
    readonly_fields = ["make", "model", "changed_at", "changed_by"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        try:
            services.cuff_model_set_validated(actor=request.user, cuff_model=obj, validated=obj.validated,
                                              reference=obj.validation_reference)
        except ApplicationError as exc:
            messages.error(request, exc.message)


@admin.register(DeviceAPIKey)
class DeviceAPIKeyAdmin(ReadOnlyAdminMixin, APIKeyModelAdmin):
    # rest_framework_api_key does not annotate list_display, so mypy takes its 6-tuple of names for
    # the option's type; Django's ModelAdmin takes any list or tuple of them.
    list_display = [*APIKeyModelAdmin.list_display, "device"]  # type: ignore[assignment]
