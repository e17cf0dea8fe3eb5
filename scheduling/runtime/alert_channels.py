"""Where an alert goes: Django's mail (``mail_admins`` or an address), a JSON webhook (or a
Slack-compatible one, ``slack:<url>``), or Python logging (``log``).

Each send either returns or raises with the reason; the caller records it and tries again later.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from django.conf import settings as django_settings
from django.core.mail import mail_admins, send_mail

from scheduling.models import Alert
from scheduling.policy import shown_destination

logger = logging.getLogger("scheduling.alerts")

WEBHOOK_TIMEOUT = 10.0  # seconds; a receiver slower than that is tried again later


def send(alert: Alert, destination: str) -> None:
    """Deliver ``alert`` to ``destination``; raises with the reason when it could not."""
    subject = f"[scheduling] {alert.get_rule_display()}: {alert.job_id}"
    if destination == "log":
        level = logging.INFO if alert.rule == Alert.Rule.RECOVERED else logging.ERROR
        logger.log(level, "%s: %s", subject, alert.message)
    elif destination == "mail_admins":
        if not django_settings.ADMINS:
            raise RuntimeError("settings.ADMINS is empty: mail_admins has nobody to write to")
        mail_admins(subject, body(alert), fail_silently=False)
    elif destination.startswith(("http://", "https://")):
        post(destination, payload(alert))
    elif destination.startswith("slack:"):
        post(destination.removeprefix("slack:"), {"text": f"*{subject}*\n{alert.message}"})
    else:
        send_mail(subject, body(alert), None, [destination], fail_silently=False)


def body(alert: Alert) -> str:
    run = f"\nRun: {alert.execution_id}" if alert.execution_id else ""
    raised = f"{alert.raised_at:%Y-%m-%d %H:%M:%S %Z}"
    return f"{alert.message}\n\nJob: {alert.job_id}\nRule: {alert.rule}{run}\nRaised at: {raised}\n"


def payload(alert: Alert) -> dict[str, object]:
    """The JSON body of a webhook delivery."""
    return {
        "alert": alert.pk,
        "job": alert.job_id,
        "rule": alert.rule,
        "message": alert.message,
        "run": alert.execution_id,
        "raised_at": alert.raised_at.isoformat(),
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook is posted where it was configured, never where its answer points."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post(url: str, data: dict[str, object]) -> None:
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked by the validator: http or https)
        url,
        data=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "django-scheduling alerts"},
        method="POST",
    )
    try:
        with _opener.open(request, timeout=WEBHOOK_TIMEOUT) as response:
            response.read(1024)
    # The URL's path is its secret: errors, which the admin shows, name its host only.
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{shown_destination(url)} answered {exc.code} {exc.reason}") from None
