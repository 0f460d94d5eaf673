"""The test command behind `make test`: private Redis + PostgreSQL, then the suite in two passes.

Pass 1 runs every test on SQLite (the zero-setup default) except the PostgreSQL-only ones; pass 2
runs the integration tests and the PostgreSQL-only ones on a throwaway PostgreSQL cluster. Both
passes use a real Redis and a real Celery worker process. The exit status is non-zero if any test
failed or if a pass ran no test at all.

    python -m tests.run                 # everything
    python -m tests.run -- -k audit     # extra arguments go to both pytest passes
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from clinops import localservices

ROOT = Path(__file__).resolve().parent.parent
PASSES = [
    ("SQLite", "not postgres", False),
    ("PostgreSQL", "postgres or integration", True),
]


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else argv
    redis_port = localservices.free_port()
    redis_dir = Path(tempfile.mkdtemp(prefix="clinops-redis-"))
    redis = localservices.start_redis(port=redis_port, data_dir=redis_dir)
    results: list[tuple[str, int]] = []
    try:
        with localservices.temporary_postgres() as postgres_url:
            for name, marker, on_postgres in PASSES:
                env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
                env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
                if on_postgres:
                    env["DATABASE_URL"] = postgres_url
                print(f"\n=== pass: {name} (-m '{marker}') ===", flush=True)
                code = subprocess.call([sys.executable, "-m", "pytest", "-m", marker, *extra], cwd=ROOT, env=env)
                results.append((name, code))
    finally:
        localservices.stop(redis)
    print("\n=== summary ===")
    for name, code in results:
        verdict = {0: "passed", 5: "NO TESTS RAN"}.get(code, f"FAILED (pytest exit {code})")
        print(f"{name}: {verdict}")
    return 0 if results and all(code == 0 for _, code in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
