"""Settings shared by every environment. Values that differ between machines come from env vars."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Queue

from .env import env_bool, env_int, env_list, env_str
from .logging import configure_logging

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Runtime state of a zero-setup install (SQLite file, local Redis data, logs); never committed.
VAR_DIR = Path(env_str("CLINOPS_VAR_DIR", str(BASE_DIR / "var")))
# Real recordings shipped with the product (see data/recordings/LICENSES.md).
RECORDINGS_DIR = Path(env_str("CLINOPS_RECORDINGS_DIR", str(BASE_DIR / "data" / "recordings")))

SECRET_KEY = env_str("SECRET_KEY", "django-insecure-local-development-key-not-for-production-use")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "rules",
    "django_htmx",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "csp",
    "clinops.base",
    "patients",
    "monitoring",
    "therapy",
    # The outer layer (web app, portal, FHIR, demo): its templates, static files and commands.
    "clinops",
]

MIDDLEWARE = [
    # First, so that every line logged while answering carries the request's id, and the time
    # measured covers every other middleware.
    "clinops.middleware.request_id",
    "clinops.middleware.request_metrics",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "clinops.middleware.no_store",
    "clinops.middleware.own_not_found_page",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a lockout into the lockout response.
    "axes.middleware.AxesMiddleware",
]

# Content Security Policy (django-csp), in every environment so that the browser tests see it:
# scripts, styles, images and requests from our own origin only — no inline script anywhere
# (htmx, uPlot and the page scripts are static files; the CSRF token travels in hx-headers) —, no
# plugins, and no page may be framed (with X-Frame-Options DENY for older browsers). The API
# documentation pages widen it for themselves (clinops/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

ROOT_URLCONF = "clinops.urls"
WSGI_APPLICATION = "clinops.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "clinops" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.tz",  # TIME_ZONE: the zone every page labels its times in
                "clinops.web.context.alert_counter",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'clinops.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # The web process and the Celery worker share the file: wait for locks instead of failing.
    # WAL (readers never wait for the writer) is a property of the file, set once by run_demo;
    # setting it on every new connection would take a lock each time.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "patients.User"
AUTHENTICATION_BACKENDS = [
    # First: django-axes refuses a locked-out login before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "rules.permissions.ObjectPermissionBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/login/"
# Lockout (django-axes): 5 failed logins for one username from one address lock it for 15 min.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "web/locked_out.html"
AXES_USERNAME_CALLABLE = "clinops.web.auth.username_tried"
# Clinicians must pass a TOTP second factor (django-otp) to use the clinician app; on in production.
CLINOPS_OTP_REQUIRED_FOR_CLINICIANS = env_bool("CLINOPS_OTP_REQUIRED_FOR_CLINICIANS", False)
OTP_TOTP_ISSUER = "ClinOps"

LANGUAGE_CODE = "en-gb"
# The clinic's time zone: every time on a page and on a chart is shown in it, and labelled.
TIME_ZONE = env_str("CLINOPS_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Redis: Celery broker and the shared cache (throttling, worker heartbeat) -------------------
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "clinops",
    }
}

# --- Celery -----------------------------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
# A task is acknowledged only when it has finished, so a worker killed mid-task loses nothing:
# Redis hands the message to another worker after the visibility timeout. Tasks are idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 120)  # s
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 180)  # s
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless this is set; it
# then closes every N tasks. The app closes old connections itself, as Django does between
# requests (clinops/celery_app.py), so the fixup's own closing is pushed out of the way.
CELERY_DB_REUSE_MAX = 1_000_000_000
# Two queues. "celery": windows -> estimates (latency-bound: p95 upload-to-estimate <= 2 s) and
# monitoring. "therapy": the evaluations (once a day per patient and on events, each reading a
# week of estimates; a crisis- or low-level estimate's goes to "celery", not behind them). On their own
# queue they can run on workers of their own (compose.yaml: therapy-worker), so a burst of due
# evaluations never holds up the windows behind it. A worker started without -Q consumes both.
CELERY_TASK_DEFAULT_QUEUE = "celery"
# Each queue bound under its own routing key. Celery sends to a queue by name, but with the default
# key for both, anything published through the "celery" exchange would reach both queues.
CELERY_TASK_QUEUES = (Queue("celery", routing_key="celery"), Queue("therapy", routing_key="therapy"))
# The report sweeper re-sends what symptom reports asked for (therapy.tasks.REPORT_EVALUATION_QUEUE).
CELERY_TASK_ROUTES = {"therapy.tasks.sweep_unevaluated_reports": {"queue": CELERY_TASK_DEFAULT_QUEUE},
                      "therapy.tasks.evaluate_due_patients": {"queue": CELERY_TASK_DEFAULT_QUEUE},
                      "therapy.tasks.*": {"queue": "therapy"}}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "worker-heartbeat": {
        "task": "clinops.tasks.worker_heartbeat",
        "schedule": timedelta(seconds=30),
        "kwargs": {"probe": "beat"},
        "options": {"expires": 25},
    },
    # The same from a worker of the therapy queue: /healthz reports each queue's consumers.
    "therapy-worker-heartbeat": {
        "task": "clinops.tasks.worker_heartbeat",
        "schedule": timedelta(seconds=30),
        "kwargs": {"probe": "therapy"},
        "options": {"expires": 25, "queue": "therapy"},
    },
    # Titration is re-decided once a day per patient, spread over the day (therapy/tasks.py).
    "evaluate-due-patients": {
        "task": "therapy.tasks.evaluate_due_patients",
        "schedule": timedelta(seconds=60),
        "options": {"expires": 55},
    },
    # Raw-window retention: hourly, so each run has about an hour of windows to purge.
    "purge-raw-windows": {
        "task": "monitoring.tasks.purge_raw_windows",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3000},
    },
    "sweep-unprocessed-windows": {
        "task": "monitoring.tasks.sweep_unprocessed_windows",
        "schedule": timedelta(minutes=1),
        "options": {"expires": 55},
    },
    # Model health (monitoring/health/model_health.py): stored reports, operator alerts, autonomy narrowing.
    "compute-accuracy-reports": {
        "task": "monitoring.tasks.compute_accuracy_reports",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3000},
    },
    "compute-drift-reports": {
        "task": "monitoring.tasks.compute_drift_reports",
        "schedule": timedelta(hours=1),
        "options": {"expires": 3000},
    },
    "report-pipeline": {"task": "monitoring.tasks.report_pipeline", "schedule": timedelta(minutes=15),
                        "options": {"expires": 800}},
    "report-agreement": {"task": "monitoring.tasks.report_agreement", "schedule": timedelta(hours=1),
                         "options": {"expires": 3000}},
    "report-population": {"task": "monitoring.tasks.report_population", "schedule": timedelta(hours=1),
                          "options": {"expires": 3000}},
    "sweep-unevaluated-reports": {
        "task": "therapy.tasks.sweep_unevaluated_reports",
        "schedule": timedelta(minutes=1),
        "options": {"expires": 55},
    },
}
# Each patient's titration is re-decided at least this often (s; a day by default) and on the events
# that matter (a cuff reading, a symptom report, a plan change); a crisis- or low-level estimate is
# checked at once, whatever this says.
THERAPY_EVALUATION_INTERVAL_S = env_int("THERAPY_EVALUATION_INTERVAL_S", 86_400)
# Raw ECG+PPG windows (~31 KiB each, ~9.75 MiB per patient per day) keep their signal this many days;
# then monitoring.tasks.purge_raw_windows drops the bytes (~550 KiB per patient per day stay: rows,
# SHA-256, analyses, estimates), except for the windows a suggestion rests on, kept for good
# (monitoring/ingest/retention.py); a plan looking back further moves the cut-off back with it.
RAW_WINDOW_RETENTION_DAYS = env_int("RAW_WINDOW_RETENTION_DAYS", 30)
if RAW_WINDOW_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("RAW_WINDOW_RETENTION_DAYS must be at least 1 (days).")


# --- Django REST framework ------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["patients.permissions.IsDeviceOrPerson"],
    "DEFAULT_PARSER_CLASSES": [
        "clinops.base.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # JSON only: the browsable API's HTML page needs inline script the CSP refuses, and the
    # documentation lives at /api/v1/docs/.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "clinops.base.pagination.Pagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "clinops.base.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {"device_upload": env_str("DEVICE_UPLOAD_RATE", "120/min")},
}
# Largest device upload body (bytes), before and after gzip: a 100-window batch of compact
# 30-s windows at 250 Hz is about 4 MB; JSON is about three times that.
WINDOW_UPLOAD_MAX_BYTES = env_int("WINDOW_UPLOAD_MAX_BYTES", 16 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = WINDOW_UPLOAD_MAX_BYTES
SPECTACULAR_SETTINGS = {
    # Same field names, different choices: name each enum after what it is.
    "ENUM_NAME_OVERRIDES": {
        "SuggestionStatusEnum": "therapy.models.SuggestionStatus",
        "SuggestionKindEnum": "therapy.models.SuggestionKind",
        "ReportKindEnum": "therapy.models.ReportKind",
    },
    "TITLE": "ClinOps API",
    "DESCRIPTION": (BASE_DIR / "clinops" / "api_description.md").read_text(),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "clinops.base.schema.declare_error_responses"],
    # Swagger UI and ReDoc served from the sidecar package: the docs work offline, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# --- Logging: structured (structlog), ids only, never names or signal values ---------------------
# Every line carries request_id (clinops.middleware.request_id, passed on to the tasks a request
# sends) and, in a worker, task_id and task (clinops/celery_app.py).
LOGGING = configure_logging(json=env_bool("LOG_JSON", False), level=env_str("LOG_LEVEL", "INFO"))

# --- Metrics (Prometheus; clinops/base/metrics.py) -----------------------------------------------------
# The bearer token a scraper must send to /metrics; without one the endpoint answers 404.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# One directory per machine shared by its gunicorn and Celery processes, each writing its counters
# there (prometheus_client's multiprocess mode, which reads this variable itself); /metrics adds
# them up. Unset (demo, tests): each process keeps its own, and /metrics shows the web process's.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} is not a directory.")
CLINOPS_DEMO_ALLOWED = True
