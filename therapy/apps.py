from django.apps import AppConfig


class TherapyConfig(AppConfig):
    """Plans, medication ladders, autonomy bounds, suggestions and decisions."""

    name = "therapy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Therapy hears of new estimates and cuff readings from monitoring, and keeps the raw windows
        # its suggestions rest on, through the handlers monitoring asks for (monitoring may not
        # import therapy).
        from clinops.base import metrics
        from monitoring.handoff import new_evidence_handler
        from monitoring.ingest import retention
        from therapy.domain import EscalationKind
        from therapy.receivers import TherapyHearsOfNewEvidence
        from therapy.retention import SuggestionsKeepTheirWindows

        new_evidence_handler.register(TherapyHearsOfNewEvidence())
        retention.raw_window_keeper.register(SuggestionsKeepTheirWindows())
        metrics.escalation_causes_export(kind.value for kind in EscalationKind)
