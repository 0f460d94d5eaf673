"""Settings for pytest: the same real parts (Redis, Celery worker, database) as production.

`python -m tests.run` (what `make test` runs) starts a private Redis and PostgreSQL and sets
REDIS_URL (and DATABASE_URL for the PostgreSQL pass) before pytest loads these settings.
"""
import os

from .base import *  # noqa: F403
from .base import CACHES, DATABASES, REDIS_URL, STATIC_ROOT, VAR_DIR

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never in prod
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not :memory:, so the real Celery worker process can open the same test database; one
    # per pytest process, so that two test runs side by side never drop each other's tables.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-clinops-{os.getpid()}.sqlite3")}

# Whitenoise serves from the finders here; the folder only has to exist (collectstatic fills it in production).
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# The cache (throttle counters) gets its own Redis database so tests can clear it between tests
# without flushing the Celery queue that the worker reads.
CACHES["default"]["LOCATION"] = REDIS_URL.rsplit("/", 1)[0] + "/1"
