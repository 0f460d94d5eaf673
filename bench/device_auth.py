"""Benchmark: cost of authenticating a device by its hashed API key, per request, in-process.

Every upload pays this before any signal work, so it bounds the ingest rate of one web process.
Runs on a throwaway SQLite database; prints requests/s and latency percentiles (ms).

    .venv/bin/python bench/device_auth.py [--requests 2000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    var = tempfile.mkdtemp(prefix="clinops-bench-")
    os.environ.update({"CLINOPS_VAR_DIR": var, "DJANGO_SETTINGS_MODULE": "clinops.settings.local", "DEBUG": "0"})
    os.environ.pop("DATABASE_URL", None)

    import django

    django.setup()
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from clinops.base.audit import SYSTEM
    from patients import services
    from patients.models import ConsentStatus, Sex

    call_command("migrate", verbosity=0)
    import datetime as dt

    patient = services.patient_create(
        actor=SYSTEM, medical_record_number="BENCH-1", given_name="B", family_name="Ench",
        date_of_birth=dt.date(1960, 1, 1), sex=Sex.FEMALE, consent_status=ConsentStatus.GIVEN,
    )
    _, key = services.device_register(actor=SYSTEM, patient=patient, make="Acme", model="W", firmware="1", serial="BENCH")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    for _ in range(50):  # warm-up
        client.get("/api/v1/device/")
    latencies = []
    started = time.perf_counter()
    for _ in range(args.requests):
        t0 = time.perf_counter()
        response = client.get("/api/v1/device/")
        latencies.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200
    elapsed = time.perf_counter() - started
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
    print(f"device API-key auth (GET /api/v1/device/, in-process, SQLite, 1 process): "
          f"{args.requests / elapsed:.0f} req/s; p50 {statistics.median(latencies):.2f} ms, "
          f"p95 {p(0.95):.2f} ms, p99 {p(0.99):.2f} ms over {args.requests} requests")


if __name__ == "__main__":
    main()
