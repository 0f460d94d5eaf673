from django.apps import AppConfig


class PatientsConfig(AppConfig):
    """People, care teams, devices and consent."""

    name = "patients"
    default_auto_field = "django.db.models.BigAutoField"
