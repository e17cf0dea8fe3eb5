"""Demo jobs: history starts to accumulate within seconds of the first start."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from scheduling import job

logger = logging.getLogger("scheduling.demo")


@job(interval={"seconds": 5}, id="demo.heartbeat", name="Demo: heartbeat")
def heartbeat() -> None:
    logger.info("Demo heartbeat")


@job(interval={"seconds": 20}, id="demo.slow_report", name="Demo: slow report")
def slow_report() -> None:
    time.sleep(3)


@job(cron={"second": "*/10"}, id="demo.flaky", name="Demo: flaky job")
def flaky() -> None:
    if random.random() < 0.3:  # noqa: S311 - not cryptography, just a demo that fails now and then
        raise RuntimeError("The flaky demo job failed, as it does about one time in three")


@job(cron="* * * * *", id="demo.async_ping", name="Demo: async job")
async def async_ping() -> None:
    await asyncio.sleep(0.1)
