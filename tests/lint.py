"""The lint pass of `make test` (tests/run.py runs it first): ruff, the import contracts and mypy.

Each tool's configuration is in pyproject.toml (ruff, mypy) and .importlinter (the layers and the
pure-rule modules, README "Architecture"). Exits non-zero when any of them finds something.

    python -m tests.lint
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CHECKS = [
    ("ruff", [str(BIN / "ruff"), "check", "."]),
    ("import contracts", [str(BIN / "lint-imports")]),
    ("mypy", [sys.executable, "-m", "mypy"]),
]


def main() -> int:
    # mypy's Django plugin loads the settings; the test settings need no server.
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "clinops.settings.test"}
    failed = []
    for name, command in CHECKS:
        print(f"--- {name}: {' '.join(Path(command[0]).name if i == 0 else c for i, c in enumerate(command))}", flush=True)
        if subprocess.call(command, cwd=ROOT, env=env) != 0:
            failed.append(name)
    print(f"lint: {'FAILED (' + ', '.join(failed) + ')' if failed else 'passed'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
