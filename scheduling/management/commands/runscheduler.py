from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django_apscheduler.models import DjangoJob

from scheduling.conf import settings
from scheduling.queries import job_summaries
from scheduling.runtime.service import Runner
from scheduling.runtime.startup import SchedulerStartError
from scheduling.schedules import format_local

VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}
SUMMARY_LIMIT = 50


def non_negative_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            _("%(value)r is not a number of seconds") % {"value": value}
        ) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(_("%(value)r must be 0 or more seconds") % {"value": value})
    return seconds


def positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(_("%(value)r must be a whole number >= 1") % {"value": value})
    return int(value)


def port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(
            _("%(value)r must be a port number from 0 (any free port) to 65535") % {"value": value}
        )
    return int(value)


# Seconds between two looks for a stop signal that reached another thread.
STOP_CHECK = 1.0


class Command(BaseCommand):
    @property
    def help(self) -> str:  # type: ignore[override]  # argparse needs a str, in the language of the day
        return _("Run scheduled jobs until stopped with SIGINT or SIGTERM.")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--shutdown-timeout",
            type=non_negative_seconds,
            default=None,
            help=_(
                "Seconds to wait for running jobs when stopping (default: SCHEDULING_SHUTDOWN_TIMEOUT, "
                "%(seconds)s). Runs still going after it are recorded as interrupted."
            )
            % {"seconds": f"{settings.SHUTDOWN_TIMEOUT:g}"},
        )
        parser.add_argument(
            "--threads",
            type=positive_int,
            default=None,
            help=_("Jobs that may run at once (default: SCHEDULING_THREADS, %(threads)s).")
            % {"threads": settings.THREADS},
        )
        parser.add_argument(
            "--metrics-port",
            type=port,
            default=None,
            help=_(
                "Also serve the Prometheus metrics at http://ADDRESS:PORT/metrics (needs prometheus-client; "
                "0 picks a free port, logged at start). Anyone who can reach the port may read them."
            ),
        )
        parser.add_argument(
            "--metrics-address",
            default="127.0.0.1",
            help=_("The address the metrics port listens on (default: 127.0.0.1, this machine only)."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._configure_logging(options["verbosity"])
        stop_metrics = self._serve_metrics(options["metrics_port"], options["metrics_address"])
        runner = Runner(threads=options["threads"], own_process=True)
        stop = threading.Event()

        def request_stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        # Before the start: a stop asked for while the scheduler starts (a deploy's SIGTERM right
        # after a restart) is a graceful stop once it has started, not the signal's default death
        # with its row, lease and runs left for others to find.
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        try:
            runner.start()
        except SchedulerStartError as exc:
            stop_metrics()
            raise CommandError(str(exc)) from None
        if options["verbosity"]:
            self._print_summary(runner)
        # A timed wait: Linux may deliver SIGTERM to any thread, and Python runs the handler only
        # once the main thread runs again; blocked in an untimed wait it could sleep through it.
        while not stop.wait(STOP_CHECK):
            pass
        interrupted = runner.stop(options["shutdown_timeout"])
        stop_metrics()
        if interrupted:
            # Job threads that are still running would keep the interpreter alive; their runs
            # are already recorded as interrupted.
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def _serve_metrics(self, port: int | None, address: str) -> Callable[[], None]:
        """Start the metrics server, before the scheduler so that a port in use stops nothing."""
        if port is None:
            return lambda: None
        # Imported here: prometheus-client is optional, and needed only with --metrics-port.
        try:
            from scheduling import metrics
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] != "prometheus_client":
                raise
            raise CommandError(
                _("--metrics-port needs prometheus-client: pip install 'django-scheduling[metrics]'")
            ) from None
        try:
            return metrics.serve(port, address)[1]
        except OSError as exc:
            raise CommandError(
                _("Cannot serve the metrics on %(address)s:%(port)s: %(error)s")
                % {"address": address, "port": port, "error": exc}
            ) from None

    def _configure_logging(self, verbosity: int) -> None:
        logger = logging.getLogger("scheduling")
        logger.setLevel(VERBOSITY_LEVELS.get(verbosity, logging.INFO))
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
            logger.addHandler(handler)

    def _print_summary(self, runner: Runner) -> None:
        # Only the listed jobs are described in words: that costs ~0.3 ms per cron schedule.
        jobs = job_summaries(limit=SUMMARY_LIMIT)
        stored = DjangoJob.objects.count()
        if runner.active:
            headline = _("Scheduler %(instance)s active, running %(count)s job(s).") % {
                "instance": runner.instance,
                "count": stored,
            }
            changes = runner.sync_report.summary()
            if changes:
                headline += " " + _("From the code: %(changes)s.") % {"changes": changes}
        else:
            headline = _(
                "Scheduler %(instance)s standing by: another scheduler holds the lease; "
                "this one takes over if it stops. %(count)s job(s) stored."
            ) % {"instance": runner.instance, "count": stored}
        self.stdout.write(headline + " " + _("Stop with Ctrl-C or SIGTERM."), self.style.SUCCESS)
        width = max([len(job.id) for job in jobs] + [6])
        for job in jobs:
            next_run = format_local(job.next_run)
            next_label = _("next: %(time)s") % {"time": f"{next_run:<25}"}
            self.stdout.write(f"  {job.id:<{width}}  {job.schedule:<40}  {next_label}  {job.state}")
        if stored > len(jobs):
            self.stdout.write(
                "  " + _("… and %(count)s more (see the admin)") % {"count": stored - len(jobs)}
            )
