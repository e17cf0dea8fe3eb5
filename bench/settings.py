"""Settings of the benchmark's scheduler and admin processes.

The demo site's settings with the database from ``BENCH_DATABASE_URL``. ``BENCH_SQLITE_DEFAULTS=1``
gives SQLite Django's own defaults (deferred transactions, rollback journal), the setup the stock
pattern's blog posts use, for the "database is locked" row; otherwise SQLite gets the project's
IMMEDIATE/WAL options, so both systems are measured on the same footing. ``BENCH_CHAOS_TIMINGS=1``
gives the scheduler the chaos suite's lease, poll and heartbeat timings (tests/settings_chaos.py),
for its runs with the faults off.
"""

import os

from config.settings import *  # noqa: F403
from config.settings import database_from_url

DEBUG = False
ALLOWED_HOSTS = ["*"]
DATABASES = {"default": database_from_url(os.environ["BENCH_DATABASE_URL"])}
if os.environ.get("BENCH_SQLITE_DEFAULTS") == "1" and DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {}
if os.environ.get("BENCH_CHAOS_TIMINGS") == "1":
    SCHEDULING_LEASE_DURATION = 3.0
    SCHEDULING_LEASE_RENEW_INTERVAL = 0.5
    SCHEDULING_POLL_INTERVAL = 0.25
    SCHEDULING_HEARTBEAT_INTERVAL = 0.5
    SCHEDULING_HEARTBEAT_TIMEOUT = 5.0
    SCHEDULING_DATABASE_RETRY_MAX = 2.0
# Our jobs for the run, declared from the environment (bench/declared.py); the demo's stay out.
SCHEDULING_MODULES = ["bench.declared"]
ROOT_URLCONF = "bench.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "scheduling": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "apscheduler": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "django_apscheduler": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}
