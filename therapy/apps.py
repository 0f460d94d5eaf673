from django.apps import AppConfig


class TherapyConfig(AppConfig):
    """Plans, medication ladders, autonomy bounds, suggestions and decisions (therapy issue)."""

    name = "therapy"
    default_auto_field = "django.db.models.BigAutoField"
