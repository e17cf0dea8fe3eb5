"""Demo set-up helpers used by `make demo`."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model


def ensure_admin(username: str = "admin") -> None:
    """Create (or reset) a local superuser with a fresh password and print how to log in."""
    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(
        username=username, defaults={"is_staff": True, "is_superuser": True}
    )
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    print(f"Admin: http://127.0.0.1:8000/admin/  user: {username}  password: {password}")
