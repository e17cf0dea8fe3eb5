"""API tokens: created with ``manage.py scheduling token create``, sent as ``Authorization: Bearer``."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from scheduling.models import ApiToken

KEY_PREFIX = "sch_"
SHOWN_PREFIX_LENGTH = 12


class TokenError(ValueError):
    """A token that must not be created; the message names the user or the limit."""


def create(user: Any, name: str) -> tuple[ApiToken, str]:
    """A new token for ``user``, with its key: shown to the caller once, never stored.

    :raises TokenError: for an inactive user (the key would never work: ``user_for`` refuses it),
        or a name that is empty or longer than its column.
    """
    if not user.is_active:
        raise TokenError(
            _("User %(user)s is inactive: a token for them would be refused; activate the user first")
            % {"user": user.get_username()}
        )
    limit = ApiToken._meta.get_field("name").max_length
    if not name.strip():
        raise TokenError(_("A token needs a name (what uses it, e.g. 'deploy script')"))
    if limit is not None and len(name) > limit:
        raise TokenError(
            _("A token's name is at most %(limit)d characters, not %(length)d")
            % {"limit": limit, "length": len(name)}
        )
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
