"""Promote a registered BP model to active (refused unless it passes its gates), roll back to the
previous active model, or turn shadow mode on or off. Every step is audited."""
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from clinops.base.audit import SYSTEM, Actor
from clinops.base.errors import ApplicationError
from monitoring.bp import registry
from monitoring.models import BPModelVersion


class Command(BaseCommand):
    help = "Promote a BP model version (gated), --rollback, or --shadow/--no-shadow a candidate."

    def add_arguments(self, parser):
        parser.add_argument("version", nargs="?", help="The model version to promote (or to shadow).")
        parser.add_argument("--rollback", action="store_true", help="Put the previously active version back.")
        parser.add_argument("--shadow", action="store_true", help="Run VERSION in shadow mode instead of promoting it.")
        parser.add_argument("--no-shadow", action="store_true", help="Stop shadow mode for VERSION.")
        parser.add_argument("--as-user", help="Username of the approver (recorded); default: system.")

    def handle(self, *args, version, rollback, shadow, no_shadow, as_user, **options):
        actor: Actor = SYSTEM
        if as_user:
            user = get_user_model().objects.filter(username=as_user).first()
            if user is None:
                raise CommandError(f"No user {as_user!r}.")
            actor = user
        try:
            if rollback:
                restored = registry.model_version_rollback(actor=actor)
                self.stdout.write(f"Rolled back: {restored.version} is active again.")
                return
            if not version:
                raise CommandError("Name the model version (see the admin, or train_bp_model's output).")
            model = BPModelVersion.objects.filter(version=version).first()
            if model is None:
                raise CommandError(f"No model version {version!r}.")
            if shadow or no_shadow:
                registry.model_version_set_shadow(actor=actor, model=model, shadow=shadow)
                self.stdout.write(f"{model.version}: shadow mode {'on' if shadow else 'off'}.")
                return
            registry.model_version_promote(actor=actor, model=model)
            self.stdout.write(f"{model.version} is now the active BP model.")
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
