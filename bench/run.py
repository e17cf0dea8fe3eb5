"""``python -m bench``: run every measurement for both systems on each database, print the table.

Each measurement is a fresh worker process (bench/worker.py) on the benchmark's own database
(bench/database.py); the table is built by bench/report.py and also written to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import database, environment, report
from bench.paths import ROOT

SYSTEMS = ("ours", "stock")


def int_list(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--jobs", type=int_list, default=[100, 1000], help="jobs firing every second")
    parser.add_argument("--burst", type=int, default=10000, help="jobs due at one moment")
    parser.add_argument("--throughput", type=int, default=2000, help="jobs due at once, no grace limit")
    parser.add_argument("--startup-jobs", type=int, default=10000, help="declared jobs due in an hour")
    parser.add_argument("--window", type=int, default=8, help="seconds of each every-second load")
    parser.add_argument("--idle", type=float, default=10, help="seconds of the idle measure")
    parser.add_argument("--admin-jobs", type=int, default=10000)
    parser.add_argument("--admin-executions", type=int, default=1000000)
    parser.add_argument("--timeline-jobs", type=int, default=100, help="jobs of the admin timeline")
    parser.add_argument("--timeline-runs", type=int, default=10000, help="runs in its 24-hour window")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a minute or so")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-latest.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.burst, args.throughput, args.startup_jobs = [20], 200, 100, 200
        args.window, args.idle, args.admin_jobs, args.admin_executions = 2, 1, 100, 2000
        args.timeline_runs = 1000
    return args


class Bench:
    def __init__(self, vendor: str, args: argparse.Namespace, scratch: Path) -> None:
        self.vendor = vendor
        self.args = args
        self.scratch = scratch
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "BENCH_DATABASE_URL": database.url_for(vendor),
            "PYTHONUNBUFFERED": "1",
        }
        self.results: dict[str, Any] = {}

    def worker(self, key: str, system: str, scenario: str, jobs: int, **options: Any) -> None:
        """Run one measurement; a failure is recorded in the results, not raised."""
        out = self.scratch / f"{self.vendor}-{key}-{system}.json"
        declared = jobs if system == "ours" and scenario != "burst" else 0
        env = {
            **self.env,
            "BENCH_JOBS": str(declared),
            "BENCH_SCHEDULE": "hourly" if scenario == "startup" else "second",
            **options.pop("env", {}),
        }
        command = [
            sys.executable,
            "-m",
            "bench.worker",
            system,
            scenario,
            "--jobs",
            str(jobs),
            "--out",
            str(out),
        ]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            command += [flag] if value is True else [flag, str(value)]
        log = self.scratch / f"{self.vendor}-{key}-{system}.log"
        env["BENCH_SPAWNED_AT"] = repr(time.time())
        print(f"  {self.vendor}: {key} ({system})", flush=True)
        with log.open("w") as output:
            completed = subprocess.run(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
        entry = json.loads(out.read_text()) if completed.returncode == 0 and out.exists() else {}
        entry["log_lines"] = log.read_text().count("\n")
        entry["locked_in_log"] = log.read_text().count("database is locked")
        if completed.returncode:
            entry["error"] = f"exit status {completed.returncode}, see {log.name}: " + log.read_text()[-300:]
        self.results.setdefault(key, {})[system] = entry

    def run(self) -> dict[str, Any]:
        args = self.args
        database.prepare(self.vendor, self.env)
        for system in SYSTEMS:
            self.worker("startup", system, "startup", args.startup_jobs, seconds=args.idle)
            self.worker("restart", system, "startup", args.startup_jobs, seconds=0, keep_store=True)
            self.worker("lone", system, "load", 1, seconds=args.window)
            for count in args.jobs:
                self.worker(f"load-{count}", system, "load", count, seconds=args.window)
            lead = 2 if args.quick else 5
            self.worker("burst", system, "burst", args.burst, seconds=90, lead=lead)
            self.worker(
                "throughput", system, "burst", args.throughput, seconds=120, any_delay=True, lead=lead
            )
        if self.vendor == "sqlite":
            # The stock pattern as its blog posts set it up: Django's SQLite defaults.
            count = min(args.jobs)
            defaults = {"BENCH_SQLITE_DEFAULTS": "1"}
            self.worker("sqlite-defaults", "stock", "load", count, seconds=args.window, env=defaults)
        self.admin()
        return self.results

    def admin(self) -> None:
        out = self.scratch / f"{self.vendor}-admin.json"
        command = [sys.executable, "-m", "bench.admin_views", "--out", str(out)]
        command += ["--jobs", str(self.args.admin_jobs), "--executions", str(self.args.admin_executions)]
        command += [
            "--timeline-jobs",
            str(self.args.timeline_jobs),
            "--timeline-runs",
            str(self.args.timeline_runs),
        ]
        print(f"  {self.vendor}: admin changelists and timeline", flush=True)
        completed = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)  # noqa: S603
        if completed.returncode:
            self.results["admin"] = {"error": completed.stderr[-500:]}
        else:
            self.results["admin"] = json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    vendors = args.databases.split(",")
    about = environment.describe(database.postgres_server_url() if "postgres" in vendors else None)
    print(about, flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="scheduling-bench-"))
    results = {}
    for vendor in vendors:
        print(f"{vendor}:", flush=True)
        results[vendor] = Bench(vendor, args, scratch).run()
    (scratch / "results.json").write_text(json.dumps(results, indent=1))
    table = report.table(results, args)
    elapsed = time.monotonic() - started
    text = f"{about}\n- the run took {elapsed:.0f} s\n\n{table}\n"
    print(f"\n{text}\nRaw results: {scratch / 'results.json'}")
    Path(args.out).write_text(text)
    failed = report.errors(results)
    for error in failed:
        print("FAILED:", error)
    if failed:
        sys.exit(1)
