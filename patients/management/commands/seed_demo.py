import json
import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from patients.demo import demo_clinic_seed


class Command(BaseCommand):
    help = "Seed the demo clinic (2 clinicians, 1 admin, 6 patients with devices) and print logins."

    def add_arguments(self, parser):
        parser.add_argument(
            "--keys-file", default=str(settings.VAR_DIR / "demo-device-keys.json"),
            help="Where to write the demo devices' API keys for the device simulator.",
        )

    def handle(self, *args, keys_file: str, **options):
        if not settings.CLINOPS_DEMO_ALLOWED:
            raise CommandError("The demo clinic is not seeded under production settings.")
        clinic = demo_clinic_seed()
        self.stdout.write(("Seeded" if clinic.created else "Found") + " the demo clinic. Logins:")
        for role, username, password in clinic.logins:
            self.stdout.write(f"  {role:<10} {username:<18} password: {password}")
        os.makedirs(os.path.dirname(keys_file) or ".", exist_ok=True)
        fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump([device.__dict__ for device in clinic.devices], out, indent=2)
        self.stdout.write(f"Device API keys (fresh ones, earlier ones revoked) written to {keys_file}")
