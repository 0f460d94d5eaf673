"""`manage.py run_demo` (what `make demo` runs) brings up the whole product — weeks of seeded history,
then the demo wearables streaming live windows — and Ctrl-C stops it all."""
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil

from clinops.localservices import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def get_json(url: str):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def count_rows(database: Path, table: str, where: str = "", params: tuple = ()) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table} {where}", params).fetchone()[0]


def test_the_demo_runs_web_worker_and_beat_and_stops_on_ctrl_c(tmp_path):
    web_port, redis_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}},
        "CLINOPS_VAR_DIR": str(tmp_path / "var"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",  # nobody there: the demo starts its own
    }
    # A file, not a pipe: the demo's processes log a lot, and a full pipe nobody reads blocks them.
    log_path = tmp_path / "demo.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    # Each wearable sends a live window every 12 s here (5 min in the demo), so one comes within seconds.
    demo = subprocess.Popen(
        [sys.executable, "manage.py", "run_demo", "--addr", f"127.0.0.1:{web_port}", "--workers", "1",
         "--window-every", "12"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    database = tmp_path / "var" / "clinops.sqlite3"
    try:
        try:
            health = wait_for(
                lambda: (h := get_json(f"http://127.0.0.1:{web_port}/healthz")) and h["checks"]["worker"] == "ok" and h,
                timeout_s=300, interval_s=0.5,  # training and the weeks of history come first
            )
        except AssertionError:
            demo.send_signal(signal.SIGINT)
            demo.wait(timeout=60)
            output = log_path.read_text()
            raise AssertionError(f"the demo did not become healthy; last health: "
                                 f"{get_json(f'http://127.0.0.1:{web_port}/healthz')}; its output:\n"
                                 + "\n".join(line for line in output.splitlines() if "/healthz" not in line)[-6000:])
        assert health["checks"] == {**health["checks"], "database": "ok", "redis": "ok", "worker": "ok"}
        # Weeks of history were seeded before the web server started...
        assert count_rows(database, "monitoring_signalwindow") >= 6 * 28 * 4
        assert count_rows(database, "therapy_suggestion") > 0
        # ...and the wearables keep streaming: live windows arrive through the API and the worker
        # turns them into verdicts and (calibrated on the seeded home readings) estimates.
        seeded = count_rows(database, "monitoring_signalwindow")
        live = ("WHERE id > ? AND status != 'received'", (seeded,))  # ids count up from 1 on a fresh database
        wait_for(lambda: count_rows(database, "monitoring_signalwindow", *live) >= 2, timeout_s=120)
        children = psutil.Process(demo.pid).children(recursive=True)
        commands = " ".join(" ".join(child.cmdline()) for child in children)
        for part in ["runserver", "celery -A clinops worker", "celery -A clinops beat", "redis-server",
                     "simulate_devices --url", "--live"]:
            assert part in commands
    finally:
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=60)
        log.close()
    output = log_path.read_text()
    assert "dr.okafor" in output and "live window of" in output and "Active BP model:" in output
    assert "History of patient1" in output and "Stopped streaming" in output
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [p.cmdline() for p in alive]
