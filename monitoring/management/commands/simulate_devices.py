"""Device simulator: replays the real challenge2015 recordings as the demo wearables.

Until the ingestion API (POST /api/v1/windows/) exists, this is a stub on the upload side: it
checks each device's API key against the running server (GET /api/v1/device/) and prepares the
30-s windows it will upload, but sends none of them. The ingestion issue replaces the upload step.
"""
import json
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from monitoring.recordings import iter_windows, load_challenge2015


class Command(BaseCommand):
    help = "Replay the real recordings through the device API as the demo devices (upload is a stub)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="ClinOps base URL.")
        parser.add_argument("--keys-file", default=str(settings.VAR_DIR / "demo-device-keys.json"))
        parser.add_argument("--window-s", type=float, default=30.0, help="Window length (s).")

    def handle(self, *args, url: str, keys_file: str, window_s: float, **options):
        path = Path(keys_file)
        if not path.exists():
            raise CommandError(f"{path} not found: run `manage.py seed_demo` first.")
        failures = 0
        for device in json.loads(path.read_text()):
            status = self._check_key(url, device["api_key"])
            recording = load_challenge2015(settings.RECORDINGS_DIR, device["record"])
            windows = list(iter_windows(recording, window_s=window_s))
            self.stdout.write(
                f"device {device['serial']} ({device['patient_username']}): key {status}; "
                f"{len(windows)} windows of {window_s:.0f} s from record {recording.name} "
                f"(ECG {recording.ecg_lead} {recording.ecg_fs:.0f} Hz + PPG {recording.ppg_fs:.0f} Hz) "
                "ready; upload arrives with the ingestion API"
            )
            failures += status != "accepted"
        if failures:
            raise CommandError(f"{failures} device key(s) were refused by {url}.")

    @staticmethod
    def _check_key(url: str, api_key: str) -> str:
        request = urllib.request.Request(
            f"{url.rstrip('/')}/api/v1/device/", headers={"Authorization": f"Api-Key {api_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return "accepted" if response.status == 200 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"refused (HTTP {exc.code})"
        except urllib.error.URLError as exc:
            return f"server unreachable ({exc.reason})"
