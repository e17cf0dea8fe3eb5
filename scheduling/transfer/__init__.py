"""Schedules as data: every stored job and exclusion calendar written to a file
(``export``), and a file compared with the database and applied to it (``importer``), through
``scheduling.control`` and so through the one validator.

The file's shape, its formats and its checks are ``document``'s.
"""
