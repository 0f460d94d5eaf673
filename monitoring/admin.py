from django.contrib import admin

from clinops.admin import ReadOnlyAdminMixin

from monitoring.models import SignalWindow, WindowAnalysis


class WindowAnalysisInline(admin.TabularInline):
    model = WindowAnalysis
    extra = 0
    can_delete = False
    fields = ["pipeline_version", "usable", "reasons", "beat_count", "heart_rate_bpm", "pat_foot_ms", "processing_ms", "created_at"]
    readonly_fields = fields


@admin.register(SignalWindow)
class SignalWindowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Windows are evidence: shown, never edited or deleted here."""

    list_display = ["id", "device", "patient", "sequence", "recorded_at", "duration_s", "status", "received_at"]
    list_filter = ["status", "encoding", "firmware"]
    search_fields = ["device__serial"]
    exclude = ["raw"]
    readonly_fields = [f.name for f in SignalWindow._meta.fields if f.name != "raw"]
    inlines = [WindowAnalysisInline]
