"""Settings of the demo site.

Everything that differs between machines comes from the environment:
``DATABASE_URL`` (SQLite file by default), ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG``,
``DJANGO_ALLOWED_HOSTS`` and ``TIME_ZONE``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-insecure-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_apscheduler",
    "scheduling",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The admin, the status panel and the API's error texts in the browser's language (Accept-Language)
    # or the one chosen with the django_language cookie; LANGUAGE_CODE otherwise (README: Languages).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

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

WSGI_APPLICATION = "config.wsgi.application"


def database_from_url(url: str) -> dict[str, Any]:
    """Parse ``DATABASE_URL`` and add what each backend needs to be safe for the scheduler."""
    database: dict[str, Any] = dict(dj_database_url.parse(url))
    engine = database["ENGINE"]
    if engine.endswith("sqlite3"):
        database["OPTIONS"] = {
            # Deferred transactions that later write fail at once with "database is locked"
            # when the scheduler and the web server write together; IMMEDIATE takes the write
            # lock up front and waits for it (up to "timeout" seconds) instead.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            # WAL lets readers (the admin) proceed while the scheduler writes.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        # Tests start real runscheduler processes, so the test database must be a file
        # they can open too.
        database["TEST"] = {"NAME": str(BASE_DIR / "test-db.sqlite3")}
    elif engine.endswith("mysql"):
        database.setdefault("OPTIONS", {})["charset"] = "utf8mb4"
        database["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
    return database


DATABASES = {
    "default": database_from_url(os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Demo jobs live in the project package, which is not an app, so they are named here.
SCHEDULING_MODULES = ["config.jobs"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "loggers": {
        "scheduling": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "apscheduler": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
