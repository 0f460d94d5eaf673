from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    """Signal windows, features, BP estimates, models and their health (README "Where each responsibility lies")."""

    name = "monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the pipeline's tasks in every process, the web ones too: the services send them
        # by name (clinops.base.tasks.task_named), with the options their decorators set.
        from monitoring import tasks  # noqa: F401
