from django.apps import AppConfig


class PatientsConfig(AppConfig):
    """People, care teams, devices and consent."""

    name = "patients"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the object-level permission rules with django-rules.
        from patients import permissions  # noqa: F401
