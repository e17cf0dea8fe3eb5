"""Module-level functions that tests declare as jobs."""

from __future__ import annotations

import asyncio
import time

calls: list[str] = []


def succeed() -> None:
    calls.append("succeed")


def fail() -> None:
    raise ValueError("this job fails on purpose")


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_job() -> None:
    await asyncio.sleep(0.01)
    calls.append("async_job")


def mark(job_id: str, path: str) -> None:
    """Leave a trace of a run, outside the database, to count runs independently of the history."""
    with open(path, "a") as marks:
        marks.write(f"{job_id}\n")
