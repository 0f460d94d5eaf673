from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Signal windows, features, BP estimates, models and drift (ingestion and BP issues)."""

    name = "monitoring"
    default_auto_field = "django.db.models.BigAutoField"
