"""Device simulator: the demo wearables replay the real challenge2015 recordings through the API.

One-shot (default): each device uploads its record (PLETH latency removed, see recordings.py) as
consecutive 30-s windows (compact int16 encoding, gzip, batch endpoint) timed so that the last
window ends now, after a cuff reading from the record's own arterial pressure.

--live (what `make demo` runs beside the web server): each device sends one window every --every
seconds (5 min by default, as a wearable does), the devices taking turns (staggered, never one
burst), its record's windows in turn and cycled, each recorded in the 30 s before it is sent; until
stopped (Ctrl-C, SIGTERM) or --max-uploads. No cuff readings: the patients' home readings are
theirs to enter.

Sequence numbers are the windows' start times in epoch seconds, so a rerun uploads new windows and
a retried request is recognised.
"""
import datetime as dt
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from monitoring.bp import arterial_reference, protocol
from monitoring.ingest.devicesim import gzip_json, staggered_offsets, window_payload
from monitoring.signals.recordings import iter_windows, load_challenge2015, with_pleth_delay_removed


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Replay the real recordings through the device API as the demo devices (once, or --live)."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="ClinOps base URL.")
        parser.add_argument("--keys-file", default=str(settings.VAR_DIR / "demo-device-keys.json"))
        parser.add_argument("--window-s", type=float, default=30.0, help="Window length (s).")
        parser.add_argument("--live", action="store_true",
                            help="Keep streaming: each device sends a window every --every seconds, staggered.")
        parser.add_argument("--every", type=float, default=300.0, help="--live: seconds between a device's windows.")
        parser.add_argument("--max-uploads", type=int, default=0,
                            help="--live: stop after this many uploads (0: never).")

    def handle(self, *args, url: str, keys_file: str, window_s: float, live: bool, every: float, max_uploads: int,
               **options):
        path = Path(keys_file)
        if not path.exists():
            raise CommandError(f"{path} not found: run `manage.py seed_demo` first.")
        devices = json.loads(path.read_text())
        if live:
            if every <= 0:
                raise CommandError("--every must be more than 0 seconds.")
            return self._stream(url, devices, window_s=window_s, every_s=every, max_uploads=max_uploads)
        failures = 0
        now = timezone.now().replace(microsecond=0)
        for device in devices:
            windows = self._windows(device["record"], window_s)
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
            # The API answers a 2xx with a JSON object; _post returns text only for an error or no answer.
            assert isinstance(body, dict)
            self.stdout.write(
                f"device {device['serial']} ({device['patient_username']}): record {device['record']}, "
                f"{body['accepted']} windows accepted, {body['duplicates']} duplicates, {body['rejected']} rejected"
            )
        if failures:
            raise CommandError(f"{failures} device(s) could not upload to {url}.")

    def _stream(self, url: str, devices: list[dict], *, window_s: float, every_s: float, max_uploads: int) -> None:
        """Send each device's next window when it is due, forever (or max_uploads); an upload that
        fails (server restarting, refused) is reported and the device simply sends its next one."""
        signal.signal(signal.SIGTERM, _interrupt)  # run_demo stopping its children ends the stream like Ctrl-C
        windows = [self._windows(device["record"], window_s) for device in devices]
        started = time.monotonic()
        due = [started + offset for offset in staggered_offsets(len(devices), every_s)]
        sent = [0] * len(devices)
        self._say(f"Streaming live windows: {len(devices)} devices, one window each every {every_s:g} s, "
                  f"taking turns every {every_s / max(len(devices), 1):g} s. Ctrl-C stops.")
        uploads = 0
        try:
            while devices and not (max_uploads and uploads >= max_uploads):
                k = min(range(len(devices)), key=due.__getitem__)
                time.sleep(max(0.0, due[k] - time.monotonic()))
                device, window = devices[k], windows[k][sent[k] % len(windows[k])]
                # The window the device has just recorded: the 30 s before now.
                recorded_at = timezone.now().replace(microsecond=0) - dt.timedelta(seconds=window_s)
                payload = window_payload(window, sequence=int(recorded_at.timestamp()), recorded_at=recorded_at)
                status, body = self._post(url, device["api_key"], payload, path="/api/v1/windows/")
                who = f"device {device['serial']} ({device['patient_username']})"
                if status in (200, 202):
                    assert isinstance(body, dict)  # a 2xx answer is the API's JSON object (see handle)
                    self._say(f"{who}: live window of {recorded_at:%H:%M:%S} accepted (id {body['id']})")
                else:
                    self._say(f"{who}: live window refused (HTTP {status}): {body}")
                sent[k] += 1
                uploads += 1
                # Behind schedule (a slow or restarting server)? Carry on from now rather than send a burst.
                due[k] = max(due[k] + every_s, time.monotonic())
        except KeyboardInterrupt:
            pass
        self._say(f"Stopped streaming after {uploads} upload(s).")

    def _say(self, line: str) -> None:
        # The demo's terminal (or a log file) sees each line as it happens, not when a buffer fills.
        self.stdout.write(line)
        self.stdout.flush()

    @staticmethod
    def _windows(record: str, window_s: float):
        # A wearable sends ECG and PPG on one clock: remove the ICU monitor's PLETH latency.
        recording = with_pleth_delay_removed(load_challenge2015(settings.RECORDINGS_DIR, record))
        return list(iter_windows(recording, window_s=window_s))

    @staticmethod
    def _cuff_reading(windows, start: dt.datetime) -> dict | None:
        references = [
            ref for w in windows
            # challenge2015 records every channel at one rate, so the ABP rate is the ECG rate.
            if protocol.is_calibration_window(w.start_s) and (ref := arterial_reference.reference_bp(w.abp, w.ecg_fs)) is not None
        ]
        if not references:
            return None
        return {
            "measured_at": (start + dt.timedelta(seconds=protocol.CALIBRATION_END_S / 2)).isoformat(),
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
        except OSError as exc:  # a connection reset or timeout mid-request: the next window tries again
            return 0, f"connection failed ({exc.__class__.__name__}: {exc})"
