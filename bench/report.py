"""The results table: one row per measure and database, ours against stock, and the target."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Row = tuple[str, str, Any, Any, str]  # measure, database, ours, stock, target met


def number(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return str(value)


def ratio(ours: Any, stock: Any) -> str:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (ours, stock))
    if not numeric or not stock:
        return "-"
    return f"{ours / stock:.2f}"


def verdict(value: Any, test: Callable[[Any], bool] | None, label: str) -> str:
    if test is None:
        return label
    if value is None:
        return f"not measured ({label})"
    return f"{'yes' if test(value) else 'NO'} ({label})"


def below(limit: float) -> Callable[[Any], bool]:
    return lambda value: bool(value < limit)


def at_most(limit: float) -> Callable[[Any], bool]:
    """A number no higher than ``limit``; text (a measure stopped, not measured) fails."""
    return lambda value: isinstance(value, int | float) and bool(value <= limit)


def ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


def pick(results: dict[str, Any], key: str, system: str, *path: str) -> Any:
    value: Any = results.get(key, {}).get(system, {})
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def fates(entry: dict[str, Any]) -> str:
    if "expected" not in entry:
        return entry.get("error", "-")[:60]
    recorded = sum(entry["recorded_not_run"].values())
    return f"{entry['ran']:,} ran, {recorded:,} recorded missed, {entry['vanished']:,} vanished"


def kinds(entry: dict[str, Any]) -> str:
    per = entry.get("sql_per_fire", {}).get("kinds", {})
    return ", ".join(f"{kind} {n:g}" for kind, n in per.items()) or "-"


def limit_of(r: dict[str, Any], name: str, size: int) -> float | None:
    """A limit of bench/limits.py, in seconds: ``history_insert``, ``hand_off``, ``store_insert``."""
    value = r.get("limits", {}).get(name, {}).get(str(size))
    return None if value is None else float(value)


def summed(*values: float | None) -> float | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def over(value: Any, limit: float | None) -> Any:
    """A figure as a multiple of its limit; ``-`` when either is missing or not a number."""
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return value / limit if numeric and limit else None


def stopped(entry: dict[str, Any], field: str) -> Any:
    """A field of a measurement, or what stopped it: stopped after its time limit."""
    if "timed_out_after" in entry:
        return f"over {entry['timed_out_after']:g} s (stopped)"
    return entry.get(field)


class Rows:
    """The rows of one database, in groups, each with its limit beside it."""

    def __init__(self, vendor: str, r: dict[str, Any], args: argparse.Namespace) -> None:
        self.vendor, self.r, self.args = vendor, r, args
        self.rows: list[tuple[str, Any, Any, str]] = []
        self.round_trip = r.get("limits", {}).get("round_trip")

    def add(
        self, measure: str, ours: Any, stock: Any, test: Callable[[Any], bool] | None = None, label: str = ""
    ) -> None:
        self.rows.append((measure, ours, stock, verdict(ours, test, label)))

    def limit(self, measure: str, seconds: float | None, parts: str) -> None:
        """A limit row: the machine's floor (in ms) in the ours column, what it is made of beside."""
        self.rows.append((f"limit: {measure} (ms)", ms(seconds), None, f"the machine alone: {parts}"))

    def ratio_to_limit(self, measure: str, ours: Any, stock: Any, limit: float | None) -> None:
        self.add(f"  {measure} ÷ limit", over(ours, limit), over(stock, limit), None, "x the limit")

    def history_limit(self, count: int) -> float | None:
        insert, hand_off = limit_of(self.r, "history_insert", count), limit_of(self.r, "hand_off", count)
        threads = self.r.get("limits", {}).get("threads", "?")
        self.limit(
            f"{count:,} runs at one instant",
            summed(insert, hand_off),
            f"one INSERT of {count:,} history rows {number(ms(insert), 2)} ms + bare hand-off of "
            f"{count:,} no-op calls to {threads} threads {number(ms(hand_off), 2)} ms",
        )
        return summed(insert, hand_off)

    def build(self) -> list[tuple[str, Any, Any, str]]:
        self.load()
        self.burst()
        self.statements()
        self.startup()
        self.large()
        self.mix()
        self.admin()
        self.sqlite_locks()
        return self.rows

    def load(self) -> None:
        r, args = self.r, self.args
        p99_targets = {100: 20.0, 1000: 100.0}
        for count in args.jobs:
            key = f"load-{count}"
            title = f"{count:,} jobs every 1 s ({args.window} s)"
            for stat in ("p50", "p99", "max"):
                target = p99_targets.get(count) if stat == "p99" else None
                self.add(
                    f"{title}: lateness {stat} (ms)",
                    ms(pick(r, key, "ours", "lateness", stat)),
                    ms(pick(r, key, "stock", "lateness", stat)),
                    below(target) if target else None,
                    f"< {target:g} ms" if target else "",
                )
            limit = self.history_limit(count)
            self.ratio_to_limit(
                f"{title}: lateness p99",
                pick(r, key, "ours", "lateness", "p99"),
                pick(r, key, "stock", "lateness", "p99"),
                limit,
            )
            on_time = [pick(r, key, s, "on_time") for s in ("ours", "stock")]
            expected = pick(r, key, "ours", "expected") or 1
            self.add(
                f"{title}: runs on time, within grace (%)",
                None if on_time[0] is None else on_time[0] / expected * 100,
                None if on_time[1] is None else on_time[1] / (pick(r, key, "stock", "expected") or 1) * 100,
                (lambda v: v >= 99.9) if count >= 1000 else None,
                "≥ 99.9 %" if count >= 1000 else "grace: ours 60 s, stock 1 s (defaults)",
            )
            self.add(
                f"{title}: fires",
                fates(r.get(key, {}).get("ours", {})),
                fates(r.get(key, {}).get("stock", {})),
                (lambda v: v.endswith(" 0 vanished")) if count >= 1000 else None,
                "none vanish" if count >= 1000 else "",
            )

    def burst(self) -> None:
        r, args = self.r, self.args
        title = f"{args.burst:,} jobs due at once"
        self.add(
            f"{title}: fires",
            fates(r.get("burst", {}).get("ours", {})),
            fates(r.get("burst", {}).get("stock", {})),
            lambda v: v.endswith(" 0 vanished"),
            "all run or are recorded",
        )
        for stat in ("p50", "p99", "max"):
            self.add(
                f"{title}: lateness {stat} (ms)",
                ms(pick(r, "burst", "ours", "lateness", stat)),
                ms(pick(r, "burst", "stock", "lateness", stat)),
                below(1000.0) if stat == "p99" else None,
                "< 1 s" if stat == "p99" else "",
            )
        limit = self.history_limit(args.burst)
        self.ratio_to_limit(
            f"{title}: lateness p99",
            pick(r, "burst", "ours", "lateness", "p99"),
            pick(r, "burst", "stock", "lateness", "p99"),
            limit,
        )
        stock_rate = pick(r, "throughput", "stock", "executions_per_second")
        ours_rate = pick(r, "throughput", "ours", "executions_per_second")
        title = f"{args.throughput:,} jobs due at once, any delay allowed: executions/s with history"
        self.add(
            title,
            ours_rate,
            stock_rate,
            (lambda v: bool(stock_rate) and v >= 20 * stock_rate),
            "≥ 20 x stock",
        )
        limit = self.history_limit(args.throughput)
        best = args.throughput / limit if limit else None
        self.add(f"  {title}: limit (executions/s, {args.throughput:,} ÷ the limit above)", best, None)
        self.add(f"  {title} ÷ limit", over(ours_rate, best), over(stock_rate, best), None, "of the limit")

    def statements(self) -> None:
        r, args = self.r, self.args
        idle_qps = pick(r, "startup", "ours", "idle_queries_per_second") or 0.0
        lone = pick(r, "lone", "ours", "sql_per_fire", "total")
        fires = pick(r, "lone", "ours", "ran") or 1
        window = pick(r, "lone", "ours", "window_seconds") or args.window
        self.add(
            "SQL statements per run, lone job every 1 s (all the process sent)",
            lone,
            pick(r, "lone", "stock", "sql_per_fire", "total"),
        )
        self.add(
            "SQL statements per run, lone job, net of the idle polling rate",
            None if lone is None else lone - idle_qps * window / fires,
            pick(r, "lone", "stock", "sql_per_fire", "total"),
            lambda v: v <= 4,
            "≤ 4",
        )
        self.add(
            "  by kind (lone job; BEGIN/COMMIT not in the total)",
            kinds(r.get("lone", {}).get("ours", {})),
            kinds(r.get("lone", {}).get("stock", {})),
        )
        for key, title in [
            (f"load-{max(args.jobs)}", f"{max(args.jobs):,} jobs every 1 s"),
            ("burst", f"{args.burst:,} due at once"),
        ]:
            self.add(
                f"SQL statements per run, {title}",
                pick(r, key, "ours", "sql_per_fire", "total"),
                pick(r, key, "stock", "sql_per_fire", "total"),
                lambda v: v <= 1,
                "≤ 1 amortized",
            )
            self.add(
                f"  by kind ({title})",
                kinds(r.get(key, {}).get("ours", {})),
                kinds(r.get(key, {}).get("stock", {})),
            )
        self.limit("one empty round trip, SELECT 1", self.round_trip, "the floor of any one statement")

    def startup_limit(self, count: int) -> float | None:
        bare = self.r.get("limits", {}).get("bare_process", {}).get("seconds")
        store = limit_of(self.r, "store_insert", count)
        self.limit(
            f"start-up with {count:,} jobs",
            summed(bare, store),
            f"spawn Python and set Django up {number(ms(bare), 0)} ms + one INSERT of {count:,} "
            f"job-store rows {number(ms(store), 0)} ms",
        )
        return summed(bare, store)

    def startup(self) -> None:
        r, args = self.r, self.args
        for key, title, target in [("startup", "first start", 1.5), ("restart", "restart", 1.0)]:
            self.add(
                f"start-up with {args.startup_jobs:,} jobs, {title} (s, spawn to all scheduled)",
                pick(r, key, "ours", "startup_seconds"),
                pick(r, key, "stock", "startup_seconds"),
                at_most(target),
                f"≤ {target:g} s",
            )
        limit = self.startup_limit(args.startup_jobs)
        self.ratio_to_limit(
            f"start-up with {args.startup_jobs:,} jobs, first start",
            ms(pick(r, "startup", "ours", "startup_seconds")),
            ms(pick(r, "startup", "stock", "startup_seconds")),
            ms(limit),
        )
        self.add(
            f"idle with {args.startup_jobs:,} jobs due in an hour: CPU (%, over {args.idle:g} s)",
            pick(r, "startup", "ours", "idle_cpu_percent"),
            pick(r, "startup", "stock", "idle_cpu_percent"),
            lambda v: v < 1,
            "< 1 %",
        )
        idle_target = 1.5 if self.vendor == "postgres" else 6
        pick_up = "100 ms" if self.vendor == "postgres" else "500 ms"
        self.add(
            "idle: SQL statements per second",
            pick(r, "startup", "ours", "idle_queries_per_second"),
            pick(r, "startup", "stock", "idle_queries_per_second"),
            lambda v: v <= idle_target,
            f"≤ {idle_target:g}, with a change picked up within {pick_up} (tested in "
            "tests/test_notifications.py and tests/test_runner.py, not here)",
        )
        stock_rss = pick(r, "startup", "stock", "rss_mb", "VmRSS")
        self.add(
            f"idle with {args.startup_jobs:,} jobs: resident memory (MB)",
            pick(r, "startup", "ours", "rss_mb", "VmRSS"),
            stock_rss,
            lambda v: bool(stock_rss) and v <= 1.2 * stock_rss,
            "≤ 1.2 x stock",
        )
        bare = r.get("limits", {}).get("bare_process", {}).get("rss_mb", {}).get("VmRSS")
        self.rows.append(
            ("limit: resident memory (MB)", bare, None, "the machine alone: a bare Django process, connected")
        )
        self.ratio_to_limit(
            "idle resident memory",
            pick(r, "startup", "ours", "rss_mb", "VmRSS"),
            stock_rss,
            bare,
        )

    def large(self) -> None:
        r, args = self.r, self.args
        count = args.large_jobs
        first = {s: r.get("large", {}).get(s, {}) for s in ("ours", "stock")}
        restart = {s: r.get("large-restart", {}).get(s, {}) for s in ("ours", "stock")}
        not_measured = f"not measured: its first start took over {args.large_stock_timeout:g} s"
        for title, entries, target in [("first start", first, 10.0), ("restart", restart, 5.0)]:
            self.add(
                f"start-up with {count:,} jobs, {title} (s, spawn to all scheduled)",
                stopped(entries["ours"], "startup_seconds"),
                not_measured
                if title == "restart" and "timed_out_after" in first["stock"]
                else stopped(entries["stock"], "startup_seconds"),
                at_most(target),
                f"≤ {target:g} s",
            )
        limit = self.startup_limit(count)
        self.ratio_to_limit(
            f"start-up with {count:,} jobs, first start",
            ms(first["ours"].get("startup_seconds")),
            ms(first["stock"].get("startup_seconds")),
            ms(limit),
        )
        self.add(
            f"idle with {count:,} jobs due in an hour: CPU (%, over {args.idle:g} s)",
            stopped(first["ours"], "idle_cpu_percent"),
            stopped(first["stock"], "idle_cpu_percent"),
            lambda v: isinstance(v, float) and v < 1,
            "< 1 %",
        )
        rss = {s: first[s].get("rss_mb", {}).get("VmRSS") for s in ("ours", "stock")}
        self.add(
            f"idle with {count:,} jobs: resident memory (MB)",
            rss["ours"] if rss["ours"] is not None else stopped(first["ours"], "rss_mb"),
            rss["stock"] if rss["stock"] is not None else stopped(first["stock"], "rss_mb"),
        )
        per_job = {}
        for system in ("ours", "stock"):
            small = pick(r, "startup", system, "rss_mb", "VmRSS")
            large = rss[system]
            extra = count - args.startup_jobs
            per_job[system] = (
                (large - small) * 1024 / extra if None not in (small, large) and extra > 0 else None
            )
        self.add(
            f"memory per stored job (KB: idle RSS at {count:,} minus at {args.startup_jobs:,} jobs, "
            f"÷ {count - args.startup_jobs:,})",
            per_job["ours"],
            per_job["stock"],
            None,
            "stated; stock keeps its jobs in the database only",
        )

    def mix(self) -> None:
        for count in self.args.mix_jobs:
            entry = self.r.get(f"mix-{count}", {}).get("ours", {})
            title = f"chaos mix, {count:,} jobs, faults off ({self.args.window} s, the chaos suite's timings)"
            passes = entry.get("passes")
            self.add(
                f"{title}: dispatch passes / runs",
                None if passes is None else f"{passes:,} / {entry.get('ran', 0):,}",
                None,
            )
            self.add(f"{title}: SQL statements per pass", entry.get("statements_per_pass"), None)
            per = entry.get("kinds_per_pass", {})
            self.add(
                "  by kind, per pass (BEGIN/COMMIT not in the total)",
                ", ".join(f"{kind} {n:g}" for kind, n in per.items()) or "-",
                None,
            )
            self.add(
                f"{title}: fencing's cost, statements per pass (per s): the lease's own",
                None
                if passes is None
                else f"{entry['lease_per_pass']:.3g} ({entry['lease_per_second']:.3g}/s)",
                None,
                None,
                "counted: statements on scheduling_lease (renewal every SCHEDULING_LEASE_RENEW_INTERVAL)",
            )
            self.add(
                f"{title}: writes carrying the fence, per pass",
                entry.get("fenced_writes_per_pass"),
                None,
                None,
                "counted: the condition is inside the INSERT/UPDATE, no statement of its own",
            )

    def admin(self) -> None:
        args = self.args
        admin = self.r.get("admin", {})
        size = f"{args.admin_jobs:,} jobs / {admin.get('executions', args.admin_executions):,} executions"
        for page in ("jobs", "executions"):
            large, small = admin.get("large", {}).get(page, {}), admin.get("small", {}).get(page, {})
            self.add(
                f"admin {page} changelist, {size}: render (ms)",
                large.get("ours", {}).get("ms"),
                large.get("stock", {}).get("ms"),
                lambda v: v < 300,
                "< 300 ms",
            )
            ours_q = (small.get("ours", {}).get("queries"), large.get("ours", {}).get("queries"))
            stock_q = (small.get("stock", {}).get("queries"), large.get("stock", {}).get("queries"))
            self.add(
                f"admin {page} changelist: queries at 10 jobs / 100 executions → {size}",
                f"{ours_q[0]} → {ours_q[1]}",
                f"{stock_q[0]} → {stock_q[1]}",
                lambda v: len(set(v.split(" → "))) == 1,
                "constant",
            )
            queries = large.get("ours", {}).get("queries")
            floor = queries * self.round_trip if queries and self.round_trip else None
            self.limit(
                f"admin {page} changelist",
                floor,
                f"its {queries} queries at one empty round trip each",
            )
            self.ratio_to_limit(
                f"admin {page} changelist, render",
                large.get("ours", {}).get("ms"),
                large.get("stock", {}).get("ms"),
                ms(floor),
            )
        for page in ("api jobs", "api runs"):
            large, small = admin.get("large", {}).get(page, {}), admin.get("small", {}).get(page, {})
            self.add(f"{page} list, first page, {size}: response (ms)", large.get("ours", {}).get("ms"), None)
            queries = (small.get("ours", {}).get("queries"), large.get("ours", {}).get("queries"))
            self.add(
                f"{page} list: queries at 10 jobs / 100 executions → {size}",
                f"{queries[0]} → {queries[1]}",
                None,
                lambda v: len(set(v.split(" → "))) == 1,
                "constant",
            )
        self.add(f"admin: filling {size} took (s)", admin.get("fill_seconds"), None)
        timeline = admin.get("timeline", {})
        large, small = timeline.get("large", {}), timeline.get("small", {})
        size = f"{args.timeline_jobs:,} jobs / {args.timeline_runs:,} runs in the window"
        self.add(f"admin timeline, {size}: render (ms)", large.get("ms"), None, lambda v: v < 300, "< 300 ms")
        self.add(f"admin timeline, {size}: page size (KB)", large.get("kb"), None)
        self.add(
            f"admin timeline: queries at 10 jobs / 100 runs → {size}",
            f"{small.get('queries')} → {large.get('queries')}",
            None,
            lambda v: len(set(v.split(" → "))) == 1,
            "constant",
        )

    def sqlite_locks(self) -> None:
        if self.vendor != "sqlite":
            return
        r, args = self.r, self.args
        count = min(args.jobs)
        ours_locked = (pick(r, f"load-{count}", "ours", "locked_errors") or 0) + (
            pick(r, f"load-{count}", "ours", "locked_in_log") or 0
        )
        stock = r.get("sqlite-defaults", {}).get("stock", {})
        stock_text = (
            f"{(stock.get('locked_errors') or 0) + (stock.get('locked_in_log') or 0)} "
            f"(scheduler thread alive at end: {number(stock.get('alive_at_end'))}; "
            f"{stock.get('ran', 0):,} of {stock.get('expected', 0):,} ran)"
        )
        self.add(
            f"'database is locked' errors, {count} jobs every 1 s (ours: project settings, "
            "IMMEDIATE+WAL; stock: Django's defaults)",
            ours_locked,
            stock_text,
            lambda v: v == 0,
            "0",
        )


def rows_for(vendor: str, r: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, Any, Any, str]]:
    return Rows(vendor, r, args).build()


def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "| measure | database | ours | stock | ours/stock | target met? |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for vendor, r in results.items():
        for measure, ours, stock, met in rows_for(vendor, r, args):
            lines.append(
                f"| {measure} | {vendor} | {number(ours, 2 if isinstance(ours, float) and ours < 10 else 1)} "
                f"| {number(stock, 2 if isinstance(stock, float) and stock < 10 else 1)} "
                f"| {ratio(ours, stock)} | {met} |"
            )
    return "\n".join(lines)


def errors(results: dict[str, Any]) -> list[str]:
    found = []
    for vendor, r in results.items():
        for key, systems in r.items():
            if "error" in systems:
                found.append(f"{vendor} {key}: {systems['error']}")
                continue
            for system, entry in systems.items():
                if isinstance(entry, dict) and "error" in entry:
                    found.append(f"{vendor} {key} {system}: {entry['error']}")
    return found
