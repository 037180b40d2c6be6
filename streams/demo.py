"""The main job end to end, on the embedded default.

Starts the local Kafka broker, produces simulated traffic into the three event topics at
a target rate, consumes it back through the broker, decodes and validates every record,
stores the events in the ClickHouse store (chDB unless ``SPYGLASS_CLICKHOUSE_URL`` says
otherwise) and shows what flows in a live terminal view. The detection issues grow this
into the full pipeline (scoring and alerts); the shape stays the same.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from schemas.errors import SpyglassError
from streams.settings import Settings
from streams.simulator.run import Simulation
from streams.sinks.clickhouse import EventsSink, apply_ddl, open_store


@dataclass
class Flow:
    """What the consumer has seen so far (the live view renders this)."""

    produced: int = 0
    consumed: int = 0
    invalid: int = 0
    stored: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_tenant: Counter = field(default_factory=Counter)
    attack_events: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=6))
    errors: deque = field(default_factory=lambda: deque(maxlen=3))
    started: float = field(default_factory=time.perf_counter)


def _view(flow: Flow, total: int, store_desc: str) -> Group:
    elapsed = max(time.perf_counter() - flow.started, 1e-6)
    head = Table.grid(padding=(0, 3))
    for _ in range(5):
        head.add_column(justify="right")
    head.add_row("produced", "consumed", "lag", "stored", "invalid")
    head.add_row(f"{flow.produced:,}/{total:,}", f"{flow.consumed:,}", f"{flow.produced - flow.consumed:,}",
                 f"{flow.stored:,}", f"{flow.invalid:,}")
    head.add_row("", f"{flow.consumed / elapsed:,.0f}/s", "", "", "")
    kinds = Table("kind", "events", "share", title="by kind", expand=True)
    for k, n in flow.by_kind.most_common():
        kinds.add_row(k, f"{n:,}", f"{100 * n / max(flow.consumed, 1):.1f}%")
    tenants = Table("tenant", "events", title="by tenant", expand=True)
    for t, n in flow.by_tenant.most_common(5):
        tenants.add_row(t, f"{n:,}")
    side = Table.grid(expand=True)
    side.add_column()
    side.add_column()
    side.add_row(kinds, tenants)
    recent = Table("event time", "kind", "entity", "what", title="latest events", expand=True)
    for row in list(flow.recent):
        recent.add_row(*row)
    parts = [Panel(head, title=f"Kafka -> decode -> {store_desc}"), side, recent,
             f"[dim]ground-truth attack events seen so far: {flow.attack_events:,}[/]"]
    if flow.errors:
        parts.append(Panel("\n".join(flow.errors), title="dead letters (latest)", style="red"))
    return Group(*parts)


def _what(ev) -> str:
    k = type(ev).__struct_config__.tag
    if k == "api_usage":
        return f"{ev.method} {ev.endpoint} -> {ev.status} ({ev.auth_result})"
    if k == "data_access":
        return f"{ev.operation} {ev.dataset} [{ev.sensitivity}] {'granted' if ev.granted else 'DENIED'}"
    return f"{ev.action} on {ev.target_system} ({ev.privilege}, approval {ev.approval})"


def run_demo(settings: Settings, *, events: int, rate: float, seed: int, keep_stack: bool = False) -> int:
    from schemas.events import ENTITY_FIELD
    from streams.ingest import Ingestor
    from streams.stack import Stack

    console = Console()
    stack = Stack(settings)
    console.print("[bold]starting the local Kafka broker[/] (first run downloads its jars from Maven Central)")
    ready = stack.up(services=("kafka",))
    console.print("ready: " + ", ".join(f"{k} {v:.1f}s" for k, v in ready.items()))

    store = open_store(settings.store())
    apply_ddl(store)
    distinct_sql = f"SELECT uniqExact(event_id) FROM {store.database}.events"  # noqa: S608 - checked identifier

    sim = Simulation(seed=seed, events=events, days=max(1, min(7, events // 20_000)))
    attack_ids = {eid for inj in sim.injections for eid in inj.label.event_ids}
    sink = EventsSink(store)
    ingest = Ingestor(settings, sink, group_id=None, from_end=True, client_id="spyglass-demo")

    flow = Flow()
    start_offsets = ingest.end_offsets()

    def seen(ev) -> None:
        flow.by_tenant[ev.tenant] += 1
        if ev.event_id in attack_ids:
            flow.attack_events += 1

    # The emitter runs as its own process, as services would: `spyglass simulate --kafka`.
    producer = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "streams.cli", "simulate", "--kafka", "--seed", str(seed), "--events", str(events),
         "--days", str(sim.days), "--rate", str(rate)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    last_count = 0.0
    store_desc = f"{settings.store().scheme} store"
    idle_until = None
    try:
        with Live(_view(flow, sim.total, store_desc), console=console, refresh_per_second=4) as live:
            while flow.consumed + flow.invalid < sim.total:
                batch = ingest.poll(timeout_ms=250, on_event=seen)
                flow.consumed += len(batch.events)
                flow.invalid += len(batch.dead)
                flow.by_kind.update(batch.by_kind)
                flow.stored = sink.rows_written
                for topic, part, off, err in batch.dead:
                    flow.errors.append(f"{topic}[{part}]@{off}: {err}")
                if batch.events:
                    ev = batch.events[-1][0]
                    kind = type(ev).__struct_config__.tag
                    flow.recent.append((ev.ts.strftime("%a %H:%M:%S"), kind,
                                        getattr(ev, ENTITY_FIELD[kind]), _what(ev)))
                if time.perf_counter() - last_count > 0.5:  # produced = what the broker holds, not a promise
                    ends = ingest.end_offsets()
                    flow.produced = sum(ends[tp] - start_offsets.get(tp, 0) for tp in ends)
                    last_count = time.perf_counter()
                live.update(_view(flow, sim.total, store_desc))
                if producer.poll() not in (None, 0):
                    raise SpyglassError(f"the simulator failed: {producer.stderr.read().decode()[-2000:]}")
                if producer.poll() is not None and not batch.events and not batch.dead:
                    idle_until = idle_until or time.perf_counter() + 30
                    if time.perf_counter() > idle_until:
                        break
    finally:
        if producer.poll() is None:
            producer.terminate()
        producer.wait(timeout=30)
        ingest.close()
        if not keep_stack:
            stack.down()
    distinct = store.query(distinct_sql)[0][0]
    store.close()
    elapsed = time.perf_counter() - flow.started
    console.print()
    console.print(
        f"[bold green]done[/] in {elapsed:.1f}s: {flow.produced:,} events through Kafka, {flow.consumed:,} consumed "
        f"and valid ({flow.invalid} dead letters), {sink.rows_written:,} rows written to {settings.store()}, "
        f"which now holds {distinct:,} distinct events (re-runs of a seed collapse by event_id); "
        f"{flow.attack_events:,} events belong to {len(sim.injections)} injected attack instances."
    )
    lost = sim.total - flow.consumed - flow.invalid
    if lost:
        console.print(f"[red]{lost} events produced but not consumed[/]")
        return 1
    return 0
