"""One command for the whole demo: Redis, migrations, seed (the BP model, the clinic and weeks of
history: seed_demo), web server, Celery worker and beat, and the demo wearables streaming live
windows (simulate_devices --live) for as long as the demo runs.

The children run in their own process groups so that Ctrl-C reaches this command alone, which
then stops them in order; if this command dies, the kernel stops them (PR_SET_PDEATHSIG).

Ctrl-C (or SIGTERM) stops every process it started; if one of them dies, the others are stopped.
"""
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from clinops import localservices


class Command(BaseCommand):
    help = ("Run the ClinOps demo: local Redis, migrate, seed, web server, Celery worker and beat, and the demo "
            "wearables streaming live windows.")

    def add_arguments(self, parser):
        parser.add_argument("--addr", default="127.0.0.1:8000", help="Where the web server listens.")
        parser.add_argument("--workers", type=int, default=2, help="Celery worker processes.")
        parser.add_argument("--window-every", type=float, default=300.0,
                            help="Seconds between two live windows of one demo wearable (the devices take turns).")

    def handle(self, *args, addr: str, workers: int, window_every: float, **options):
        children: list[tuple[str, subprocess.Popen]] = []
        redis = localservices.ensure_redis(settings.REDIS_URL, data_dir=settings.VAR_DIR / "redis")
        if redis is not None:
            children.append(("redis", redis))
            self.stdout.write(f"Started a local Redis at {settings.REDIS_URL}")
        stopping = False

        def stop_all(*_):
            nonlocal stopping
            if stopping:
                return
            stopping = True
            self.stdout.write("\nStopping the demo...")
            for _, process in reversed(children):
                localservices.stop(process)

        # Ctrl-C may arrive with SIGINT ignored by a non-interactive parent shell: handle it anyway.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
        try:
            call_command("migrate", interactive=False, verbosity=0)
            from django.db import connection

            if connection.vendor == "sqlite":
                # Web, worker and beat share the file: WAL lets readers run while one writes.
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA journal_mode=WAL")
            # The BP model (trained on first run), the clinic and its weeks of history, no broker needed.
            call_command("seed_demo")
            python = sys.executable
            env = dict(os.environ)
            var = settings.VAR_DIR
            children.append(("web", subprocess.Popen([python, "manage.py", "runserver", addr, "--noreload"], env=env,
                                                     preexec_fn=localservices.die_with_parent, process_group=0)))
            children.append(("worker", subprocess.Popen(
                [python, "-m", "celery", "-A", "clinops", "worker", "--loglevel", "INFO",
                 "--concurrency", str(workers), "-n", "demo@%h"], env=env, preexec_fn=localservices.die_with_parent, process_group=0)))
            children.append(("beat", subprocess.Popen(
                [python, "-m", "celery", "-A", "clinops", "beat", "--loglevel", "INFO",
                 "--schedule", str(var / "celerybeat-schedule")], env=env, preexec_fn=localservices.die_with_parent, process_group=0)))
            host, _, port = addr.rpartition(":")
            deadline = time.monotonic() + 30
            while not localservices.port_answers(host or "127.0.0.1", int(port)) and time.monotonic() < deadline:
                time.sleep(0.2)
            url = f"http://{addr}"
            # The wearables keep sending, each a window every few minutes, for the life of the demo.
            children.append(("devices", subprocess.Popen(
                [python, "manage.py", "simulate_devices", "--url", url, "--live", "--every", str(window_every)],
                env=env, preexec_fn=localservices.die_with_parent, process_group=0)))
            self.stdout.write(self.style.SUCCESS(
                f"\nClinOps demo is running at {url}/  (admin: {url}/admin/, API schema: {url}/api/v1/schema/, "
                f"health: {url}/healthz)\nLogins are printed above (password 'clinops-demo'). Ctrl-C stops everything."
            ))
            while True:
                for name, process in children:
                    if process.poll() is not None:
                        self.stderr.write(f"{name} exited with {process.returncode}; stopping the demo.")
                        return
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            stop_all()
