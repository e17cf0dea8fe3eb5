"""Rows written by an earlier version, loaded by ``tests/test_upgrade.py``."""
