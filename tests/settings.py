"""Test settings: the demo site's, with test jobs instead of the demo jobs and faster beats."""

import os

from config.settings import *  # noqa: F403

# Runner processes started by tests import the modules named here (comma-separated).
SCHEDULING_MODULES = [name for name in os.environ.get("SCHEDULING_TEST_MODULES", "").split(",") if name]
SCHEDULING_HEARTBEAT_INTERVAL = 1.0
SCHEDULING_HEARTBEAT_TIMEOUT = 5.0
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SCHEDULING_EMBEDDED = os.environ.get("SCHEDULING_TEST_EMBEDDED") == "1"
SCHEDULING_SHUTDOWN_TIMEOUT = 5.0
