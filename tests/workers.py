"""Real `celery worker` processes for tests: started on the test database and Redis, stopped or
killed the way an operator or the kernel would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from clinops.celery_app import app as celery_app

ROOT = Path(__file__).resolve().parent.parent


def database_url_of_test_db() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    if db["ENGINE"] == "django.db.backends.postgresql":
        return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    raise RuntimeError(f"No worker database URL for {db['ENGINE']}")


class Worker:
    """One `celery -A clinops worker` (main process + prefork children) in a process group of its own."""

    def __init__(self, *, name: str, database_url: str, log_path: Path, concurrency: int = 1,
                 env: dict[str, str] | None = None, queues: tuple[str, ...] = ()) -> None:
        self.name = f"{name}-{os.getpid()}@{os.uname().nodename}"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()/kill()
        full_env = {**os.environ, "DJANGO_SETTINGS_MODULE": "clinops.settings.test", "DATABASE_URL": database_url,
                    **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "clinops", "worker", "--loglevel", "INFO",
             "--concurrency", str(concurrency), "--pool", "prefork", "-n", self.name,
             "--without-gossip", "--without-mingle", *(("-Q", ",".join(queues)) if queues else ())],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, process_group=0,
        )

    def wait_ready(self, *, timeout_s: float = 60, app=celery_app) -> None:
        """Return once the worker answers a ping (through `app`'s broker); fail with its log if it
        exits or stays silent."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if app.control.ping(destination=[self.name], timeout=0.5):
                return
        self.kill()
        raise RuntimeError(f"The Celery worker {self.name} did not start; its log:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL to the whole worker (main process and pool children): no shutdown, no acks."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def stop(self, *, timeout_s: float = 20) -> None:
        """A warm shutdown (SIGTERM): the running task finishes first."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        # Children left behind by the main process would go on consuming.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._log.close()
