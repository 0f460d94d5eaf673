"""The test command behind `make test`: the lint pass, then private Redis + PostgreSQL and the suite.

The lint pass (tests/lint.py: ruff, the import contracts, mypy) runs first; its failure fails the
run, but the test passes still run so one run shows everything. Pass 1 runs every test on SQLite
(the zero-setup default) except the PostgreSQL-only and fault ones; pass 2 runs the integration
tests and the PostgreSQL-only ones on a throwaway PostgreSQL cluster. Both use a real Redis and a
real Celery worker process. Pass 3 runs the fault tests (`faults` marker) on PostgreSQL with a Redis
of its own: they kill workers, stop Redis and restart PostgreSQL, so they run last, alone, and are
told where the servers are (CLINOPS_TEST_REDIS_PORT, CLINOPS_TEST_REDIS_DIR, CLINOPS_TEST_PG_DATA,
CLINOPS_TEST_PG_OPTIONS, CLINOPS_TEST_PG_LOG). The exit status is non-zero if any test failed, or if
a pass ran no test at all (with extra arguments, which select tests, if no pass ran any).

    python -m tests.run                 # everything
    python -m tests.run -- -k audit     # extra arguments go to the pytest passes (no lint pass)
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from clinops import localservices

ROOT = Path(__file__).resolve().parent.parent
# (name, marker expression, on PostgreSQL, with a Redis of its own)
PASSES = [
    ("SQLite", "not postgres and not faults", False, False),
    ("PostgreSQL", "(postgres or integration or both_databases) and not faults", True, False),
    ("faults", "faults", True, True),
]


def main(argv: list[str]) -> int:
    extra = argv[argv.index("--") + 1 :] if "--" in argv else argv
    results: list[tuple[str, int]] = []
    if not extra:  # a selection of tests is a quick look; the whole run is what must be clean
        print("\n=== pass: lint (ruff, import contracts, mypy) ===", flush=True)
        results.append(("lint", subprocess.call([sys.executable, "-m", "tests.lint"], cwd=ROOT)))
    redis_port = localservices.free_port()
    redis_dir = Path(tempfile.mkdtemp(prefix="clinops-redis-"))
    redis = localservices.start_redis(port=redis_port, data_dir=redis_dir)
    try:
        with localservices.temporary_postgres_cluster() as postgres:
            for name, marker, on_postgres, own_redis in PASSES:
                env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}}
                port, own = redis_port, None
                if own_redis:
                    port = localservices.free_port()
                    own_dir = Path(tempfile.mkdtemp(prefix="clinops-redis-faults-"))
                    own = localservices.start_redis(port=port, data_dir=own_dir)
                    env |= {"CLINOPS_TEST_REDIS_PORT": str(port), "CLINOPS_TEST_REDIS_DIR": str(own_dir),
                            "CLINOPS_TEST_PG_DATA": str(postgres.data_dir), "CLINOPS_TEST_PG_OPTIONS": postgres.options,
                            "CLINOPS_TEST_PG_LOG": str(postgres.log_file)}
                env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
                if on_postgres:
                    env["DATABASE_URL"] = postgres.url
                print(f"\n=== pass: {name} (-m '{marker}') ===", flush=True)
                try:
                    code = subprocess.call([sys.executable, "-m", "pytest", "-m", marker, *extra], cwd=ROOT, env=env)
                finally:
                    localservices.stop(own)
                results.append((name, code))
    finally:
        localservices.stop(redis)
    print("\n=== summary ===")
    for name, code in results:
        verdict = {0: "passed", 5: "NO TESTS RAN"}.get(code, f"FAILED (exit {code})")
        print(f"{name}: {verdict}")
    # The whole suite must run tests in every pass; a selection (extra arguments) may leave a pass
    # empty, but not all of them.
    allowed = {0, 5} if extra else {0}
    tests = [(name, code) for name, code in results if name != "lint"]
    ok = (all(code == 0 for name, code in results if name == "lint") and tests
          and all(code in allowed for _, code in tests) and any(code == 0 for _, code in tests))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
