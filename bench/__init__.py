"""Benchmark: our scheduler against the stock django-apscheduler pattern (``make bench``)."""
