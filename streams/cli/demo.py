"""The main job end to end, on the embedded default.

Starts the local Kafka broker, a ``spyglass worker`` and the simulator (``spyglass simulate
--kafka``) as processes of their own, and shows the alerts topic in a live terminal view while
the worker scores the traffic and writes events and alerts to the store (chDB unless
``SPYGLASS_CLICKHOUSE_URL`` says otherwise). When the worker has scored everything it is
stopped with SIGTERM (it checkpoints and commits), and the store is summarised.
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
from streams.kafka_security import kafka_client_config
from streams.metrics import scrape
from streams.settings import Settings
from streams.simulator.run import Simulation
from streams.sinks.clickhouse import open_store


@dataclass
class Flow:
    """What the demo has seen so far (the live view renders this)."""

    produced: int = 0
    scored: int = 0
    dead: int = 0
    alerts: int = 0
    by_severity: Counter = field(default_factory=Counter)
    by_detector: Counter = field(default_factory=Counter)
    recent: deque = field(default_factory=lambda: deque(maxlen=8))
    started: float = field(default_factory=time.perf_counter)


SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def _view(flow: Flow, total: int, store_desc: str) -> Group:
    elapsed = max(time.perf_counter() - flow.started, 1e-6)
    head = Table.grid(padding=(0, 3))
    for _ in range(5):
        head.add_column(justify="right")
    head.add_row("produced", "scored", "lag", "dead letters", "alerts")
    lag = max(flow.produced - flow.scored - flow.dead, 0)
    head.add_row(f"{flow.produced:,}/{total:,}", f"{flow.scored:,}", f"{lag:,}", f"{flow.dead:,}", f"{flow.alerts:,}")
    head.add_row("", f"{flow.scored / elapsed:,.0f}/s", "", "", "")
    sev = Table("severity", "alerts", title="by severity", expand=True)
    for k in ("critical", "high", "medium", "low", "info"):
        if flow.by_severity[k]:
            sev.add_row(f"[{SEVERITY_STYLE[k]}]{k}[/]", f"{flow.by_severity[k]:,}")
    det = Table("detector", "alerts", title="by detector", expand=True)
    for d, n in flow.by_detector.most_common(8):
        det.add_row(d, f"{n:,}")
    side = Table.grid(expand=True)
    side.add_column()
    side.add_column()
    side.add_row(sev, det)
    recent = Table("event time", "severity", "detector", "entity", "why", title="latest alerts (alerts topic)",
                   expand=True)
    for row in list(flow.recent):
        recent.add_row(*row)
    return Group(Panel(head, title=f"Kafka -> spyglass worker -> alerts topic + {store_desc}"), side, recent)


def _all_committed(settings: Settings, ends: dict) -> bool:
    """Has the worker group committed every record up to ``ends`` (so everything is scored and stored)?"""
    from streams.stack.kafka import group_offsets

    try:
        have = group_offsets(settings.kafka_bootstrap, settings.worker_group, **kafka_client_config(settings))
    except Exception:  # noqa: BLE001 - the group may not exist yet
        return False
    return all(have.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items())


def run_demo(settings: Settings, *, events: int, rate: float, seed: int, keep_stack: bool = False) -> int:
    import os

    import msgspec
    from kafka import KafkaConsumer, TopicPartition

    from schemas.alerts import Alert
    from streams.stack import Stack
    from streams.stack.base import free_port

    console = Console()
    stack = Stack(settings)
    console.print("[bold]starting the local Kafka broker[/] (first run downloads its jars from Maven Central)")
    ready = stack.up(services=("kafka",))
    console.print("ready: " + ", ".join(f"{k} {v:.1f}s" for k, v in ready.items()))

    sim = Simulation(seed=seed, events=events, days=max(1, min(7, events // 20_000)))
    port = free_port()
    env = {**os.environ, "SPYGLASS_WORKER_WEB_PORT": str(port), "SPYGLASS_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           # the simulation is dated from a fixed day (its labels depend on it), however long ago that is
           "SPYGLASS_EVENT_MAX_AGE_DAYS": "0"}
    log_path = settings.stack_dir / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    alerts_in = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","), group_id=None,
                              enable_auto_commit=False, client_id="spyglass-demo-view",
                              **kafka_client_config(settings))
    parts = [TopicPartition(settings.topic_alerts, p)
             for p in sorted(alerts_in.partitions_for_topic(settings.topic_alerts) or [])]
    alerts_in.assign(parts)
    for tp, off in alerts_in.end_offsets(parts).items():
        alerts_in.seek(tp, off)  # this run's alerts only
    event_parts = [TopicPartition(t, p) for t in settings.topics().values()
                   for p in sorted(alerts_in.partitions_for_topic(t) or [])]
    start_offsets = alerts_in.end_offsets(event_parts)
    decode_alert = msgspec.json.Decoder(Alert)

    # The worker and the emitter run as their own processes, as in production.
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "streams.cli", "worker", "--name", "demo"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
        )
    producer = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "streams.cli", "simulate", "--kafka", "--seed", str(seed), "--events", str(events),
         "--days", str(sim.days), "--rate", str(rate)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    flow = Flow()
    store_desc = f"{settings.store().scheme} store"
    last_poll = 0.0
    idle_until = None
    ends: dict = {}
    ok = True
    try:
        with Live(_view(flow, sim.total, store_desc), console=console, refresh_per_second=4) as live:
            while True:
                for msgs in alerts_in.poll(timeout_ms=250, max_records=1000).values():
                    for msg in msgs:
                        a = decode_alert.decode(msg.value)
                        flow.alerts += 1
                        flow.by_severity[a.severity] += 1
                        flow.by_detector[a.detector] += 1
                        flow.recent.append((a.first_seen[5:19].replace("T", " "),
                                            f"[{SEVERITY_STYLE[a.severity]}]{a.severity}[/]", a.detector, a.entity,
                                            a.explanation[:90]))
                if time.perf_counter() - last_poll > 0.5:
                    ends = alerts_in.end_offsets(event_parts)
                    flow.produced = sum(ends[tp] - start_offsets.get(tp, 0) for tp in ends)
                    counts = scrape(port)
                    if counts is not None:
                        flow.scored = int(counts.get("spyglass_events_in_total", 0))
                        flow.dead = int(counts.get("spyglass_dead_letters_total", 0))
                    last_poll = time.perf_counter()
                live.update(_view(flow, sim.total, store_desc))
                if worker.poll() is not None:
                    raise SpyglassError(f"the worker exited ({worker.returncode}); see {log_path}")
                if producer.poll() not in (None, 0):
                    raise SpyglassError(f"the simulator failed: {producer.stderr.read().decode()[-2000:]}")
                if producer.poll() == 0 and flow.produced >= sim.total and _all_committed(settings, ends):
                    break
                if producer.poll() == 0:  # produced everything; give the worker time to drain
                    idle_until = idle_until or time.perf_counter() + 120
                    if time.perf_counter() > idle_until:
                        ok = False
                        break
    finally:
        if producer.poll() is None:
            producer.terminate()
        producer.wait(timeout=30)
        if worker.poll() is None:
            worker.terminate()  # SIGTERM: the worker checkpoints and commits, then exits
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()  # never leave a worker behind holding the embedded store
            worker.wait(timeout=10)
            ok = False
        alerts_in.close()
        if not keep_stack:
            stack.down()
    store = open_store(settings.store())
    db = store.database
    stored_events = int(store.query(f"SELECT uniqExact(event_id) FROM {db}.events")[0][0])  # noqa: S608
    stored_alerts = int(store.query(f"SELECT uniqExact(alert_id) FROM {db}.alerts")[0][0])  # noqa: S608
    store.close()
    elapsed = time.perf_counter() - flow.started
    console.print()
    console.print(
        f"[bold green]done[/] in {elapsed:.1f}s: {flow.produced:,} events through Kafka, {flow.scored:,} scored by "
        f"the worker ({flow.dead} dead letters), {flow.alerts:,} alerts on {settings.topic_alerts}. "
        f"{settings.store()} now holds {stored_events:,} distinct events and {stored_alerts:,} alerts "
        f"(re-runs of a seed collapse by id); {len(sim.injections)} attack instances were injected. "
        f"Worker log: {log_path}"
    )
    if not ok or flow.scored + flow.dead < sim.total:
        console.print(f"[red]{sim.total - flow.scored - flow.dead} events produced but not scored[/]")
        return 1
    return 0
