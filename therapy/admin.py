from django.contrib import admin

from clinops.admin import ReadOnlyAdminMixin
from therapy.models import PlanVersion, Suggestion


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
