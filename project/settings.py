"""Django settings for the sample project.

Every value that differs between development and production is read from the
environment, with defaults that are safe for local development only.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    """Read a boolean from the environment ("1", "true", "yes", "on")."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: list[str]) -> list[str]:
    """Read a comma separated list from the environment."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "development-only-secret-key-do-not-use-in-production"
)
DEBUG = _env_bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "channels",
    "chat",
    "worker",
]

MIDDLEWARE = [
    "worker.middleware.StatisticsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB_PATH", str(BASE_DIR / "db.sqlite3")),
        "OPTIONS": {"timeout": 20},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "asgi")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "streams_layer.RedisStreamsChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": CHANNEL_LAYER_PREFIX,
            # A chat socket's own channel: a burst in a busy room (many
            # members, each allowed CHAT_RATE_LIMIT_BURST at once) must not
            # overflow a member whose consumer is a moment behind.
            "channel_capacity": {"specific.*": 1_000},
        },
    },
    # Statistics wait for the worker through a restart or a deploy: a day,
    # not the default minute after which a message is dropped undelivered.
    "statistics": {
        "BACKEND": "streams_layer.RedisStreamsChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": CHANNEL_LAYER_PREFIX,
            "expiry": int(os.environ.get("STATISTIC_EXPIRY", "86400")),
            # The worker may fall behind a burst of requests; let statistics queue up.
            "channel_capacity": {"statistic": 10_000},
        },
    },
}

# Chat: per-connection token bucket (messages per second, burst size).
CHAT_RATE_LIMIT_PER_SECOND = float(os.environ.get("CHAT_RATE_LIMIT_PER_SECOND", "5"))
CHAT_RATE_LIMIT_BURST = int(os.environ.get("CHAT_RATE_LIMIT_BURST", "10"))
CHAT_HISTORY_LIMIT = 50
CHAT_MAX_MESSAGE_BYTES = 4096

# Statistics middleware: channel name and the time budget per request.
STATISTIC_CHANNEL = "statistic"
STATISTIC_CHANNEL_LAYER = "statistics"
STATISTIC_SEND_TIMEOUT = float(os.environ.get("STATISTIC_SEND_TIMEOUT", "1.0"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
}
