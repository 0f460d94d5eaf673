"""Production settings refuse an insecure start, and `check --deploy` is clean when configured."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD_ENV = {
    "DJANGO_SETTINGS_MODULE": "clinops.settings.production",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "clinops.example.org",
    "DATABASE_URL": "postgres://clinops:secret@db.internal:5432/clinops",
    "REDIS_URL": "redis://redis.internal:6379/0",
}


def manage(*args: str, **overrides: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in GOOD_ENV and k != "DEBUG"}
    env.update(GOOD_ENV)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_under_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"SECRET_KEY": None}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY is too weak"),
        ({"SECRET_KEY": "django-insecure-" + "x" * 60}, "SECRET_KEY is too weak"),
        ({"DEBUG": "1"}, "DEBUG must be off"),
        ({"DEBUG": "maybe"}, "is not a boolean"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS must list"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS=* accepts any Host header"),
        ({"ALLOWED_HOSTS": "clinops.example.org,*"}, "ALLOWED_HOSTS=* accepts any Host header"),
        ({"DATABASE_URL": None}, "DATABASE_URL must be set"),
        ({"DATABASE_URL": "sqlite:////tmp/x.sqlite3"}, "Production runs on PostgreSQL"),
        ({"REDIS_URL": None}, "REDIS_URL must be set"),
    ],
)
def test_production_refuses_to_start_insecurely(overrides, complaint):
    result = manage("check", **overrides)
    assert result.returncode != 0
    assert complaint in result.stderr


def test_the_demo_cannot_be_seeded_under_production_settings():
    result = manage("seed_demo")
    assert result.returncode != 0
    assert "not seeded under production settings" in result.stderr
