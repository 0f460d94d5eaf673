import contextlib
import json
import logging
import os
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from clinops.demo.clinic import demo_seed


class Command(BaseCommand):
    help = ("Seed the demo: the active BP model, the clinic (2 clinicians, 1 admin, 6 patients with a wearable and "
            "a home cuff) and weeks of each patient's history; print the logins. No broker or worker needed.")

    def add_arguments(self, parser):
        parser.add_argument(
            "--keys-file", default=str(settings.VAR_DIR / "demo-device-keys.json"),
            help="Where to write the demo devices' API keys for the device simulator.",
        )
        parser.add_argument("--no-history", dest="history", action="store_false",
                            help="The clinic alone, created now: no BP model, no weeks of history (quick).")

    def handle(self, *args, keys_file: str, history: bool, **options):
        if not settings.CLINOPS_DEMO_ALLOWED:
            raise CommandError("The demo clinic is not seeded under production settings.")
        started = time.monotonic()
        with _info_logs_off():  # thousands of windows' log lines; the progress lines say where it is
            seeded = demo_seed(history=history, progress=lambda message: self.stdout.write(f"  {message}"))
        clinic = seeded.clinic
        if seeded.model:
            self.stdout.write(f"Active BP model: {seeded.model} ({seeded.model_why})")
        self.stdout.write(("Seeded" if clinic.created else "Found") + " the demo clinic. Logins:")
        for role, username, password in clinic.logins:
            self.stdout.write(f"  {role:<10} {username:<18} password: {password}")
        written = seeded.history
        if written is not None:
            if written.seeded:
                self.stdout.write(f"History of {', '.join(written.seeded)} written from {written.origin:%Y-%m-%d} "
                                  f"({written.events} events; seeding took {time.monotonic() - started:.0f} s). "
                                  "Where each patient stands:")
            else:
                self.stdout.write("Every demo patient has a history already: none added (delete var/ to start over). "
                                  "Where each patient stands:")
            for state in written.patients:
                self.stdout.write(
                    f"  {state.username}: {state.windows} windows, {state.estimates} estimates, {state.cuff_readings} "
                    f"cuff readings, rung {state.rung + 1}; latest evaluation {state.outcome}"
                    + (f"; latest suggestion {state.latest_suggestion}" if state.latest_suggestion else "")
                    + f"\n    ({state.story})"
                )
        os.makedirs(os.path.dirname(keys_file) or ".", exist_ok=True)
        fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump([device.__dict__ for device in clinic.devices], out, indent=2)
        self.stdout.write(f"Device API keys (fresh ones, earlier ones revoked) written to {keys_file}")


@contextlib.contextmanager
def _info_logs_off():
    """Log records below WARNING are dropped for the block (warnings, e.g. the demo's alerts, still
    show)."""
    previous = logging.root.manager.disable
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(previous)
