"""API tokens: created with ``manage.py scheduling token create``, sent as ``Authorization: Bearer``."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.utils import timezone

from scheduling.models import ApiToken

KEY_PREFIX = "sch_"
SHOWN_PREFIX_LENGTH = 12


def create(user: Any, name: str) -> tuple[ApiToken, str]:
    """A new token for ``user``, with its key: shown to the caller once, never stored."""
    token = ApiToken(user=user, name=name)
    return token, issue(token)


def issue(token: ApiToken) -> str:
    """Give ``token`` a new random key and save it; returns the key."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    token.prefix = key[:SHOWN_PREFIX_LENGTH]
    token.key_hash = _hash(key)
    token.key = key
    token.save()
    return key


def user_for(key: str) -> Any | None:
    """The active user a key belongs to, or None for an unknown, revoked or deactivated one."""
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(key)).first()
    if token is None or not token.user.is_active:
        return None
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
