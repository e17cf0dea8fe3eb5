"""Who may read the metrics: ``SCHEDULING_METRICS_ACCESS``, read and applied to a request.

One setting, three kinds of reader: Prometheus with an API token (the API's own authentication,
``api.authenticate``), people logged in as staff, or whoever connects from listed addresses.
A refusal says only that the request was refused, never which rule it failed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse

from scheduling import api
from scheduling.conf import settings

TOKEN = "token"  # noqa: S105 - the name of a rule, not a secret
STAFF = "staff"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Access:
    """A readable ``SCHEDULING_METRICS_ACCESS``: ``kind`` is "token", "staff" or "addresses"."""

    kind: str
    networks: tuple[Network, ...] = ()


def parse(value: object) -> Access | None:
    """The rule ``value`` states; None when the metrics are off.

    :raises ValueError: naming what is wrong, for anything else.
    """
    if value is None:
        return None
    if value in (TOKEN, STAFF):
        return Access(str(value))
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{value!r} is neither 'token', 'staff' nor a list of addresses and networks")
    networks = []
    for entry in value:
        try:
            # strict=False: "10.1.2.3/8" means the network it lies in, as people write it.
            networks.append(ipaddress.ip_network(entry, strict=False))
        except (TypeError, ValueError):
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    if not networks:
        raise ValueError("an empty list of addresses lets nobody in; use None to turn the metrics off")
    return Access("addresses", tuple(networks))


def configured() -> Access | None:
    return parse(settings.METRICS_ACCESS)


def refusal(request: HttpRequest, access: Access) -> HttpResponse | None:
    """None when the request may read the metrics; else the 401 or 403 to answer."""
    if access.kind == "addresses":
        return None if _from(request, access.networks) else _refused(403, "Forbidden")
    try:
        user = api.authenticate(request)
    except api.ApiError:
        response = _refused(401, "Authentication required")
        response["WWW-Authenticate"] = 'Bearer realm="scheduling"'
        return response
    allowed = user.is_staff if access.kind == STAFF else user.has_perm("scheduling.view_job")
    return None if allowed else _refused(403, "Forbidden")


def _from(request: HttpRequest, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    # An IPv4 client of a dual-stack server shows as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _refused(status: int, text: str) -> HttpResponse:
    return HttpResponse(f"{text}\n", status=status, content_type="text/plain; charset=utf-8")
