"""Imported at start-up of the processes the export and import tests run (SCHEDULING_MODULES)."""

from tests.support.transfer_jobs import declare

declare()
