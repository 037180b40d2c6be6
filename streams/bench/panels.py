"""``spyglass bench panels``: how long the dashboards' heaviest panel queries take on a large database.

Fills a fresh database with a replay of simulated traffic through the engine (streams/bench/panelfill.py),
then runs every panel query for the whole simulated range (All tenants, All entities), ``--repeat`` times,
and prints the median milliseconds of the slowest ones: on chDB (embedded) and, with ``--server URL``, on a
ClickHouse server.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from streams.bench import add_traffic_args


def _bench_store(store: Any, label: str, args: argparse.Namespace, console: Any) -> list[tuple[str, float, int]]:
    from grafana.dashboards_src import boards
    from grafana.dashboards_src.kit import ALL
    from streams.bench.panelfill import fill, run_panel

    console.print(f"[bold]{label}[/]: filling {args.events:,} events over {args.days} days ...")
    filled = fill(store, events=args.events, seed=args.seed, days=args.days, batch=20_000)
    console.print(f"  {filled.events:,} events, {filled.alerts:,} alerts stored in {filled.seconds:.1f}s")
    variables = {"tenant": ALL, "entity": ALL, "worker": ALL, "alert": filled.alert_id}
    out = []
    for b in boards():
        for spec in b.specs:
            times = []
            rows = 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                _, r = run_panel(store, spec, start=filled.start, end=filled.end, variables=variables,
                                 interval_s=args.interval)
                times.append((time.perf_counter() - t0) * 1000)
                rows = len(r)
            out.append((f"{b.title} / {spec.title}", statistics.median(times), rows))
    return sorted(out, key=lambda x: -x[1])


def run(args: argparse.Namespace, settings: Any) -> int:
    from rich.console import Console
    from rich.table import Table

    from streams.settings import StoreURL
    from streams.sinks.clickhouse import ChdbStore, NativeStore

    console = Console(width=max(Console().width, 130))
    results = {}
    with tempfile.TemporaryDirectory(prefix="spyglass-bench-panels-") as tmp:
        store = ChdbStore(StoreURL.parse(f"chdb://{Path(tmp) / 'chdb'}"), database="bench_panels")
        store.execute("USE bench_panels")
        try:
            results["chDB " + store.version()] = _bench_store(store, "chDB", args, console)
        finally:
            store.close()
    if args.server:
        base = StoreURL.parse(args.server)
        if not base.password.get_secret_value() and settings.clickhouse_password_file is not None:
            base = base.with_password(settings.store().password)  # the password from its file, never argv
        db = "spyglass_bench_panels"
        server = NativeStore(base.with_database(db))
        try:
            server.execute(f"DROP DATABASE IF EXISTS {db}")
            server.execute(f"CREATE DATABASE {db}")
            server.execute(f"USE {db}")
            results["server " + server.version()] = _bench_store(server, "server", args, console)
            server.execute(f"DROP DATABASE IF EXISTS {db}")
        finally:
            server.close()
    for label, rows in results.items():
        t = Table("panel", "median ms", "rows", title=f"spyglass bench panels: {label}, {args.events:,} events, "
                  f"whole range, interval {args.interval}s, median of {args.repeat}")
        for name, ms, n in rows[: args.top]:
            t.add_row(name, f"{ms:,.0f}", f"{n:,}")
        console.print(t)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("panels", help="time the dashboards' heaviest panel queries on a large simulated database",
                       description="Simulate --events events, replay them through the engine into a fresh "
                       "database (chDB, and the server given by --server), run every panel query over the whole "
                       "range and print the slowest, in milliseconds.")
    add_traffic_args(p, events=1_000_000)
    p.add_argument("--days", type=int, default=7, help="simulated days (default 7)")
    p.add_argument("--repeat", type=int, default=3, help="runs per query; the median is shown (default 3)")
    p.add_argument("--interval", type=int, default=600, help="$__interval_s in seconds (default 600)")
    p.add_argument("--top", type=int, default=12, help="show the N slowest panels (default 12)")
    p.add_argument("--server", help="also on this ClickHouse server (clickhouse://user@host:port/db, or "
                   "clickhouses://...?ca_certs=... for TLS; a database spyglass_bench_panels is created and "
                   "dropped); give no password here: it is read from SPYGLASS_CLICKHOUSE_PASSWORD_FILE")
    p.set_defaults(func=run)
