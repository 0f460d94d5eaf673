"""Zero-setup development and demo settings: SQLite in var/, a local Redis, DEBUG on."""
from .base import *  # noqa: F403
from .base import STATIC_ROOT
from .env import env_bool

DEBUG = env_bool("DEBUG", True)

# Whitenoise serves from the finders here; the folder only has to exist (collectstatic fills it in production).
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
