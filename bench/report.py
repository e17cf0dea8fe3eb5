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


def rows_for(vendor: str, r: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, Any, Any, str]]:
    rows: list[tuple[str, Any, Any, str]] = []

    def add(
        measure: str, ours: Any, stock: Any, test: Callable[[Any], bool] | None = None, label: str = ""
    ) -> None:
        rows.append((measure, ours, stock, verdict(ours, test, label)))

    p99_targets = {100: 50.0, 1000: 250.0}
    for count in args.jobs:
        key = f"load-{count}"
        title = f"{count:,} jobs every 1 s ({args.window} s)"
        for stat in ("p50", "p99", "max"):
            target = p99_targets.get(count) if stat == "p99" else None
            add(
                f"{title}: lateness {stat} (ms)",
                ms(pick(r, key, "ours", "lateness", stat)),
                ms(pick(r, key, "stock", "lateness", stat)),
                below(target) if target else None,
                f"< {target:g} ms" if target else "",
            )
        on_time = [pick(r, key, s, "on_time") for s in ("ours", "stock")]
        expected = pick(r, key, "ours", "expected") or 1
        add(
            f"{title}: runs on time, within grace (%)",
            None if on_time[0] is None else on_time[0] / expected * 100,
            None if on_time[1] is None else on_time[1] / (pick(r, key, "stock", "expected") or 1) * 100,
            (lambda v: v >= 99.9) if count >= 1000 else None,
            "≥ 99.9 %" if count >= 1000 else "grace: ours 60 s, stock 1 s (defaults)",
        )
        add(
            f"{title}: fires",
            fates(r.get(key, {}).get("ours", {})),
            fates(r.get(key, {}).get("stock", {})),
            (lambda v: v.endswith(" 0 vanished")) if count >= 1000 else None,
            "none vanish" if count >= 1000 else "",
        )
    title = f"{args.burst:,} jobs due at once"
    add(
        f"{title}: fires",
        fates(r.get("burst", {}).get("ours", {})),
        fates(r.get("burst", {}).get("stock", {})),
        lambda v: v.endswith(" 0 vanished"),
        "all run or are recorded",
    )
    for stat in ("p50", "p99", "max"):
        add(
            f"{title}: lateness {stat} (ms)",
            ms(pick(r, "burst", "ours", "lateness", stat)),
            ms(pick(r, "burst", "stock", "lateness", stat)),
        )
    stock_rate = pick(r, "throughput", "stock", "executions_per_second")
    add(
        f"{args.throughput:,} jobs due at once, any delay allowed: executions/s with history",
        pick(r, "throughput", "ours", "executions_per_second"),
        stock_rate,
        (lambda v: bool(stock_rate) and v >= 10 * stock_rate),
        "≥ 10 x stock",
    )
    idle_qps = pick(r, "startup", "ours", "idle_queries_per_second") or 0.0
    lone = pick(r, "lone", "ours", "sql_per_fire", "total")
    fires = pick(r, "lone", "ours", "ran") or 1
    window = pick(r, "lone", "ours", "window_seconds") or args.window
    add(
        "SQL statements per run, lone job every 1 s (all the process sent)",
        lone,
        pick(r, "lone", "stock", "sql_per_fire", "total"),
    )
    add(
        "SQL statements per run, lone job, net of the idle polling rate",
        None if lone is None else lone - idle_qps * window / fires,
        pick(r, "lone", "stock", "sql_per_fire", "total"),
        lambda v: v <= 4,
        "≤ 4",
    )
    add(
        "  by kind (lone job; BEGIN/COMMIT not in the total)",
        kinds(r.get("lone", {}).get("ours", {})),
        kinds(r.get("lone", {}).get("stock", {})),
    )
    for key, title in [
        (f"load-{max(args.jobs)}", f"{max(args.jobs):,} jobs every 1 s"),
        ("burst", f"{args.burst:,} due at once"),
    ]:
        add(
            f"SQL statements per run, {title}",
            pick(r, key, "ours", "sql_per_fire", "total"),
            pick(r, key, "stock", "sql_per_fire", "total"),
            lambda v: v <= 1,
            "≤ 1 amortized",
        )
        add(
            f"  by kind ({title})",
            kinds(r.get(key, {}).get("ours", {})),
            kinds(r.get(key, {}).get("stock", {})),
        )
    for key, title in [("startup", "first start"), ("restart", "restart")]:
        add(
            f"start-up with {args.startup_jobs:,} jobs, {title} (s, spawn to all scheduled)",
            pick(r, key, "ours", "startup_seconds"),
            pick(r, key, "stock", "startup_seconds"),
            lambda v: v <= 2,
            "≤ 2 s",
        )
    add(
        f"idle with {args.startup_jobs:,} jobs due in an hour: CPU (%, over {args.idle:g} s)",
        pick(r, "startup", "ours", "idle_cpu_percent"),
        pick(r, "startup", "stock", "idle_cpu_percent"),
        lambda v: v < 1,
        "< 1 %",
    )
    add(
        "idle: SQL statements per second",
        pick(r, "startup", "ours", "idle_queries_per_second"),
        pick(r, "startup", "stock", "idle_queries_per_second"),
        None,
        "stated: the cost of noticing changes within 0.5 s",
    )
    add(
        "idle: resident memory (MB)",
        pick(r, "startup", "ours", "rss_mb", "VmRSS"),
        pick(r, "startup", "stock", "rss_mb", "VmRSS"),
    )
    admin = r.get("admin", {})
    size = f"{args.admin_jobs:,} jobs / {args.admin_executions:,} executions"
    for page in ("jobs", "executions"):
        large, small = admin.get("large", {}).get(page, {}), admin.get("small", {}).get(page, {})
        add(
            f"admin {page} changelist, {size}: render (ms)",
            large.get("ours", {}).get("ms"),
            large.get("stock", {}).get("ms"),
            lambda v: v < 300,
            "< 300 ms",
        )
        ours_q = (small.get("ours", {}).get("queries"), large.get("ours", {}).get("queries"))
        add(
            f"admin {page} changelist: queries at 10 jobs / 100 executions → {size}",
            f"{ours_q[0]} → {ours_q[1]}",
            f"{small.get('stock', {}).get('queries')} → {large.get('stock', {}).get('queries')}",
            lambda v: len(set(v.split(" → "))) == 1,
            "constant",
        )
    timeline = admin.get("timeline", {})
    large, small = timeline.get("large", {}), timeline.get("small", {})
    size = f"{args.timeline_jobs:,} jobs / {args.timeline_runs:,} runs in the window"
    add(
        f"admin timeline, {size}: render (ms)",
        large.get("ms"),
        None,
        lambda v: v < 300,
        "< 300 ms",
    )
    add(f"admin timeline, {size}: page size (KB)", large.get("kb"), None)
    add(
        f"admin timeline: queries at 10 jobs / 100 runs → {size}",
        f"{small.get('queries')} → {large.get('queries')}",
        None,
        lambda v: len(set(v.split(" → "))) == 1,
        "constant",
    )
    if vendor == "sqlite":
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
        add(
            f"'database is locked' errors, {count} jobs every 1 s (ours: project settings, "
            "IMMEDIATE+WAL; stock: Django's defaults)",
            ours_locked,
            stock_text,
            lambda v: v == 0,
            "0",
        )
    return rows


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
