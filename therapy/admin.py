from django.contrib import admin

from clinops.base.admin import ReadOnlyAdminMixin
from therapy.models import Alert, DoseLog, EscalationAction, LatestEvaluation, PlanVersion, Suggestion, SymptomReport


@admin.register(PlanVersion)
class PlanVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Plan versions are changed by the care team through therapy/services.py (audited)."""

    list_display = ["patient", "version", "created_at", "created_by", "current_rung", "target_sbp_mmhg",
                    "target_dbp_mmhg", "auto_step_up", "auto_step_down"]
    list_filter = ["auto_step_up", "auto_step_down"]


@admin.register(Suggestion)
class SuggestionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Suggestions are decided in the clinician app (audited), never edited here."""

    list_display = ["patient", "kind", "from_rung", "to_rung", "status", "urgent", "auto_release", "created_at"]
    list_filter = ["status", "kind", "urgent", "auto_release"]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Alerts open and close with the escalations they belong to."""

    list_display = ["patient", "cause", "seek_care", "raised_at", "closed_at", "closed_by"]
    list_filter = ["cause", "seek_care"]


@admin.register(SymptomReport)
class SymptomReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["patient", "kind", "symptom", "drug", "reported_at", "reported_by"]
    list_filter = ["kind", "symptom"]


@admin.register(EscalationAction)
class EscalationActionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["suggestion", "step", "by", "at"]
    list_filter = ["step"]


@admin.register(DoseLog)
class DoseLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["patient", "day", "drug", "dose_mg", "slot", "taken", "logged_at"]


@admin.register(LatestEvaluation)
class LatestEvaluationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["patient", "evaluated_at", "outcome", "policy_version"]
    list_filter = ["outcome"]
