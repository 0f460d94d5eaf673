"""Production settings: PostgreSQL + Redis from the environment; refuses an insecure start."""
from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DATABASES, METRICS_TOKEN
from .env import env_bool, env_int, env_list, env_str
from .logging import configure_logging

SECRET_KEY = env_str("SECRET_KEY", required=True)
if SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured(
        "SECRET_KEY is too weak for production: use at least 50 random characters, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(64))'."
    )
DEBUG = env_bool("DEBUG", False)
if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production settings.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [])
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must list the host names ClinOps is served on.")
if "*" in ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS=* accepts any Host header: list the host names ClinOps is served on.")
env_str("DATABASE_URL", required=True)
env_str("REDIS_URL", required=True)
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("Production runs on PostgreSQL: DATABASE_URL must be postgres://...")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
# The web app sends the CSRF token from the page (hx-headers, form fields), never from the cookie.
CSRF_COOKIE_HTTPONLY = True
LOGGING = configure_logging(json=env_bool("LOG_JSON", True), level=env_str("LOG_LEVEL", "INFO"))
# /metrics shows no patient data, but it does show how busy the clinic is: a token that can be guessed
# would publish that.
if METRICS_TOKEN is not None and (len(METRICS_TOKEN) < 32 or len(set(METRICS_TOKEN)) < 5):
    raise ImproperlyConfigured(
        "METRICS_TOKEN is too weak for production: use at least 32 random characters, e.g. "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'."
    )
CLINOPS_DEMO_ALLOWED = False
CLINOPS_OTP_REQUIRED_FOR_CLINICIANS = True
