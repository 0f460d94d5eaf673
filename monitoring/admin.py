from django.contrib import admin, messages

from clinops.base.admin import ReadOnlyAdminMixin
from clinops.base.errors import ApplicationError
from monitoring import selectors
from monitoring.bp import registry
from monitoring.models import (
    AutonomySuspension,
    BPModelVersion,
    MonitoringReport,
    OperatorAlert,
    SignalWindow,
    TrainingSet,
    WindowAnalysis,
)


class WindowAnalysisInline(admin.TabularInline):
    model = WindowAnalysis
    extra = 0
    can_delete = False
    # A tuple: both options name it, and to the type checker a list of names is not a list of
    # `fields` groups, while a tuple of names is both.
    fields = ("pipeline_version", "usable", "reasons", "beat_count", "heart_rate_bpm", "pat_foot_ms", "processing_ms",
              "created_at")
    readonly_fields = fields


@admin.register(SignalWindow)
class SignalWindowAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Windows are evidence: shown, never edited or deleted here."""

    list_display = ["id", "device", "patient", "sequence", "recorded_at", "duration_s", "status", "received_at",
                    "raw_signal"]
    list_filter = ["status", "encoding", "firmware"]
    search_fields = ["device__serial"]
    exclude = ["raw"]
    readonly_fields = ["raw_signal", *(f.name for f in SignalWindow._meta.fields if f.name != "raw")]
    inlines = [WindowAnalysisInline]

    def get_queryset(self, request):
        # A list page of 100 windows would otherwise read ~3 MB of signal it never shows.
        return super().get_queryset(request).defer("raw")

    @admin.display(description="raw signal")
    def raw_signal(self, window: SignalWindow) -> str:
        return window.raw_signal


@admin.register(BPModelVersion)
class BPModelVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The model registry. Promotion, rollback and shadow mode are actions that go through the
    registry services: gated, audited, and recorded with the approving user."""

    list_display = ["version", "status", "shadow", "created_at", "trained_by", "approved_by", "gates"]
    list_filter = ["status", "shadow"]
    exclude = ["artifact"]
    readonly_fields = ["version", "status", "shadow", "created_at", "trained_by", "approved_by", "approved_at",
                       "previous_active", "code_version", "features", "hyperparameters", "interval_level",
                       "interval_sbp_mmhg", "interval_dbp_mmhg", "artifact_sha256", "gates", "shadow_comparison",
                       "metrics", "data_fingerprint"]
    actions = ["promote", "rollback", "shadow_on", "shadow_off"]

    @admin.display(description="promotion gates")
    def gates(self, model: BPModelVersion) -> str:
        passed, reasons = registry.model_version_gates(model)
        return "pass" if passed else "fail: " + "; ".join(reasons)

    @admin.display(description="shadow vs active (same windows)")
    def shadow_comparison(self, model: BPModelVersion) -> str:
        comparison = selectors.shadow_comparison(model)
        if not comparison["n"]:
            return "no paired estimates yet"
        return (f"{comparison['n']} windows; mean difference from the active model "
                f"SBP {comparison['sbp_mean_diff_mmhg']:+.1f} mmHg, DBP {comparison['dbp_mean_diff_mmhg']:+.1f} mmHg")

    def _run(self, request, queryset, action, describe):
        for model in queryset:
            try:
                action(model)
                self.message_user(request, describe(model), messages.SUCCESS)
            except (ApplicationError, registry.ModelFileTampered) as exc:
                self.message_user(request, f"{model.version}: {getattr(exc, 'message', exc)}", messages.ERROR)

    @admin.action(description="Promote to active (only if it passes its gates)")
    def promote(self, request, queryset):
        self._run(request, queryset, lambda m: registry.model_version_promote(actor=request.user, model=m),
                  lambda m: f"{m.version} is now the active BP model.")

    @admin.action(description="Roll back to the previously active model")
    def rollback(self, request, queryset):
        try:
            model = registry.model_version_rollback(actor=request.user)
            self.message_user(request, f"Rolled back: {model.version} is active again.", messages.SUCCESS)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)

    @admin.action(description="Run in shadow mode beside the active model")
    def shadow_on(self, request, queryset):
        self._run(request, queryset, lambda m: registry.model_version_set_shadow(actor=request.user, model=m, shadow=True),
                  lambda m: f"{m.version} now runs in shadow mode.")

    @admin.action(description="Stop shadow mode")
    def shadow_off(self, request, queryset):
        self._run(request, queryset, lambda m: registry.model_version_set_shadow(actor=request.user, model=m, shadow=False),
                  lambda m: f"{m.version} no longer runs in shadow mode.")


@admin.register(MonitoringReport)
class MonitoringReportAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Stored by beat; read on the model-health page."""

    list_display = ["kind", "scope", "period_start", "period_end", "computed_at"]
    list_filter = ["kind"]


@admin.register(OperatorAlert)
class OperatorAlertAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["signal", "scope", "severity", "value", "threshold", "raised_at", "resolved_at"]
    list_filter = ["severity", "resolved_at"]


@admin.register(AutonomySuspension)
class AutonomySuspensionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Lifted by a clinician on the model-health page (audited), never edited here."""

    list_display = ["model_version", "created_at", "lifted_at", "lifted_by"]


@admin.register(TrainingSet)
class TrainingSetAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["version", "created_at", "n_samples", "n_patients", "n_decisions", "sha256"]
    exclude = ["content"]
