"""The main job end to end, on the embedded default.

Starts the local Kafka broker, a ``spyglass worker`` and the simulator (``spyglass simulate
--kafka``) as processes of their own, and shows the alerts topic in a live terminal view while
the worker scores the traffic and writes events and alerts to the store (chDB in
``SPYGLASS_STACK_DIR`` unless ``SPYGLASS_CLICKHOUSE_URL`` says otherwise). When the worker has scored
everything (or on Ctrl-C) it is stopped with SIGTERM (it checkpoints and commits), the store is
summarised and an HTML report of it (:mod:`streams.htmlreport`) is written beside the stack's data.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from schemas.errors import SpyglassError
from streams.kafka_security import kafka_client_config
from streams.metrics import scrape
from streams.settings import Settings, StoreURL
from streams.simulator.run import Simulation
from streams.sinks.clickhouse import apply_ddl, open_store

RECENT = 8  # alerts the live view lists
KEPT = 200  # alerts kept to pick the latest from (they arrive in partition order, not event-time order)


@dataclass
class Flow:
    """What the demo has seen so far (the live view renders this)."""

    produced: int = 0
    scored: int = 0
    dead: int = 0
    alerts: int = 0
    partitions: int = 0
    worker_up: bool = False
    produced_all: bool = False
    by_severity: Counter = field(default_factory=Counter)
    by_detector: Counter = field(default_factory=Counter)
    recent: list = field(default_factory=list)  # (first_seen, severity, detector, entity, explanation)
    started: float = field(default_factory=time.perf_counter)

    def add_alert(self, first_seen: str, severity: str, detector: str, entity: str, explanation: str) -> None:
        self.alerts += 1
        self.by_severity[severity] += 1
        self.by_detector[detector] += 1
        self.recent.append((first_seen, severity, detector, entity, explanation))
        if len(self.recent) > 2 * KEPT:
            self.recent = sorted(self.recent)[-KEPT:]

    def latest(self, n: int = RECENT) -> list[tuple[str, str, str, str, str]]:
        """The ``n`` alerts latest in event time, latest first."""
        return sorted(self.recent, reverse=True)[:n]

    def doing(self) -> str:
        """What the pipeline is doing now, in words (the worker takes a while to start)."""
        if not self.worker_up:
            return "starting the worker: loading the detection engine and compiling its kernels (the first run " \
                   "takes longest)"
        if self.partitions == 0 and self.scored == 0:
            return "the worker is up and joining its consumer group"
        if self.scored == 0:
            return f"the worker owns {self.partitions} partitions and is warming up on its first batch"
        if not self.produced_all:
            return "scoring as the simulator produces"
        if self.scored + self.dead < self.produced:
            return "everything is produced; the worker is catching up"
        return "everything is scored; waiting for the worker to commit its offsets"


SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def cut(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``width`` characters (with an ellipsis).

    Examples
    --------
    >>> cut("key_1 failed authentication about 20 times in the last minute", 40)
    'key_1 failed authentication about 20 …'
    >>> cut("short", 40)
    'short'
    >>> cut("a-single-identifier-longer-than-the-room", 12)
    'a-single-id…'
    """
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = text[: width - 1]
    space = head.rfind(" ")
    return head[:space] + " …" if space > width // 2 else head + "…"


def describe_store(url: StoreURL) -> str:
    """Where the store is, in words.

    Examples
    --------
    >>> describe_store(StoreURL.parse("chdb:///var/lib/spyglass/chdb"))
    'the embedded ClickHouse engine (chDB) in /var/lib/spyglass/chdb'
    >>> describe_store(StoreURL.parse("clickhouse://w:secret@10.0.0.5:9000/spyglass"))
    'the ClickHouse server at 10.0.0.5:9000, database spyglass'
    """
    if url.scheme == "chdb":
        return f"the embedded ClickHouse engine (chDB) in {url.path}"
    return f"the ClickHouse server at {url.host}:{url.port}, database {url.database}"


def demo_settings(settings: Settings) -> Settings:
    """The demo's settings: unless ``SPYGLASS_CLICKHOUSE_URL`` is set, the store is chDB in ``SPYGLASS_STACK_DIR``
    (an absolute path, so the worker and the summary agree whatever their working directory)."""
    if "clickhouse_url" in settings.model_fields_set:
        return settings
    from pydantic import SecretStr

    return settings.model_copy(update={
        "clickhouse_url": SecretStr(f"chdb://{(settings.stack_dir / 'chdb').expanduser().resolve()}")})


def _view(flow: Flow, total: int, store_desc: str) -> Group:
    elapsed = max(time.perf_counter() - flow.started, 1e-6)
    head = Table.grid(padding=(0, 3))
    for _ in range(5):
        head.add_column(justify="right")
    head.add_row("produced", "scored", "lag", "dead letters", "alerts")
    lag = max(flow.produced - flow.scored - flow.dead, 0)
    head.add_row(f"{flow.produced:,}/{total:,}", f"{flow.scored:,}", f"{lag:,}", f"{flow.dead:,}", f"{flow.alerts:,}")
    head.add_row("", f"{flow.scored / elapsed:,.0f}/s", "", "", "")
    status = f"[bold]now:[/] {flow.doing()}"
    sev = Table("severity", "alerts", title="by severity", expand=True)
    for k in ("critical", "high", "medium", "low", "info"):
        if flow.by_severity[k]:
            sev.add_row(f"[{SEVERITY_STYLE[k]}]{k}[/]", f"{flow.by_severity[k]:,}")
    det = Table("detector", "alerts", title="by detector", expand=True)
    shown = flow.by_detector.most_common(RECENT)
    for d, n in shown:
        det.add_row(escape(d), f"{n:,}")
    if len(flow.by_detector) > len(shown):
        rest = flow.by_detector.total() - sum(n for _, n in shown)
        det.add_row(f"[dim]+{len(flow.by_detector) - len(shown)} more[/]", f"[dim]{rest:,}[/]")
    side = Table.grid(expand=True)
    side.add_column()
    side.add_column()
    side.add_row(sev, det)
    recent = Table("event time", "severity", "detector", "entity", "why", title="latest alerts by event time "
                   "(alerts topic)", expand=True)
    recent.columns[4].overflow = "ellipsis"
    for first_seen, severity, detector, entity, why in flow.latest():
        # entity and explanation carry event data (attacker-written): text, never rich markup
        recent.add_row(first_seen[5:19].replace("T", " "), f"[{SEVERITY_STYLE[severity]}]{severity}[/]",
                       escape(detector), escape(cut(entity, 28)), escape(cut(why, 90)))
    if flow.alerts > RECENT:
        recent.caption = f"+{flow.alerts - RECENT:,} more alerts"
    return Group(Panel(Group(head, status), title=f"Kafka -> spyglass worker -> alerts topic + {store_desc}"), side,
                 recent)


def _all_committed(settings: Settings, ends: dict) -> bool:
    """Has the worker group committed every record up to ``ends`` (so everything is scored and stored)?"""
    from streams.stack.kafka import group_offsets

    try:
        have = group_offsets(settings.kafka_bootstrap, settings.worker_group, **kafka_client_config(settings))
    except Exception:  # noqa: BLE001 - the group may not exist yet
        return False
    return all(have.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items())


def run_demo(settings: Settings, *, events: int, rate: float, seed: int, keep_stack: bool = False,
             report: Path | None = None) -> int:
    """Run the demo; 0 when every event was scored, 130 after Ctrl-C (the summary and report still come)."""
    import os

    import msgspec
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from schemas.alerts import Alert
    from streams.stack import Stack
    from streams.stack.base import free_port

    settings = demo_settings(settings)
    console = Console()
    where = describe_store(settings.store())
    console.print(f"events and alerts will be stored in {where}")
    stack = Stack(settings)
    console.print("[bold]starting the local Kafka broker[/] (first run downloads its jars from Maven Central)")
    ready = stack.up(services=("kafka",))
    console.print("ready: " + ", ".join(f"{k} {v:.1f}s" for k, v in ready.items()))

    sim = Simulation(seed=seed, events=events, days=max(1, min(7, events // 20_000)))
    port = free_port()
    env = {**os.environ, **settings.child_env(worker_web_port=port),
           # the simulation is dated from a fixed day (its labels depend on it), however long ago that is
           "SPYGLASS_EVENT_MAX_AGE_DAYS": "0"}
    log_path = (settings.stack_dir / "demo-worker.log").expanduser().resolve()
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

    # The worker and the emitter run as their own processes, as in production, in sessions of their own so that
    # Ctrl-C reaches only the demo, which then stops them in order (the worker with SIGTERM: it checkpoints).
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "streams.cli", "worker", "--name", "demo"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True,
        )
    producer = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "streams.cli", "simulate", "--kafka", "--seed", str(seed), "--events", str(events),
         "--days", str(sim.days), "--rate", str(rate)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        start_new_session=True,
    )
    flow = Flow()
    store_desc = "chDB store" if settings.store().scheme == "chdb" else "ClickHouse server"
    last_poll = 0.0
    idle_until = None
    ends: dict = {}
    ok = True
    interrupted = False
    try:
        with Live(_view(flow, sim.total, store_desc), console=console, refresh_per_second=4) as live:
            while True:
                for msgs in alerts_in.poll(timeout_ms=250, max_records=1000).values():
                    for msg in msgs:
                        a = decode_alert.decode(msg.value)
                        flow.add_alert(a.first_seen, a.severity, a.detector, a.entity, a.explanation)
                if time.perf_counter() - last_poll > 0.5:
                    # a partition without a leader for a moment: the last figures stand until the next poll
                    with contextlib.suppress(KafkaError, KeyError):
                        ends = alerts_in.end_offsets(event_parts)
                    flow.produced = sum(ends[tp] - start_offsets.get(tp, 0) for tp in ends)
                    counts = scrape(port)
                    if counts is not None:
                        flow.worker_up = True
                        flow.scored = int(counts.get("spyglass_events_in_total", 0))
                        flow.dead = int(counts.get("spyglass_dead_letters_total", 0))
                        flow.partitions = int(counts.get("spyglass_partitions_owned", 0))
                    last_poll = time.perf_counter()
                flow.produced_all = producer.poll() == 0
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
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]interrupted: stopping the simulator and the worker (it checkpoints first)[/]")
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
    from streams.htmlreport import write_report

    store = open_store(settings.store())
    try:
        apply_ddl(store)  # interrupted before the worker made its tables: the summary and report say "nothing yet"
        db = store.database
        stored_events = int(store.query(f"SELECT uniqExact(event_id) FROM {db}.events")[0][0])  # noqa: S608
        stored_alerts = int(store.query(f"SELECT uniqExact(alert_id) FROM {db}.alerts")[0][0])  # noqa: S608
        report_path = (report or settings.stack_dir / "demo-report.html").expanduser().resolve()
        write_report(store, report_path, where=where)
    finally:
        store.close()
    elapsed = time.perf_counter() - flow.started
    console.print()
    console.print(
        f"[bold green]{'stopped' if interrupted else 'done'}[/] in {elapsed:.1f}s: {flow.produced:,} events through "
        f"Kafka, {flow.scored:,} scored by the worker ({flow.dead} dead letters), {flow.alerts:,} alerts on "
        f"{settings.topic_alerts}. {where[0].upper() + where[1:]} now holds {stored_events:,} distinct events and "
        f"{stored_alerts:,} alerts (re-runs of a seed collapse by id); {len(sim.injections)} attack instances were "
        f"injected. Worker log: {log_path}", soft_wrap=True,
    )
    console.print(f"HTML report (open it in a browser): {report_path}", soft_wrap=True)
    if interrupted:
        return 130
    if not ok or flow.scored + flow.dead < sim.total:
        console.print(f"[red]{sim.total - flow.scored - flow.dead} events produced but not scored[/]")
        return 1
    return 0
