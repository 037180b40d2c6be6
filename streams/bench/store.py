"""``spyglass bench store``: the worker's ``events`` insert, current forms beside the previous ones.

The per-minute view (``events_minute_mv``) runs on every insert into ``events``. Until migration 010
it parsed each event's JSON payload on the server; since then the worker writes typed measure
columns and the view sums them. This benchmark inserts the same simulated events, in the same
batches, into fresh databases of the configured store, alternating batch by batch:

- **previous**: the schema as of migration 009, the columns without the measures (the JSON view);
- **current**: every migration, the columns as lists through clickhouse-driver's writers
  (``schemas.rows.block_columns``: what chDB, and a worker without the native module, use);
- **packed** (a ClickHouse server and the native module only): every migration, the columns built
  in Native form (``schemas.rows.block_packed``) and sent as they are (``NativeStore.insert_packed``):
  what the worker does.

Each batch is decoded into per-kind blocks once, outside the timing, as the worker has them. It
prints rows/s of the inserts (wall), the client's CPU per row (building the columns, and the
insert call), and the ClickHouse server's CPU per row when the server is the local stack's
(``spyglass stack up``); then the ratios. Merges the inserts start count to the database whose
batch is running, so a few rounds of alternation even that out.
"""

from __future__ import annotations

import argparse
import time
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.bench import add_traffic_args
from streams.settings import Settings

FORMS = ("previous", "current", "packed")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    import msgspec

    from schemas.block import blocks_of, native_available
    from schemas.events import decode
    from schemas.migrate import migrate
    from schemas.rows import block_columns, block_packed
    from streams.bench.stream import _cpu_s, _service_pids
    from streams.simulator.run import Simulation
    from streams.sinks.clickhouse import open_store

    console = Console()
    url = settings.store()
    sim = Simulation(seed=args.seed, events=args.events, days=1)
    enc = msgspec.json.Encoder()
    raws = [enc.encode(r) for chunk in sim.chunks() for r in chunk.rows]
    events = [decode(r) for r in raws]
    n = len(events)
    batches = [[b for b, _ in blocks_of(events[i:i + args.batch], raws[i:i + args.batch])]
               for i in range(0, n, args.batch)]
    for b in (b for batch in batches for b in batch):
        b.scores = [0.0] * len(b)
    forms = [f for f in FORMS if f != "packed" or (url.scheme == "clickhouse" and native_available())]
    server_pid = _service_pids(settings).get("clickhouse") if url.scheme == "clickhouse" else None
    tag = uuid.uuid4().hex[:8]
    dbs = {form: f"bench_store_{tag}_{form}" for form in forms}
    shared = open_store(url) if url.scheme != "clickhouse" else None  # chDB: one session, all databases in it
    stores = {form: shared or open_store(url.with_database(db)) for form, db in dbs.items()}
    for form in forms:
        stores[form].database = dbs[form]
        migrate(stores[form], target=9 if form == "previous" else None)
    wall = dict.fromkeys(forms, 0.0)
    build = dict.fromkeys(forms, 0.0)
    client = dict.fromkeys(forms, 0.0)
    server = dict.fromkeys(forms, 0.0)
    try:
        for _round in range(args.rounds):
            for blocks in batches:
                for form in forms:
                    c0 = time.process_time()
                    if form == "packed":
                        cols: Any = block_packed(blocks, datetime.now(UTC))
                    else:
                        cols = block_columns(blocks, datetime.now(UTC), measures=form != "previous")
                    c1 = time.process_time()
                    s0 = _cpu_s(server_pid) if server_pid else 0.0
                    stores[form].database = dbs[form]
                    t0 = time.perf_counter()
                    if form == "packed":
                        stores[form].insert_packed("events", cols)  # type: ignore[union-attr]
                    else:
                        stores[form].insert("events", cols)
                    wall[form] += time.perf_counter() - t0
                    client[form] += time.process_time() - c1
                    build[form] += c1 - c0
                    if server_pid:
                        server[form] += _cpu_s(server_pid) - s0
    finally:
        for form, st in stores.items():
            st.execute(f"DROP DATABASE IF EXISTS {dbs[form]}")
        for st in {id(s): s for s in stores.values()}.values():
            st.close()
    rows = n * args.rounds
    table = Table(title=f"bench store: {n:,} events x {args.rounds} rounds, {args.batch:,}-row inserts, "
                  f"{url.scheme} store", title_justify="left")
    for col in ("schema", "rows/s", "columns µs/row", "insert µs/row", "server µs/row"):
        table.add_column(col, justify="right" if col != "schema" else "left")

    def row(form: str, label: str) -> None:
        table.add_row(label, f"{rows / wall[form]:,.0f}", f"{build[form] / rows * 1e6:.2f}",
                      f"{client[form] / rows * 1e6:.2f}",
                      f"{server[form] / rows * 1e6:.2f}" if server_pid else "-")

    row("previous", "previous (009), lists")
    row("current", "current, lists")
    if "packed" in forms:
        row("packed", "current, packed")
    console.print(table)
    console.print("[dim]previous: the view parses each payload; current: typed measure columns, the view sums them. "
                  "lists: clickhouse-driver's writers; packed: Native form built by the worker, sent as it is. "
                  "rows/s: wall time of the inserts; columns: building them (the worker's share); "
                  "insert: the client's CPU in the insert call; server: ClickHouse server CPU[/]")
    ratio = wall["previous"] / wall["current"]
    console.print(f"current / previous insert rate: {ratio:.2f}x"
                  + (f"; server CPU per row {server['current'] / server['previous']:.2f}x of previous"
                     if server_pid and server["previous"] else ""))
    if "packed" in forms:
        def cpu(form: str) -> float:
            return build[form] + client[form]

        console.print(f"packed / lists: client CPU per row (columns + insert) {cpu('packed') / cpu('current'):.2f}x, "
                      f"insert rate {wall['current'] / wall['packed']:.2f}x")
    else:
        console.print("[dim]packed: only on a ClickHouse server, with the native module built[/]")
    if not server_pid:
        console.print("[dim]server CPU: only for the local stack's ClickHouse server (state.json pid)[/]")
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("store", help="events inserts per second and CPU per row, current schema vs the previous "
                       "(JSON-parsing) view", description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_traffic_args(r, events=100_000)
    r.add_argument("--batch", type=int, default=20_000, help="rows per insert (default 20000)")
    r.add_argument("--rounds", type=int, default=3, help="times every batch is inserted into each (default 3)")
    r.set_defaults(func=run)
