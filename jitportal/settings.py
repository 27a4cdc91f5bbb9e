"""jitportal settings, read from the environment (12-factor).

Secure by default: DEBUG is off unless ``DJANGO_DEBUG=1``; without it a
missing secret stops the start with a message naming the variable, and
cookies, HSTS and HTTPS redirects are strict. Development defaults live in
``.env.example``, which the Makefile loads.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from kombu import Queue

from jitportal.env import derive_dev_key, env_bool, env_int, env_list, env_required, env_str
from jitportal.logs import log_format, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("JITPORTAL_DATA_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)

if DEBUG:
    # Development only: a fixed key so `make run` works with nothing set.
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "dev-insecure-jitportal-key-do-not-use-in-production")
else:
    SECRET_KEY = env_required("DJANGO_SECRET_KEY")

# Fernet keys for secrets at rest, newest first (see jitportal/crypto.py).
if DEBUG:
    JITPORTAL_ENCRYPTION_KEYS = env_list("JITPORTAL_ENCRYPTION_KEYS", [derive_dev_key(SECRET_KEY, "encryption")])
else:
    JITPORTAL_ENCRYPTION_KEYS = env_list("JITPORTAL_ENCRYPTION_KEYS") or [env_required("JITPORTAL_ENCRYPTION_KEYS")]

# The audit log's MAC key and checkpoint signing key (Ed25519, base64 of the
# 32 raw bytes); neither ever enters the database (see audit/services.py).
if DEBUG:
    JITPORTAL_AUDIT_KEY = env_str("JITPORTAL_AUDIT_KEY", derive_dev_key(SECRET_KEY, "audit"))
    JITPORTAL_AUDIT_SIGNING_KEY = env_str("JITPORTAL_AUDIT_SIGNING_KEY", derive_dev_key(SECRET_KEY, "audit-signing"))
else:
    JITPORTAL_AUDIT_KEY = env_required("JITPORTAL_AUDIT_KEY")
    JITPORTAL_AUDIT_SIGNING_KEY = env_required("JITPORTAL_AUDIT_SIGNING_KEY")
# The public half, for a verifier that holds no signing key; derived from the signing key when unset.
JITPORTAL_AUDIT_VERIFY_KEY = env_str("JITPORTAL_AUDIT_VERIFY_KEY", "")

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# Public base URL used in links sent out of the portal (notifications, CLI).
JITPORTAL_BASE_URL = env_str("JITPORTAL_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
# Passkeys are bound to a host name (an IP address is not one: use localhost in
# development) and are accepted only from the portal's own origin.
JITPORTAL_WEBAUTHN_RP_ID = env_str("JITPORTAL_WEBAUTHN_RP_ID", urlsplit(JITPORTAL_BASE_URL).hostname or "localhost")
JITPORTAL_WEBAUTHN_ORIGIN = env_str("JITPORTAL_WEBAUTHN_ORIGIN", JITPORTAL_BASE_URL)
# Staff and superusers verify a second factor before the admin opens.
JITPORTAL_REQUIRE_MFA_FOR_STAFF = env_bool("JITPORTAL_REQUIRE_MFA_FOR_STAFF", False)

INSTALLED_APPS = [
    # django.contrib.admin, with the portal's site as the default one.
    "jitportal.apps.PortalAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "audit",
    "inventory",
    "accounts",
    "requests_app",
]

MIDDLEWARE = [
    "jitportal.middleware.RequestIdMiddleware",
    # Next to first, so the latency it records is the whole answer's.
    "jitportal.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "jitportal.middleware.RejectNulMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a locked-out sign-in into a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "jitportal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "jitportal.wsgi.application"

DATA_DIR.mkdir(parents=True, exist_ok=True)
# The hottest statements (the access check's read, a certificate's write) run as prepared statements on
# PostgreSQL (``jitportal.statements.execute_prepared``); off behind a pooler that cannot keep them.
JITPORTAL_DB_PREPARED_STATEMENTS = env_bool("JITPORTAL_DB_PREPARED_STATEMENTS", True)
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        # IMMEDIATE takes the write lock at BEGIN, so concurrent writers queue
        # instead of failing with "database is locked" half-way through.
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Short OLTP queries: JIT compilation costs more than it saves (the
    # label-selector searches would otherwise spend ~10 ms compiling).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c jit=off")
    if JITPORTAL_DB_PREPARED_STATEMENTS:
        # Lets psycopg prepare what ``execute_prepared`` asks it to; Django's own queries bind on the
        # client and are never prepared, whatever this says.
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = 5

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# The lockout backend goes first: it refuses a locked-out username or client
# before any password is checked. Passwords are checked by accounts.backends,
# which honours JITPORTAL_PASSWORD_LOGIN; the OIDC backend never checks a
# password and only keeps the sessions its callback signed in.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.PasswordBackend",
    "accounts.backends.OidcBackend",
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
# Times in the admin carry their zone (jitportal/formats/en/formats.py).
FORMAT_MODULE_PATH = ["jitportal.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The portal's own stylesheet and script (jitportal is not an app, so not found by APP_DIRS).
STATICFILES_DIRS = [BASE_DIR / "jitportal" / "static"]
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

_cache_url = env_str("CACHE_URL")
if _cache_url:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Security -------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    # Probes and scrapers often speak plain HTTP to the process itself.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Preloading is a promise to browsers that is slow to take back (months to
    # leave the list), so it is the operator's explicit choice; without it the
    # deploy check's reminder (W021) is answered here, deliberately.
    SECURE_HSTS_PRELOAD = env_bool("JITPORTAL_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    if env_bool("DJANGO_BEHIND_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# How many proxies of ours append to X-Forwarded-For; 0: the header is not
# trusted and the client is the connection's peer (jitportal/net.py).
JITPORTAL_TRUSTED_PROXIES = env_int("JITPORTAL_TRUSTED_PROXIES", 0)

# --- Sign-in: OpenID Connect and passwords ------------------------------------
# SSO is on when the issuer, client id and secret are all set (accounts/oidc.py);
# `manage.py check --deploy` names what is missing when only some are.
JITPORTAL_OIDC_ISSUER = (env_str("JITPORTAL_OIDC_ISSUER", "") or "").rstrip("/")
JITPORTAL_OIDC_CLIENT_ID = env_str("JITPORTAL_OIDC_CLIENT_ID") or ""
JITPORTAL_OIDC_CLIENT_SECRET = env_str("JITPORTAL_OIDC_CLIENT_SECRET") or ""
JITPORTAL_OIDC_SCOPES = env_str("JITPORTAL_OIDC_SCOPES") or "openid profile email groups"
JITPORTAL_OIDC_USERNAME_CLAIM = env_str("JITPORTAL_OIDC_USERNAME_CLAIM") or "preferred_username"
JITPORTAL_OIDC_GROUPS_CLAIM = env_str("JITPORTAL_OIDC_GROUPS_CLAIM") or "groups"
JITPORTAL_OIDC_BUTTON_LABEL = env_str("JITPORTAL_OIDC_BUTTON_LABEL") or "Sign in with SSO"
JITPORTAL_OIDC_TIMEOUT_SECONDS = env_int("JITPORTAL_OIDC_TIMEOUT_SECONDS", 10)
# Off: no password sign-in on the portal, the admin or the token endpoint, except
# for the local superusers named in JITPORTAL_BREAK_GLASS_LOGIN (each use audited).
JITPORTAL_PASSWORD_LOGIN = env_bool("JITPORTAL_PASSWORD_LOGIN", True)
JITPORTAL_BREAK_GLASS_LOGIN = env_list("JITPORTAL_BREAK_GLASS_LOGIN", [])

# --- Sign-in lockout (django-axes) ------------------------------------------
# Every password path (sign-in form, admin sign-in, token endpoint): 5
# failures in 15 minutes for a username, or from a client address, refuse
# that username / address for 15 minutes.
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Counters live in the database, which every gunicorn worker and host shares
# and which a cache eviction or restart cannot wipe (an attacker filling a
# cache would otherwise reset them); the cost is a few queries per failure.
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_CLIENT_IP_CALLABLE = "jitportal.net.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
# A success must not clear the client's count: one valid account would
# otherwise reset it between guesses at other accounts.
AXES_RESET_ON_SUCCESS = False
# Attempts while locked are refused without prolonging the lockout, so it
# ends 15 minutes after the failure that caused it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Successful sign-ins are not logged twice: the audit log has what matters.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False

# --- API ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PARSER_CLASSES": [
        "jitportal.parsers.JSONParser",
        "jitportal.parsers.FormParser",
        "jitportal.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "jitportal.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "jitportal.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {"token": env_str("JITPORTAL_TOKEN_THROTTLE", "20/min")},
    "NUM_PROXIES": JITPORTAL_TRUSTED_PROXIES,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
REST_KNOX = {
    "TOKEN_TTL": timedelta(seconds=env_int("JITPORTAL_TOKEN_TTL_SECONDS", 12 * 3600)),
    "TOKEN_PREFIX": "jit_",
    "AUTH_HEADER_PREFIX": "Token",
}
KNOX_TOKEN_MODEL = "accounts.ApiToken"  # noqa: S105 - a model label, not a secret
# knox's migrations would create its own token table although the model is
# swapped for accounts.ApiToken; without migrations Django creates nothing for
# a swapped model.
MIGRATION_MODULES = {"knox": None}

SPECTACULAR_SETTINGS = {
    "TITLE": "jitportal API",
    "DESCRIPTION": "Just-in-time privileged access: requests, reviews, grants, access checks.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    # Swagger UI served from our own static files: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Two inputs are named "decision" (a review's and a post-review's): each enum keeps a name of its own.
    "ENUM_NAME_OVERRIDES": {
        "DecisionEnum": "requests_app.models.Review.Decision",
        "PostReviewDecisionEnum": ["ratify", "reject"],
    },
}

# Text by default; JITPORTAL_LOG_FORMAT=json makes each line one JSON object with
# the request id (jitportal/logs.py; Celery and gunicorn follow the same variable).
JITPORTAL_LOG_FORMAT = log_format(env_str("JITPORTAL_LOG_FORMAT"))
LOGGING = logging_config(log_format=JITPORTAL_LOG_FORMAT, level=env_str("LOG_LEVEL", "INFO") or "INFO")

# --- Domain limits (DESIGN.md) ---------------------------------------------
JITPORTAL_MAX_RESOURCES_PER_REQUEST = 300
JITPORTAL_MAX_START_AHEAD = timedelta(days=7)

# --- Background work (Celery) and notifications ----------------------------
# Without CELERY_BROKER_URL the broker is kombu's filesystem transport under
# DATA_DIR, so `make run` needs no server; production names Redis or RabbitMQ.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost//")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = DATA_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Producers and consumers share one folder: a message written is a message read.
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
    }
# Sweeps and deliveries have queues of their own so a backlog of deliveries
# (a hung receiver, a burst of events) never delays a sweep: production runs
# one worker per queue (`-Q sweeps`, `-Q deliveries`); a worker started
# without -Q consumes every queue below. Several deployments (or test runs)
# may share one Redis by setting JITPORTAL_CELERY_QUEUE, which prefixes the names.
_queue_prefix = env_str("JITPORTAL_CELERY_QUEUE", "")
JITPORTAL_SWEEP_QUEUE = f"{_queue_prefix}-sweeps" if _queue_prefix else "sweeps"
JITPORTAL_DELIVERY_QUEUE = f"{_queue_prefix}-deliveries" if _queue_prefix else "deliveries"
CELERY_TASK_DEFAULT_QUEUE = _queue_prefix or "celery"
CELERY_TASK_QUEUES = [
    Queue(name, routing_key=name)
    for name in (JITPORTAL_SWEEP_QUEUE, JITPORTAL_DELIVERY_QUEUE, CELERY_TASK_DEFAULT_QUEUE)
]
CELERY_TASK_ROUTES = {
    "requests_app.tasks.deliver_notification": {"queue": JITPORTAL_DELIVERY_QUEUE},
    "requests_app.tasks.deliver_notifications": {"queue": JITPORTAL_DELIVERY_QUEUE},
    "requests_app.tasks.*": {"queue": JITPORTAL_SWEEP_QUEUE},
    "audit.tasks.*": {"queue": JITPORTAL_SWEEP_QUEUE},
    "accounts.tasks.*": {"queue": JITPORTAL_SWEEP_QUEUE},
}
# A web request publishes after commit; the outbox row already guarantees the
# message, so a broker that refuses or never answers must cost it a bounded
# wait (not kombu's retries: 6 s refused, forever hung) and the retry sweep
# hands the row out later.
_BROKER_TIMEOUT_SECONDS = 0.5
CELERY_BROKER_CONNECTION_TIMEOUT = _BROKER_TIMEOUT_SECONDS
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_timeout": _BROKER_TIMEOUT_SECONDS,
        "socket_connect_timeout": _BROKER_TIMEOUT_SECONDS,
        "max_retries": 0,
    }
elif CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "read_timeout": _BROKER_TIMEOUT_SECONDS,
        "write_timeout": _BROKER_TIMEOUT_SECONDS,
        "max_retries": 0,
    }
# Tasks report through the database (grants, outbox rows), never through results.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

JITPORTAL_SWEEP_INTERVAL_SECONDS = env_int("JITPORTAL_SWEEP_INTERVAL_SECONDS", 30)
JITPORTAL_SWEEP_BATCH_SIZE = env_int("JITPORTAL_SWEEP_BATCH_SIZE", 500)
JITPORTAL_REMINDER_BEFORE = timedelta(seconds=env_int("JITPORTAL_REMINDER_BEFORE_SECONDS", 600))
# A break-glass request still awaiting its review is announced again this long after the last time.
JITPORTAL_POST_REVIEW_REANNOUNCE = timedelta(seconds=env_int("JITPORTAL_POST_REVIEW_REANNOUNCE_SECONDS", 86400))
JITPORTAL_NOTIFICATION_MAX_ATTEMPTS = env_int("JITPORTAL_NOTIFICATION_MAX_ATTEMPTS", 10)
JITPORTAL_NOTIFICATION_BACKOFF_SECONDS = env_int("JITPORTAL_NOTIFICATION_BACKOFF_SECONDS", 30)
JITPORTAL_NOTIFICATION_BACKOFF_MAX_SECONDS = env_int("JITPORTAL_NOTIFICATION_BACKOFF_MAX_SECONDS", 3600)
JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS = env_int("JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS", 10)
# A claimed delivery is another worker's to retry once this passes, so it must
# outlast the slowest attempt by a margin or a slow receiver gets it twice.
JITPORTAL_NOTIFICATION_LEASE_SECONDS = max(
    env_int("JITPORTAL_NOTIFICATION_LEASE_SECONDS", 120), 3 * JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS
)

# Events are sealed into the MAC chain by beat after commit: the unsealed
# window is this interval plus worker lag; verification fails past the bound.
JITPORTAL_AUDIT_SEAL_SECONDS = env_int("JITPORTAL_AUDIT_SEAL_SECONDS", 5)
JITPORTAL_AUDIT_UNSEALED_MAX_SECONDS = env_int("JITPORTAL_AUDIT_UNSEALED_MAX_SECONDS", 600)
JITPORTAL_AUDIT_CHECKPOINT_SECONDS = env_int("JITPORTAL_AUDIT_CHECKPOINT_SECONDS", 300)
JITPORTAL_AUDIT_CHECKPOINT_FILE = env_str("JITPORTAL_AUDIT_CHECKPOINT_FILE", str(DATA_DIR / "audit-checkpoints.jsonl"))
JITPORTAL_AUDIT_CHECKPOINT_WEBHOOK = env_str("JITPORTAL_AUDIT_CHECKPOINT_WEBHOOK", "")
JITPORTAL_AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT = env_int("JITPORTAL_AUDIT_CHECKPOINT_WEBHOOK_TIMEOUT", 10)

_sweep = JITPORTAL_SWEEP_INTERVAL_SECONDS
# Each entry expires before the next run is sent, so runs missed while no
# worker listened are dropped instead of piling up.
_sweep_options = {"expires": _sweep * 0.9}
CELERY_BEAT_SCHEDULE = {
    "expire-grants": {"task": "requests_app.tasks.expire_grants", "schedule": _sweep, "options": _sweep_options},
    "expire-pending-requests": {
        "task": "requests_app.tasks.expire_pending_requests",
        "schedule": _sweep,
        "options": _sweep_options,
    },
    "remind-expiring-grants": {
        "task": "requests_app.tasks.remind_expiring_grants",
        "schedule": _sweep,
        "options": _sweep_options,
    },
    # Checked every interval (an indexed read of the few awaiting review); each is announced once a day.
    "announce-post-reviews": {
        "task": "requests_app.tasks.announce_post_reviews",
        "schedule": _sweep,
        "options": _sweep_options,
    },
    "retry-notifications": {
        "task": "requests_app.tasks.retry_notifications",
        "schedule": _sweep,
        "options": _sweep_options,
    },
    "delete-expired-tokens": {
        "task": "accounts.tasks.delete_expired_tokens",
        "schedule": _sweep,
        "options": _sweep_options,
    },
    "seal-audit": {
        "task": "audit.tasks.seal_audit",
        "schedule": JITPORTAL_AUDIT_SEAL_SECONDS,
        "options": {"expires": JITPORTAL_AUDIT_SEAL_SECONDS * 0.9},
    },
    "checkpoint-audit": {
        "task": "audit.tasks.checkpoint_audit",
        "schedule": JITPORTAL_AUDIT_CHECKPOINT_SECONDS,
        "options": {"expires": JITPORTAL_AUDIT_CHECKPOINT_SECONDS * 0.9},
    },
}

EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = JITPORTAL_NOTIFICATION_TIMEOUT_SECONDS
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "jitportal <jitportal@localhost>")
