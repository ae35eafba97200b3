"""Settings for the Whisper service, read from the environment.

Every setting has a default that runs on one machine with nothing else
installed: SQLite and media files under ``DATA_DIR`` (``./var``), the bundled
models, and Redis at ``REDIS_URL`` when one answers. Production switches
(PostgreSQL, S3-compatible storage, ``DEBUG`` off) come from the environment
too; see ``docs/configuration.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from whisper_site.bind_host import EMBEDDED_SECRET_KEY, bind_host_is_loopback, embedded_secret_key_refusal

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str) -> str:
    """A string from the environment; an empty value counts as unset."""
    value = os.environ.get(name, "").strip()
    return value or default


def env_bool(name: str, default: bool) -> bool:
    """A boolean from the environment: 1/true/yes/on or 0/false/no/off."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean, got {value!r}")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    """An integer from the environment, at least ``minimum``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    """A float from the environment, at least ``minimum``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    """A comma-separated list from the environment."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

# The embedded SECRET_KEY and ALLOWED_HOSTS=* are for a server only this machine
# can reach. BIND_HOST is the address the web server listens on: `manage.py serve`
# (from --host) and the image's web role export it. Unset, it is 127.0.0.1, the
# address serve, runserver and gunicorn all bind without options; whoever binds
# another address by hand sets BIND_HOST or SECRET_KEY (docs/configuration.md).
# whisper_site/bind_host.py decides what is loopback, for serve too.
# Production (PRODUCTION=1, as the compose file sets) always needs SECRET_KEY.
PRODUCTION = env_bool("PRODUCTION", False)
BIND_HOST = env_str("BIND_HOST", "127.0.0.1")
LOOPBACK_ONLY = bind_host_is_loopback(BIND_HOST)
SECRET_KEY = os.environ.get("SECRET_KEY", "").strip()
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY is required when PRODUCTION=1")
    if refusal := embedded_secret_key_refusal(BIND_HOST):
        raise ImproperlyConfigured(refusal)
    SECRET_KEY = EMBEDDED_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["*"] if LOOPBACK_ONLY and not PRODUCTION else ["localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var"))).resolve()
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
MODELS_DIR = Path(env_str("MODELS_DIR", str(DATA_DIR / "models")))
MEDIA_URL = "/media/"

# Static files (the admin's and Swagger UI's), served by WhiteNoise. The image
# collects them into STATIC_ROOT at build time (Dockerfile sets it); without a
# STATIC_ROOT, as under `make run`, WhiteNoise serves them straight from the
# apps' static folders through Django's finders, so nothing is collected first.
STATIC_URL = "/static/"
_static_root = env_str("STATIC_ROOT", "")
STATIC_ROOT = Path(_static_root) if _static_root else None
WHITENOISE_USE_FINDERS = STATIC_ROOT is None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "accounts",
    "files",
    "transcriptions",
    "admin_api",
    "whisper_site",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "whisper_site.errors.PlainTextErrorMiddleware",
]

ROOT_URLCONF = "whisper_site.urls"
WSGI_APPLICATION = "whisper_site.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# SQLite under DATA_DIR unless DATABASE_URL names another database.
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}")
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker processes share the file: wait for locks instead of
    # failing, and let readers run beside the one writer.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["TEST"] = {"NAME": env_str("SQLITE_TEST_NAME", str(DATA_DIR / "test.sqlite3"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
PASSWORD_HASHERS = ["accounts.hashers.Argon2idPasswordHasher"]
# Argon2id's cost per password hashed: Django's defaults, 2 passes over 100 MiB in
# 8 lanes. Each hash records its parameters: after a change, existing hashes still
# verify and are made again at the next login.
ARGON2_TIME_COST = env_int("ARGON2_TIME_COST", 2, minimum=1)
ARGON2_MEMORY_COST = env_int("ARGON2_MEMORY_COST", 102400, minimum=8)
ARGON2_PARALLELISM = env_int("ARGON2_PARALLELISM", 8, minimum=1)
if ARGON2_MEMORY_COST < 8 * ARGON2_PARALLELISM:
    raise ImproperlyConfigured("ARGON2_MEMORY_COST must be at least 8 x ARGON2_PARALLELISM (KiB)")
AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []

CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
else:
    # File-based so that the login throttle is shared by every web process.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache"),
        }
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
S3_BUCKET = env_str("S3_BUCKET", "")
if S3_BUCKET:
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": env_str("S3_ENDPOINT_URL", "") or None,
            "access_key": env_str("S3_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("S3_SECRET_ACCESS_KEY", "") or None,
            "region_name": env_str("S3_REGION", "") or None,
            "file_overwrite": True,
            "querystring_auth": False,
        },
    }

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "accounts.authentication.SessionIdAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        # DRF's JSON parser with a nesting bound (a deep body is a 400, not a RecursionError).
        "whisper_site.parsers.BoundedJSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
    "EXCEPTION_HANDLER": "whisper_site.errors.plain_text_exception_handler",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Whisper transcription API",
    "DESCRIPTION": "Self-hosted Whisper transcription: accounts, files, transcriptions and admin.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Bodies are documented as JSON, as the reference writes them (form bodies are read
    # too); operations that take files declare their multipart body themselves.
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
}

# Request bodies: JSON and form bodies are small; file parts stream to disk.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
# Only the views that take files install a bounded, hashing handler (files.uploads);
# anywhere else a file part is refused instead of being written to disk unbounded.
FILE_UPLOAD_HANDLERS = ["files.uploads.NoFilesUploadHandler"]
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp")
os.makedirs(FILE_UPLOAD_TEMP_DIR, exist_ok=True)
DATA_UPLOAD_MAX_NUMBER_FIELDS = 100
# How long gunicorn's worker (whisper_site/gunicorn_worker.py) waits on a client:
# for a whole request head, counted from the connection or from the first byte
# of a kept-alive one; and for the next bytes of a body (the whole of a body it
# buffers, up to DATA_UPLOAD_MAX_MEMORY_SIZE; each read of a larger one, an
# upload). Past them the client gets a 408.
REQUEST_HEADER_TIMEOUT_SECONDS = env_float("REQUEST_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.1)
REQUEST_BODY_TIMEOUT_SECONDS = env_float("REQUEST_BODY_TIMEOUT_SECONDS", 30.0, minimum=0.1)
# Proxies whose X-Forwarded-For names the client (whisper_site/wsgi.py):
# addresses or networks, "*" for any. gunicorn reads the same variable for
# X-Forwarded-Proto, with the same default.
FORWARDED_ALLOW_IPS = env_list("FORWARDED_ALLOW_IPS", ["127.0.0.1", "::1"])
DATA_UPLOAD_MAX_NUMBER_FILES = env_int("UPLOAD_MAX_FILES", 20, minimum=1) + 1

# Accounts
NEW_USER_TOKEN_BALANCE = env_int("NEW_USER_TOKEN_BALANCE", 1000)
SESSION_LIFETIME_HOURS = env_int("SESSION_LIFETIME_HOURS", 24, minimum=1)
MAX_API_KEYS_PER_USER = env_int("MAX_API_KEYS_PER_USER", 100, minimum=1)
# The password guard (accounts/services/throttles.py): failed password checks are
# counted per (account, client address) and, with a higher limit, per address.
LOGIN_MAX_FAILURES = env_int("LOGIN_MAX_FAILURES", 5, minimum=1)
LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("LOGIN_MAX_FAILURES_PER_ADDRESS", 50, minimum=1)
if LOGIN_MAX_FAILURES_PER_ADDRESS < LOGIN_MAX_FAILURES:
    raise ImproperlyConfigured("LOGIN_MAX_FAILURES_PER_ADDRESS must be at least LOGIN_MAX_FAILURES")
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", 900, minimum=1)
REGISTRATIONS_PER_ADDRESS_PER_HOUR = env_int("REGISTRATIONS_PER_ADDRESS_PER_HOUR", 20, minimum=1)
# Proxies in front of the service that append to X-Forwarded-For; 0: clients connect
# directly and the header is not believed (accounts/client_address.py).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

# Files
UPLOAD_MAX_FILE_BYTES = env_int("UPLOAD_MAX_FILE_BYTES", 1024**3, minimum=1)
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 20, minimum=1)
AVATAR_MAX_BYTES = env_int("AVATAR_MAX_BYTES", 10 * 1024 * 1024, minimum=1)
# Untrusted media (files.media, files.images; docs/files.md "Bounded media"):
# picture and video frame sizes are read from the headers and refused over
# these before anything is decoded; probing and ffmpeg run in child processes
# under an address-space limit (MB), probing with at most MEDIA_THREADS threads and
# conversions with CONVERSION_FFMPEG_THREADS.
AVATAR_MAX_SIDE = env_int("AVATAR_MAX_SIDE", 4096, minimum=1)
VIDEO_MAX_WIDTH = env_int("VIDEO_MAX_WIDTH", 8192, minimum=2)
VIDEO_MAX_HEIGHT = env_int("VIDEO_MAX_HEIGHT", 8192, minimum=2)
VIDEO_MAX_PIXELS = env_int("VIDEO_MAX_PIXELS", 40_000_000, minimum=4)
MEDIA_MEMORY_LIMIT_MB = env_int("MEDIA_MEMORY_LIMIT_MB", 6144, minimum=512)
MEDIA_PROBE_MEMORY_LIMIT_MB = env_int("MEDIA_PROBE_MEMORY_LIMIT_MB", 1024, minimum=384)
MEDIA_THREADS = env_int("MEDIA_THREADS", 2, minimum=1)
# ffmpeg's -threads (decoders, filters, encoders) of each conversion; probing an upload
# keeps MEDIA_THREADS.
CONVERSION_FFMPEG_THREADS = env_int("CONVERSION_FFMPEG_THREADS", 1, minimum=1)

# Transcription
DEFAULT_MODEL = env_str("DEFAULT_MODEL", "ggml-tiny.en")
WHISPER_DEVICE = env_str("WHISPER_DEVICE", "cpu")
WHISPER_COMPUTE_TYPE = env_str("WHISPER_COMPUTE_TYPE", "int8")
WHISPER_CPU_THREADS = env_int("WHISPER_CPU_THREADS", 0)
WHISPER_VAD_FILTER = env_bool("WHISPER_VAD_FILTER", False)
WHISPER_MAX_LOADED_MODELS = env_int("WHISPER_MAX_LOADED_MODELS", 2, minimum=1)
WHISPER_MODEL_IDLE_SECONDS = env_int("WHISPER_MODEL_IDLE_SECONDS", 900, minimum=1)

# Celery: Redis is the broker. `manage.py serve` falls back to an embedded
# filesystem broker (and says so) when no Redis answers.
REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
    # Longer than the longest job, so that an unacknowledged job is not
    # handed to a second worker while the first is still on it.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 6 * 3600, minimum=60),
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = DATA_DIR / "queue"
    for _folder in ("out", "processed"):
        os.makedirs(_queue_dir / _folder, exist_ok=True)
    # The filesystem transport has no fanout exchange for remote control.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        {
            "data_folder_in": str(_queue_dir / "out"),
            "data_folder_out": str(_queue_dir / "out"),
            "processed_folder": str(_queue_dir / "processed"),
            # Its exchange table; kombu's default is ./control, in whatever folder the process runs in.
            "control_folder": str(_queue_dir / "control"),
            "store_processed": False,
        }
    )
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Processes of a transcription worker. Two (on two cores or more) decode two units at once:
# two users' jobs, or both halves of one long file (docs/transcription.md, "Processes or
# threads"); each loads its own copy of the models.
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", min(2, os.cpu_count() or 1), minimum=1)

# Logs go to stderr, one line per record: `plain` text for people, or `json`
# (one object a line, with the ids of whisper_site.logs.job_log_context as
# fields) for log collectors.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "whisper_site.logs.JsonLogFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
    "loggers": {"django.request": {"level": "ERROR"}},
}
# Celery workers keep this handler (and so LOG_FORMAT) instead of replacing the
# root logger's handlers with their own; `--loglevel` still sets their level.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Plain HTTP inside the deployment: the containers' and load balancers' health checks,
    # and Prometheus scraping the web service directly (docker-compose.yml, profile
    # metrics). A redirect would not protect its API key: the key is in the request the
    # redirect answers.
    SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$", r"^api/v1/health/ready$", r"^api/v1/admin/metrics/?$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True

# --- API documentation ---------------------------------------------------------
# /api/v1/schema is built by drf-spectacular from the ViewSets' serializers and
# extend_schema (whisper_site/openapi.py holds the shared pieces). /api/v1/docs serves
# Swagger UI from our own static files when drf-spectacular-sidecar is
# installed, so that it works where browsers cannot reach a CDN.
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "whisper_site.openapi.ApiAutoSchema"
SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"] = [
    "drf_spectacular.hooks.postprocess_schema_enums",
    "whisper_site.openapi.api_document",
]
import importlib.util  # noqa: E402  (kept inside this appended block)

if importlib.util.find_spec("drf_spectacular_sidecar") is not None:
    INSTALLED_APPS.append("drf_spectacular_sidecar")
    SPECTACULAR_SETTINGS["SWAGGER_UI_DIST"] = "SIDECAR"
    SPECTACULAR_SETTINGS["SWAGGER_UI_FAVICON_HREF"] = "SIDECAR"
    SPECTACULAR_SETTINGS["REDOC_DIST"] = "SIDECAR"

# --- Transcription jobs (transcriptions) -------------------------------------
# Queues: transcription messages go to TRANSCRIPTION_QUEUE (the default queue
# unless set), so that operators can give GPU workers their own queue (-Q).
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
TRANSCRIPTION_QUEUE = env_str("TRANSCRIPTION_QUEUE", CELERY_TASK_DEFAULT_QUEUE)
# Time limits of one inference run: soft = base + factor x audio seconds, hard =
# soft + 60 s, both kept below CELERY_VISIBILITY_TIMEOUT (docs/transcription.md).
TRANSCRIPTION_TIME_LIMIT_BASE_SECONDS = env_int("TRANSCRIPTION_TIME_LIMIT_BASE_SECONDS", 120, minimum=1)
TRANSCRIPTION_TIME_LIMIT_PER_AUDIO_SECOND = env_float("TRANSCRIPTION_TIME_LIMIT_PER_AUDIO_SECOND", 3.0, minimum=0.01)
# A job whose worker died this many times fails (and is refunded) instead of running again.
TRANSCRIPTION_MAX_ATTEMPTS = env_int("TRANSCRIPTION_MAX_ATTEMPTS", 3, minimum=1)
# Scheduling (docs/transcription.md, "Scheduling"): a file longer than
# TRANSCRIPTION_UNIT_SECONDS is cut into units of at most that much speech (groups of
# windows of up to 30 s, decoded TRANSCRIPTION_BATCH_SIZE at a time), each claimed by any
# free worker; the next unit goes to the user served the fewest audio seconds in the
# last TRANSCRIPTION_FAIRNESS_WINDOW_SECONDS.
TRANSCRIPTION_UNIT_SECONDS = env_float("TRANSCRIPTION_UNIT_SECONDS", 120.0, minimum=1.0)
TRANSCRIPTION_BATCH_SIZE = env_int("TRANSCRIPTION_BATCH_SIZE", 8, minimum=1)
# How often at most a decoding writes its jobs' progress and checks that they were not
# cancelled (docs/transcription.md, "Progress and cancelling").
TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS = env_float("TRANSCRIPTION_PROGRESS_INTERVAL_SECONDS", 1.0, minimum=0.0)
# Speakers (docs/transcription.md, "Speakers"): a job with diarize costs its price times
# DIARIZATION_PRICE_FACTOR, rounded up; two turns are one speaker while their voice
# prints' cosine similarity is at least DIARIZATION_SIMILARITY (lower: fewer speakers).
DIARIZATION_PRICE_FACTOR = env_float("DIARIZATION_PRICE_FACTOR", 1.5, minimum=0.0)
DIARIZATION_SIMILARITY = env_float("DIARIZATION_SIMILARITY", 0.55, minimum=0.0)
TRANSCRIPTION_FAIRNESS_WINDOW_SECONDS = env_int("TRANSCRIPTION_FAIRNESS_WINDOW_SECONDS", 600, minimum=1)
# Recovery of jobs left behind by a lost worker or a lost queue (requeue_stuck), run
# by Celery beat every TRANSCRIPTION_RECOVERY_INTERVAL_SECONDS; a pending job is sent
# again once its last message is TRANSCRIPTION_RECOVERY_AFTER_SECONDS old.
TRANSCRIPTION_RECOVERY_INTERVAL_SECONDS = env_int("TRANSCRIPTION_RECOVERY_INTERVAL_SECONDS", 300, minimum=10)
TRANSCRIPTION_RECOVERY_AFTER_SECONDS = env_int("TRANSCRIPTION_RECOVERY_AFTER_SECONDS", 600, minimum=0)
# A worker decoding a unit records that it is alive every TRANSCRIPTION_HEARTBEAT_SECONDS;
# a unit not heard of for TRANSCRIPTION_LOST_AFTER_SECONDS lost its worker (a machine or a
# whole worker gone: nothing redelivers its message before CELERY_VISIBILITY_TIMEOUT) and
# the recovery puts it back for another worker.
TRANSCRIPTION_HEARTBEAT_SECONDS = env_float("TRANSCRIPTION_HEARTBEAT_SECONDS", 15.0, minimum=0.1)
TRANSCRIPTION_LOST_AFTER_SECONDS = env_float("TRANSCRIPTION_LOST_AFTER_SECONDS", 120.0, minimum=1.0)
if TRANSCRIPTION_LOST_AFTER_SECONDS < 3 * TRANSCRIPTION_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        "TRANSCRIPTION_LOST_AFTER_SECONDS must be at least 3 x TRANSCRIPTION_HEARTBEAT_SECONDS, got "
        f"{TRANSCRIPTION_LOST_AFTER_SECONDS:g} and {TRANSCRIPTION_HEARTBEAT_SECONDS:g}"
    )
# How long a request to the OpenAI-compatible routes (POST /audio/transcriptions and
# /audio/translations) waits for its job before it answers 504, naming the job, which goes
# on. Under the compose file's nginx (proxy_read_timeout 120 s, deploy/nginx.conf.template)
# with 30 s to spare for storing the upload (docs/openai.md).
OPENAI_WAIT_SECONDS = env_float("OPENAI_WAIT_SECONDS", 90.0, minimum=0.0)
CELERY_BEAT_SCHEDULE = {
    "transcriptions-requeue-stuck": {
        "task": "transcriptions.requeue_stuck",
        "schedule": float(TRANSCRIPTION_RECOVERY_INTERVAL_SECONDS),
        # On the default queue: quick database work, not to wait behind transcriptions.
        # A run that waited longer than the interval is replaced by the next one.
        "options": {"expires": float(TRANSCRIPTION_RECOVERY_INTERVAL_SECONDS)},
    },
}

# --- Conversions (files) -------------------------------------------------------
# Both phases of a conversion (the WAV, then the MP3/MP4) and their re-queues go to
# CONVERSION_QUEUE, never to the transcription queue: a conversion worker (`manage.py
# serve` starts one, compose runs `converter`) takes them, so that no transcription
# waits behind a video's encode. A worker that consumes CONVERSION_QUEUE and not
# TRANSCRIPTION_QUEUE runs its pool processes, and so their ffmpeg, at nice
# CONVERSION_NICE (files/worker.py); ffmpeg's threads are CONVERSION_FFMPEG_THREADS
# (above). CONVERSION_QUEUE set to the transcription queue puts everything back on one
# queue (and `manage.py serve` on one worker).
CONVERSION_QUEUE = env_str("CONVERSION_QUEUE", "conversion")
# Two processes: one may spend minutes on a video's encode while the other makes the
# WAVs that transcriptions wait for (files/services/conversion.py, priorities).
CONVERSION_WORKER_CONCURRENCY = env_int("CONVERSION_WORKER_CONCURRENCY", 2, minimum=1)
CONVERSION_NICE = env_int("CONVERSION_NICE", 10, minimum=0)
if CONVERSION_NICE > 19:
    raise ImproperlyConfigured(f"CONVERSION_NICE must be at most 19, got {CONVERSION_NICE}")

# --- Quotas per account and the longest media (files, transcriptions) -----------
# What one account may hold and queue (docs/files.md "Duration and quotas",
# docs/transcription.md "POST /transcribe"):
# files listed by GET /file, the bytes stored for them (each file's size plus its WAV),
# and transcriptions pending or processing at once. Past a quota an upload part is
# refused (quota_exceeded) and POST /transcribe is a 429, before anything is stored.
USER_FILE_QUOTA = env_int("USER_FILE_QUOTA", 1000, minimum=1)
USER_STORAGE_QUOTA_BYTES = env_int("USER_STORAGE_QUOTA_BYTES", 10 * 1024**3, minimum=1)
USER_PENDING_JOB_QUOTA = env_int("USER_PENDING_JOB_QUOTA", 100, minimum=1)
# Longest audio or video accepted, in seconds: a longer upload is refused when probed
# (file_too_long), and the WAV conversion stops at this plus one second, so that a
# file whose header claims less fails instead of being converted (and billed) in part.
MAX_MEDIA_DURATION_SECONDS = env_int("MAX_MEDIA_DURATION_SECONDS", 6 * 3600, minimum=1)

# --- Webhooks (webhooks; docs/webhooks.md) --------------------------------------
# Standard Webhooks deliveries of job events (transcription.completed, .failed,
# .cancelled) to the URLs users register at /user/webhooks. Deliveries go to
# WEBHOOK_QUEUE, never to the transcription queue: a slow receiver holds a webhook
# worker, not a transcription worker. Some worker must consume it.
INSTALLED_APPS.append("webhooks")
WEBHOOK_QUEUE = env_str("WEBHOOK_QUEUE", "webhooks")
WEBHOOK_MAX_ENDPOINTS_PER_USER = env_int("WEBHOOK_MAX_ENDPOINTS_PER_USER", 10, minimum=1)
# One attempt's deadline (connect, send, answer): a 2xx within it is a success.
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# Of an answer, at most this many bytes of a failure's body are read (for the delivery log).
WEBHOOK_RESPONSE_MAX_BYTES = env_int("WEBHOOK_RESPONSE_MAX_BYTES", 4096)
# Off: a URL whose host resolves to a loopback, private, link-local, multicast or
# reserved address is refused, at registration and before each delivery (SSRF guard).
# On: for development and tests, receivers on this machine or the private network.
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env_bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", False)
# Recovery of deliveries whose message was lost (broker restart, a worker killed mid-
# attempt): every WEBHOOK_RECOVERY_INTERVAL_SECONDS, Celery beat re-sends those overdue by
# WEBHOOK_RECOVERY_AFTER_SECONDS.
WEBHOOK_RECOVERY_INTERVAL_SECONDS = env_int("WEBHOOK_RECOVERY_INTERVAL_SECONDS", 300, minimum=10)
WEBHOOK_RECOVERY_AFTER_SECONDS = env_int("WEBHOOK_RECOVERY_AFTER_SECONDS", 120, minimum=0)
CELERY_BEAT_SCHEDULE["webhooks-requeue-due"] = {
    "task": "webhooks.requeue_due",
    "schedule": float(WEBHOOK_RECOVERY_INTERVAL_SECONDS),
    # On the default queue, as the transcriptions' recovery: quick database work.
    "options": {"expires": float(WEBHOOK_RECOVERY_INTERVAL_SECONDS)},
}

# --- Metrics (admin_api; docs/admin.md, "Metrics") ---------------------------------
# GET /admin/metrics derives its figures from the database at scrape time. Finished
# jobs, uploads and webhook deliveries count over this window (by creation time);
# pending and processing jobs and pending deliveries count whatever their age.
METRICS_WINDOW_SECONDS = env_int("METRICS_WINDOW_SECONDS", 3600, minimum=60)

# --- Readiness and worker heartbeats (health; docs/production.md, "Readiness") ------
# GET /api/v1/health/ready answers 200 when the database and the broker answer within
# READINESS_TIMEOUT_SECONDS and each queue the service sends work to has a live consumer:
# a worker consuming it whose heartbeat (a database row, renewed every
# WORKER_HEARTBEAT_INTERVAL_SECONDS) is at most WORKER_HEARTBEAT_STALE_SECONDS old.
INSTALLED_APPS.append("health")
WORKER_HEARTBEAT_INTERVAL_SECONDS = env_float("WORKER_HEARTBEAT_INTERVAL_SECONDS", 5.0, minimum=0.1)
WORKER_HEARTBEAT_STALE_SECONDS = env_float("WORKER_HEARTBEAT_STALE_SECONDS", 30.0, minimum=1.0)
if WORKER_HEARTBEAT_STALE_SECONDS <= WORKER_HEARTBEAT_INTERVAL_SECONDS:
    raise ImproperlyConfigured("WORKER_HEARTBEAT_STALE_SECONDS must be longer than WORKER_HEARTBEAT_INTERVAL_SECONDS")
READINESS_TIMEOUT_SECONDS = env_float("READINESS_TIMEOUT_SECONDS", 2.0, minimum=0.1)
