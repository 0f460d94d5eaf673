from django.apps import AppConfig


class BaseConfig(AppConfig):
    """The base every app stands on: the audit trail, API errors and parsing, task helpers, metrics,
    and the worker heartbeat. Its label stays `clinops`, the label its tables and migrations have
    always had."""

    name = "clinops.base"
    label = "clinops"
    default_auto_field = "django.db.models.BigAutoField"
