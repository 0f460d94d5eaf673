"""Zero-setup development and demo settings: SQLite in var/, a local Redis, DEBUG on."""
from .base import *  # noqa: F403
from .env import env_bool

DEBUG = env_bool("DEBUG", True)
