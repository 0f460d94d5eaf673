from django.contrib import admin

from clinops.base.models import AuditEvent, WorkerHeartbeat


class ReadOnlyAdminMixin:
    """Records that are evidence (audit events, signal windows): shown, never added, edited or deleted."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: the audit trail is append-only, for administrators too."""

    list_display = ["at", "actor_label", "action", "object_type", "object_id", "patient"]
    list_filter = ["actor_type", "action"]
    search_fields = ["actor_label", "action", "object_id"]
    date_hierarchy = "at"


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ["probe", "worker", "beat_at", "beats"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False
