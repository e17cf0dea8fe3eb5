"""Modules the tests use that are not tests: job functions, settings, helpers."""
