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
LARGE_TIMEOUT = 600.0  # seconds: our start-up at --large-jobs, ten times past its 10 s target


def int_list(value: str) -> list[int]:
    return [int(part) for part in value.split(",") if part]


def started_in_time(process: subprocess.Popen[bytes], started: Path, timeout: float | None) -> bool:
    """Whether ``process`` created ``started`` (or ended) within ``timeout`` seconds."""
    if timeout is None:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if started.exists() or process.poll() is not None:
            return True
        time.sleep(0.2)
    return started.exists()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--databases", default="sqlite,postgres,mariadb", help="comma-separated: sqlite, postgres, mariadb"
    )
    parser.add_argument("--jobs", type=int_list, default=[100, 1000], help="jobs firing every second")
    parser.add_argument("--burst", type=int, default=10000, help="jobs due at one moment")
    parser.add_argument("--throughput", type=int, default=2000, help="jobs due at once, no grace limit")
    parser.add_argument("--startup-jobs", type=int, default=10000, help="declared jobs due in an hour")
    parser.add_argument("--large-jobs", type=int, default=100000, help="declared jobs of the large start-up")
    parser.add_argument(
        "--large-stock-timeout",
        type=float,
        default=60,
        help="seconds after which the stock first start with --large-jobs is stopped and reported as over",
    )
    parser.add_argument(
        "--mix-jobs", type=int_list, default=[10, 1000], help="jobs of the chaos mix, faults off"
    )
    parser.add_argument("--window", type=int, default=8, help="seconds of each every-second load")
    parser.add_argument("--idle", type=float, default=10, help="seconds of the idle measure")
    parser.add_argument("--admin-jobs", type=int, default=100000)
    parser.add_argument(
        "--admin-executions", type=int, default=10000000, help="executions of the admin measure, PostgreSQL"
    )
    parser.add_argument(
        "--admin-executions-others",
        type=int,
        default=1000000,
        help="executions of the admin measure on SQLite and MariaDB, whose fill of 10,000,000 rows "
        "alone would take longer than the rest of the run",
    )
    parser.add_argument("--timeline-jobs", type=int, default=100, help="jobs of the admin timeline")
    parser.add_argument("--timeline-runs", type=int, default=10000, help="runs in its 24-hour window")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a minute or so")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results-latest.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.burst, args.throughput, args.startup_jobs = [20], 200, 100, 200
        args.large_jobs, args.mix_jobs = 500, [10]
        args.window, args.idle, args.admin_jobs, args.admin_executions = 2, 1, 100, 2000
        args.admin_executions_others = 2000
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

    def worker(
        self, key: str, system: str, scenario: str, jobs: int, timeout: float | None = None, **options: Any
    ) -> None:
        """Run one measurement; a failure is recorded in the results, not raised.

        ``timeout`` (start-ups): a worker not started within that many seconds of its spawn is
        stopped and recorded as over it (``timed_out_after``). It tells it has started by creating
        its ``.started`` file; what follows (the idle measure, the stop) is not bounded by it.
        """
        out = self.scratch / f"{self.vendor}-{key}-{system}.json"
        started = out.with_suffix(".started")
        declared = jobs if system == "ours" and scenario != "burst" else 0
        env = {
            **self.env,
            "BENCH_JOBS": str(declared),
            "BENCH_SCHEDULE": {"startup": "hourly", "mix": "mix"}.get(scenario, "second"),
            "BENCH_STARTED_FILE": str(started),
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
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
            if not started_in_time(process, started, timeout):
                process.kill()
                process.wait()
                self.results.setdefault(key, {})[system] = {"timed_out_after": timeout}
                return
            returncode = process.wait()
        entry = json.loads(out.read_text()) if returncode == 0 and out.exists() else {}
        entry["log_lines"] = log.read_text().count("\n")
        entry["locked_in_log"] = log.read_text().count("database is locked")
        if returncode:
            entry["error"] = f"exit status {returncode}, see {log.name}: " + log.read_text()[-300:]
        self.results.setdefault(key, {})[system] = entry

    def run(self) -> dict[str, Any]:
        args = self.args
        database.prepare(self.vendor, self.env)
        self.limits()
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
        self.large()
        for count in args.mix_jobs:
            chaos = {"BENCH_CHAOS_TIMINGS": "1"}
            self.worker(f"mix-{count}", "ours", "mix", count, seconds=args.window, env=chaos)
        self.admin()
        return self.results

    def large(self) -> None:
        """Start-up and idle at ``--large-jobs``; stock's first start is stopped after
        ``--large-stock-timeout`` s (it adds its jobs one statement at a time), and its restart is
        then not measured: its store would hold only the jobs it got to."""
        args = self.args
        for system in SYSTEMS:
            # Ours gets a bound too, far above its target, so that a hang fails the row, not the run.
            timeout = args.large_stock_timeout if system == "stock" else LARGE_TIMEOUT
            self.worker("large", system, "startup", args.large_jobs, timeout=timeout, seconds=args.idle)
            if "timed_out_after" not in self.results["large"][system]:
                self.worker(
                    "large-restart",
                    system,
                    "startup",
                    args.large_jobs,
                    timeout=timeout,
                    seconds=0,
                    keep_store=True,
                )

    def limits(self) -> None:
        """What the machine allows for each group's size (bench/limits.py), on the empty database."""
        args = self.args
        out = self.scratch / f"{self.vendor}-limits.json"
        history = sorted({*args.jobs, args.burst, args.throughput})
        command = [sys.executable, "-m", "bench.limits", "--out", str(out)]
        command += ["--history", ",".join(map(str, history))]
        command += ["--store", f"{args.startup_jobs},{args.large_jobs}"]
        print(f"  {self.vendor}: limits", flush=True)
        env = {**self.env, "BENCH_JOBS": "0", "BENCH_SPAWNED_AT": repr(time.time())}
        completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)  # noqa: S603
        if completed.returncode:
            self.results["limits"] = {"error": completed.stderr[-500:]}
        else:
            self.results["limits"] = json.loads(out.read_text())

    def admin(self) -> None:
        out = self.scratch / f"{self.vendor}-admin.json"
        command = [sys.executable, "-m", "bench.admin_views", "--out", str(out)]
        executions = (
            self.args.admin_executions if self.vendor == "postgres" else self.args.admin_executions_others
        )
        command += ["--jobs", str(self.args.admin_jobs), "--executions", str(executions)]
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
            self.results["admin"] = {**json.loads(out.read_text()), "executions": executions}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    vendors = args.databases.split(",")
    environment.compile_bytecode()
    about = environment.describe(
        database.postgres_server_url() if "postgres" in vendors else None,
        database.mariadb_server() if "mariadb" in vendors else None,
    )
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
