from django.apps import AppConfig


class ClinopsConfig(AppConfig):
    """Cross-cutting pieces: the audit trail, permissions, worker heartbeat."""

    name = "clinops"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the object-level permission rules with django-rules.
        from clinops import permissions, schema  # noqa: F401
