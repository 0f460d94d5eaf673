from django.apps import AppConfig


class OuterLayerConfig(AppConfig):
    """The outer layer: the clinicians' web app and the patients' portal (templates, static files,
    template tags), FHIR, the URLs, the operations endpoints and the demo. No models; it imports
    the apps, and none of them imports it (the layers contract in .importlinter)."""

    name = "clinops"
    label = "clinops_site"
    default_auto_field = "django.db.models.BigAutoField"
