"""Device simulator: the demo wearables replay the real challenge2015 recordings through the API.

Each device uploads its record (PLETH latency removed, see recordings.py) as consecutive 30-s windows (compact int16 encoding, gzip, batch
endpoint) timed so that the last window ends now; sequence numbers are the windows' start times
in epoch seconds, so a rerun uploads new windows and a retried request is recognised.
"""
import datetime as dt
import json
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from monitoring import bp
from monitoring.devicesim import gzip_json, window_payload
from monitoring.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed


class Command(BaseCommand):
    help = "Replay the real recordings through the device API as the demo devices."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="ClinOps base URL.")
        parser.add_argument("--keys-file", default=str(settings.VAR_DIR / "demo-device-keys.json"))
        parser.add_argument("--window-s", type=float, default=30.0, help="Window length (s).")

    def handle(self, *args, url: str, keys_file: str, window_s: float, **options):
        path = Path(keys_file)
        if not path.exists():
            raise CommandError(f"{path} not found: run `manage.py seed_demo` first.")
        failures = 0
        now = timezone.now().replace(microsecond=0)
        for device in json.loads(path.read_text()):
            # A wearable sends ECG and PPG on one clock: remove the ICU monitor's PLETH latency.
            recording = with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, device["record"]))
            windows = list(iter_windows(recording, window_s=window_s))
            start = now - dt.timedelta(seconds=window_s * len(windows))
            payloads = []
            for window in windows:
                recorded_at = start + dt.timedelta(seconds=window.start_s)
                payloads.append(window_payload(window, sequence=int(recorded_at.timestamp()), recorded_at=recorded_at))
            cuff = self._cuff_reading(windows, start)
            if cuff is not None:
                status, body = self._post(url, device["api_key"], cuff, path="/api/v1/cuff-readings/")
                if status != 201:
                    failures += 1
                    self.stdout.write(f"device {device['serial']}: cuff reading refused (HTTP {status}): {body}")
            status, body = self._post(url, device["api_key"], {"windows": payloads})
            if status != 200:  # the batch endpoint answers 200 with a result per window
                failures += 1
                self.stdout.write(f"device {device['serial']}: upload refused (HTTP {status}): {body}")
                continue
            self.stdout.write(
                f"device {device['serial']} ({device['patient_username']}): record {recording.name}, "
                f"{body['accepted']} windows accepted, {body['duplicates']} duplicates, {body['rejected']} rejected"
            )
        if failures:
            raise CommandError(f"{failures} device(s) could not upload to {url}.")

    @staticmethod
    def _cuff_reading(windows, start: dt.datetime) -> dict | None:
        references = [
            ref for w in windows
            # challenge2015 records every channel at one rate, so the ABP rate is the ECG rate.
            if bp.is_calibration_window(w.start_s) and (ref := bp.reference_bp(w.abp, w.ecg_fs)) is not None
        ]
        if not references:
            return None
        return {
            "measured_at": (start + dt.timedelta(seconds=bp.CALIBRATION_END_S / 2)).isoformat(),
            "sbp_mmhg": round(sum(r.sbp_mmhg for r in references) / len(references), 1),
            "dbp_mmhg": round(sum(r.dbp_mmhg for r in references) / len(references), 1),
        }

    @staticmethod
    def _post(url: str, api_key: str, body: dict, path: str = "/api/v1/windows/batch/") -> tuple[int, dict | str]:
        request = urllib.request.Request(
            f"{url.rstrip('/')}{path}", data=gzip_json(body), method="POST",
            headers={"Authorization": f"Api-Key {api_key}", "Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")[:500]
        except urllib.error.URLError as exc:
            return 0, f"server unreachable ({exc.reason})"
