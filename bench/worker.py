"""One measurement in a fresh process: ``python -m bench.worker SYSTEM SCENARIO --out FILE``.

A process of its own per measurement, so CPU time and memory are the scheduler's alone, and
neither system inherits the other's connections, threads or imported state.
"""

from __future__ import annotations

import argparse
import json
import os
import threading

import django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=["ours", "stock"])
    parser.add_argument("scenario", choices=["load", "burst", "startup", "mix"])
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument(
        "--seconds",
        type=float,
        default=10,
        help="load, mix: the window; burst: the time limit; startup: idle time",
    )
    parser.add_argument("--lead", type=float, default=5, help="burst: seconds from writing to due")
    parser.add_argument("--any-delay", action="store_true", help="burst: no misfire grace time")
    parser.add_argument("--keep-store", action="store_true", help="restart: leave the stored jobs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    django.setup()
    from bench import database, workloads
    from bench.measure import PassCounter, SqlCounter
    from bench.systems import SYSTEMS

    if not args.keep_store:
        database.clear()
    counter = SqlCounter()
    counter.install()
    # The main thread only drives and observes; the scheduler's work happens on its threads.
    counter.ignored.add(threading.get_ident())
    passes = PassCounter()
    passes.install()
    system = SYSTEMS[args.system]()
    if args.scenario == "mix":
        result = workloads.mix(system, counter, passes, args.jobs, int(args.seconds))
    elif args.scenario == "load":
        result = workloads.load(system, counter, args.jobs, int(args.seconds))
    elif args.scenario == "burst":
        result = workloads.burst(
            system, counter, args.jobs, lead=args.lead, timeout=args.seconds, any_delay=args.any_delay
        )
    else:
        spawned = float(os.environ["BENCH_SPAWNED_AT"])
        result = workloads.startup(system, counter, args.jobs, spawned, args.seconds)
    with open(args.out, "w") as out:
        json.dump(result, out)


if __name__ == "__main__":
    main()
