"""``spyglass bench stream``: the worker on the real broker, beside a plain consumer (the ceiling).

1. Produce N simulated events into fresh topics of the running local Kafka.
2. Ceiling: a plain consumer (aiokafka) reads every record of those topics and decodes it into
   blocks, as the worker does.
3. One worker (``spyglass worker``, its own process and consumer group) scores the same
   records: sustained events/s from its first scored event to the last one stored, and consumer lag.
4. Two workers in one group over the same records: the speed-up over one.
5. Latency: events produced in real time at ``--latency-rate`` of the one-worker rate (half by
   default, the target's); for every alert, the
   time from the production of its triggering event to the alert being readable in ClickHouse.

Needs the stack (``spyglass stack up``) and a store URL that several processes can share
(the ClickHouse server; chDB is single-process): ``SPYGLASS_CLICKHOUSE_URL=clickhouse://...``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from rich.console import Console
from rich.table import Table

from streams.bench import add_traffic_args
from streams.kafka_security import kafka_client_config
from streams.metrics import scrape
from streams.settings import Settings
from streams.simulator.output import produce_kafka
from streams.simulator.run import Simulation


def _topics(settings: Settings, tag: str) -> Settings:
    return settings.model_copy(update={
        **Settings.topic_names(f"bench-{tag}"),
        "worker_group": f"bench-{tag}", "topic_otlp_spans": "",  # the benchmark sends no spans
    })


def _plain_consumer(settings: Settings, n: int, partitions: int) -> float:
    """Seconds a plain consumer needs to read and decode n records of the event topics.

    aiokafka, the client under Faust, fetching in batches with its C record parser and handing on
    the records as parsed, as the worker's consumer does (:class:`streams.transport.RawPartitionRecords`),
    and each partition's batch decoded into a block as the worker decodes it (:func:`schemas.block.decode_block`:
    the native decoder where it is built). That is the least a consumer that scores the events must do, so the
    worker is compared with the real ceiling. (msgspec decoding each record into a struct instead, the form
    before, read at the same rate within the noise: 163-198k against 174-224k events/s, four alternating rounds.)
    """
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from schemas.block import decode_block
    from streams.transport import install_raw_records, raw_values

    install_raw_records()
    kinds = {topic: kind for kind, topic in settings.topics().items()}

    async def read() -> float:
        c = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",  # fetch sizes as the worker's
                             fetch_max_wait_ms=settings.worker_fetch_max_wait_ms, value_deserializer=raw_values,
                             **kafka_client_config(settings, "aiokafka"))
        await c.start()
        try:
            parts = [TopicPartition(t, p) for t in settings.topics().values() for p in range(partitions)]
            c.assign(parts)
            await c.seek_to_beginning(*parts)
            got = 0
            t0 = time.perf_counter()
            deadline = time.monotonic() + 600
            while got < n:
                if time.monotonic() > deadline:
                    raise SystemExit(f"plain consumer read {got:,} of {n:,} records in 600 s")
                for tp, msgs in (await c.getmany(timeout_ms=500, max_records=5000)).items():
                    decode_block([m.value for m in msgs], kinds[tp.topic], settings.default_tenant)
                    got += len(msgs)
            return time.perf_counter() - t0
        finally:
            with contextlib.suppress(asyncio.CancelledError):  # aiokafka 0.14 re-raises its cancelled routine
                await c.stop()

    return asyncio.run(read())


def _metric(port: int, name: str) -> float:
    """One metric of a worker, summed over its labels; -1 while it does not answer."""
    values = scrape(port)
    return -1.0 if values is None else values.get(name, 0.0)


def _start_worker(settings: Settings, name: str, tmp: Path, **updates: Any) -> subprocess.Popen:
    """``spyglass worker`` in a process of its own, with these settings; its log in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPYGLASS_")}
    env.update(settings.child_env(stack_dir=tmp, **updates))
    with open(tmp / f"{name}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker", "--name", name],  # noqa: S603
                                stdout=log, stderr=log, env=env, start_new_session=True)


STAGES = ("fetch.wait", "decode", "score", "snapshot", "backpressure", "publish", "store", "checkpoint", "store.events")


def _cpu_times(pid: int) -> tuple[float, float]:
    """CPU seconds a process has used so far: (user + system, system), from one read; zeros if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[12]) / tick


def _cpu_s(pid: int, *, kernel: bool = False) -> float:
    """CPU seconds (user + system, or with ``kernel`` system only) a process has used so far; 0 if it is gone."""
    return _cpu_times(pid)[kernel]


def _service_pids(settings: Settings) -> dict[str, int]:
    """Pids of the local stack's broker and ClickHouse server (state.json), for CPU accounting."""
    from streams.stack.manager import read_state

    state = read_state(settings.stack_dir) or {}
    return {name: int(svc["pid"]) for name, svc in state.get("services", {}).items()
            if name in ("kafka", "clickhouse") and svc.get("pid")}


def _set_affinity(pid: int, cpus: set[int]) -> None:
    """Every thread of ``pid`` on ``cpus`` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def _pinned(worker: int, others: list[int], core: int = 0) -> Iterator[None]:
    """``worker`` (and the children it starts) on ``core``; ``others`` and this process on the other cores,
    put back on every core afterwards."""
    every = os.sched_getaffinity(0)
    rest = every - {core}
    if core not in every or not rest:
        raise SystemExit(f"--pin needs CPU {core} and at least one other; this process may use {sorted(every)}")
    _set_affinity(worker, {core})
    for pid in [*others, os.getpid()]:
        _set_affinity(pid, rest)
    try:
        yield
    finally:
        for pid in [*others, os.getpid()]:
            with contextlib.suppress(OSError):
                _set_affinity(pid, every)


def _workers(settings: Settings, db: str, group: str, n_workers: int, n: int, tmp: Path,
             timeout_s: float = 600, pin: bool = False) -> tuple[float, float, list[float], dict[str, float]]:
    """Start workers, wait until they scored n events.

    ``pin`` (one worker): the worker on a core of its own, everything else on the others (:func:`_pinned`).

    Returns (seconds from the first scored batch to the last event stored, max lag seen, rss MB per worker,
    seconds per pipeline stage plus ``cpu:<process>`` and ``cpu:kernel:<process>``: CPU seconds each process
    used in that time, all and in the kernel).
    """
    from streams.stack.base import free_port

    ports = [free_port() for _ in range(n_workers)]
    procs = [_start_worker(settings, f"{group}-{i}", tmp, worker_group=group, worker_web_port=port,
                           clickhouse_url=settings.store().with_database(db).secret_url())
             for i, port in enumerate(ports)]
    services = _service_pids(settings)

    def cpu() -> dict[str, float]:
        out: dict[str, float] = {}
        for k, pids in {"workers": [p.pid for p in procs], **{k: [v] for k, v in services.items()}}.items():
            times = [_cpu_times(pid) for pid in pids]  # one read of each process for both figures
            out[k], out[f"kernel:{k}"] = sum(t[0] for t in times), sum(t[1] for t in times)
        return out

    first = last = None
    lag = 0.0
    cpu0: dict[str, float] = {}
    cpu1: dict[str, float] = {}
    assert not pin or n_workers == 1
    pinning = _pinned(procs[0].pid, list(services.values())) if pin else contextlib.nullcontext()
    deadline = time.monotonic() + timeout_s
    try:
        with pinning:
            while time.monotonic() < deadline:
                scraped = [scrape(p) or {} for p in ports]  # one scrape per worker and tick: it costs the worker CPU
                done = sum(v.get("spyglass_events_stored_total", 0.0) for v in scraped)  # stored, not just scored
                lag = max(lag, sum(v.get("spyglass_consumer_lag", 0.0) for v in scraped))
                now = time.perf_counter()
                if first is None and sum(v.get("spyglass_events_in_total", 0.0) for v in scraped) > 0:
                    first, cpu0 = now, cpu()  # the first scored batch: the work before the first insert counts
                if done >= n:
                    last, cpu1 = now, cpu()
                    break
                # polling /metrics costs the worker's event loop: not too often once it scores (a tick late at the
                # end shortens the measured rate by at most the tick), but often until then, so that the start
                # is not late
                time.sleep(0.02 if first is None else 0.25)
        rss = [_rss_mb(p.pid) for p in procs]
        stages = {k: 0.0 for k in STAGES}
        for p in ports:
            for k, v in (scrape(p, series=True) or {}).items():
                if k.startswith("spyglass_stage_seconds_total{"):
                    stage = k.split('"')[1]
                    stages[stage] = stages.get(stage, 0.0) + v
                elif k.startswith("spyglass_gc_seconds_total{"):
                    stages["gc"] = stages.get("gc", 0.0) + v
                elif k == 'spyglass_store_inserts_total{table="events"}':
                    stages["inserts"] = stages.get("inserts", 0.0) + v
                elif k in ("spyglass_engine_batch_records_sum", "spyglass_engine_batch_records_count"):
                    stages[k] = stages.get(k, 0.0) + v
        if cpu0 and cpu1:
            stages.update({f"cpu:{k}": cpu1[k] - cpu0[k] for k in cpu1})
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    if first is None or last is None:
        raise SystemExit(f"workers did not score {n} events in {timeout_s}s; logs in {tmp}")
    return last - first, lag, rss, stages


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _latency(settings: Settings, db: str, rate: float, events: int, seed: int,
             tmp: Path) -> tuple[list[float], list[float]]:
    """For every alert of a real-time run, seconds until it is readable in ClickHouse: from the
    broker's acknowledgement of its triggering event (the event is in Kafka), and from the
    benchmark's ``send`` call (which adds the producer client's own queueing)."""
    from kafka import KafkaProducer

    from streams.sinks.clickhouse import open_store
    from streams.stack.base import free_port

    group = f"{settings.worker_group}-lat"
    port = free_port()
    url = settings.store().with_database(db)
    lat = settings.model_copy(update={k: getattr(settings, k) + "-lat"
                                      for k in ("topic_api_usage", "topic_data_access", "topic_agent_execution",
                                                "topic_risk_evidence")})
    from streams.stack.kafka import ensure_topics

    ensure_topics(lat)
    proc = _start_worker(lat, group, tmp, worker_group=group, worker_web_port=port, clickhouse_url=url.secret_url())
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    try:
        while _metric(port, "spyglass_partitions_owned") < 1:  # the worker has joined its group
            time.sleep(0.2)
        sim = Simulation(seed=seed, events=events, days=1)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all", linger_ms=5,
                                 **kafka_client_config(settings))
        enc = msgspec.json.Encoder()
        stop = threading.Event()
        store = open_store(url)

        first_event: dict[str, str] = {}

        def watch() -> None:  # poll the store: when does each alert become readable?
            while not stop.is_set():
                for alert_id, event_id in store.query(
                        f"SELECT alert_id, event_ids[1] FROM {db}.alerts"):  # noqa: S608 - our own database name
                    if alert_id not in seen:
                        seen[alert_id] = time.time()
                        first_event[alert_id] = event_id
                time.sleep(0.02)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        t0 = time.perf_counter()
        topics = lat.topics()
        from streams.simulator.output import PARTITION_KEY

        i = 0
        for chunk in sim.chunks():
            for row in chunk.rows:
                due = t0 + i / rate
                while time.perf_counter() < due:
                    time.sleep(min(due - time.perf_counter(), 0.005))
                kind = row["kind"]
                fut = producer.send(topics[kind], key=row[PARTITION_KEY[kind]].encode(), value=enc.encode(row))
                sent[row["event_id"]] = time.time()
                fut.add_callback(lambda md, e=row["event_id"]: acked.__setitem__(e, time.time()))
                i += 1
        producer.flush()
        time.sleep(8)  # let the last alerts land
        stop.set()
        t.join(5)
        store.close()
        producer.close()
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    if os.environ.get("SPYGLASS_BENCH_TRACE"):  # each alert: when its event was sent, and its latency
        t_start = min(sent.values())
        for a, e in sorted(first_event.items(), key=lambda x: sent.get(x[1], 0)):
            if e in sent:
                print(f"{sent[e] - t_start:8.2f} s  {seen[a] - sent[e]:8.3f} s  {a}  acked after "
                      f"{acked.get(e, float('nan')) - sent[e]:.3f} s", file=sys.stderr)
    pairs = [(a, e) for a, e in first_event.items() if e in sent and e in acked]
    return [seen[a] - acked[e] for a, e in pairs], [seen[a] - sent[e] for a, e in pairs]


def run(args: argparse.Namespace, settings: Settings) -> int:
    import tempfile

    from streams.sinks.clickhouse import apply_ddl, open_store
    from streams.stack.kafka import delete_topics, ensure_topics

    console = Console()
    if settings.store().scheme != "clickhouse":
        raise SystemExit("bench stream needs a store several processes share: SPYGLASS_CLICKHOUSE_URL=clickhouse://...")
    if not 0 < args.latency_rate <= 2:
        raise SystemExit(f"--latency-rate: {args.latency_rate:g} is not a fraction of the 1-worker rate in (0, 2]")
    tag = uuid.uuid4().hex[:8]
    s = _topics(settings, tag)
    names = ensure_topics(s, partitions=args.partitions)
    tmp = Path(tempfile.mkdtemp(prefix="spyglass-bench-stream-"))
    url = settings.store()
    admin = open_store(url)
    dbs = {k: f"bench_{tag}_{k}" for k in ("one", "two", "lat")}
    try:
        for db in dbs.values():
            st = open_store(url.with_database(db))
            apply_ddl(st)
            st.close()
        sim = Simulation(seed=args.seed, events=args.events, days=max(1, min(7, args.events // 30_000)))
        from schemas.block import native_available

        console.print(f"producing {sim.total:,} events into {args.partitions} partitions per topic ... "
                      f"(workers decode with {'the native decoder' if native_available() else 'msgspec'})")
        stats = produce_kafka(sim, s.kafka_bootstrap, s.topics(), client_config=kafka_client_config(s))
        n = stats.events
        plain = _plain_consumer(s, n, args.partitions)
        one, lag1, rss1, stages1 = _workers(s, dbs["one"], f"{s.worker_group}-one", 1, n, tmp, pin=args.pin)
        two, lag2, _, stages2 = _workers(s, dbs["two"], f"{s.worker_group}-two", 2, n, tmp)
        rate1 = n / one
        lat_rate = rate1 * args.latency_rate
        lat, lat_send = _latency(s, dbs["lat"], lat_rate, args.latency_events, args.seed + 1, tmp) \
            if args.latency_events else ([], [])
        t = Table(title=f"bench stream: {n:,} events, {args.partitions} partitions per topic, store {url.host}")
        t.add_column("run")
        t.add_column("events/s", justify="right")
        t.add_column("vs plain consumer", justify="right")
        t.add_column("max lag", justify="right")
        t.add_column("peak RSS", justify="right")
        t.add_row("plain consumer (aiokafka): read + decode into blocks, the ceiling", f"{n / plain:,.0f}", "1.00",
                  "-", "-")
        t.add_row("1 worker: decode, score, publish, store, checkpoint", f"{rate1:,.0f}", f"{rate1 / (n / plain):.2f}",
                  f"{lag1:,.0f}", f"{max(rss1):,.0f} MB")
        t.add_row("2 workers, one group", f"{n / two:,.0f}", f"{(n / two) / (n / plain):.2f}", f"{lag2:,.0f}", "-")
        console.print(t)
        console.print(f"2 workers / 1 worker: {one / two:.2f}x")
        st = Table(title="where the 1-worker run's time went (spyglass_stage_seconds_total)")
        st.add_column("stage")
        st.add_column("seconds", justify="right")
        st.add_column("µs per event", justify="right")
        st.add_column("thread")
        for k in STAGES:
            st.add_row(k, f"{stages1.get(k, 0.0):.2f}", f"{stages1.get(k, 0.0) / n * 1e6:,.1f}",
                       "event loop" if k in ("decode", "score", "snapshot") else
                       "event loop, waiting" if k in ("fetch.wait", "backpressure") else
                       "events lane (its own connection)" if k == "store.events" else "writer (awaits Kafka / store)")
        if "gc" in stages1:
            st.add_row("garbage collection", f"{stages1['gc']:.2f}", f"{stages1['gc'] / n * 1e6:,.1f}",
                       "any (inside the stages above)")
        st.add_row("wall, first scored to last stored event", f"{one:.2f}", f"{one / n * 1e6:,.1f}", "")
        console.print(st)
        if stages1.get("inserts"):
            console.print(f"events inserts: {stages1['inserts']:,.0f}, {n / stages1['inserts']:,.0f} rows each "
                          "on average (the writer merges the batches waiting for it)")
        if stages1.get("spyglass_engine_batch_records_count"):
            calls = stages1["spyglass_engine_batch_records_count"]
            console.print(f"engine calls: {calls:,.0f}, {stages1['spyglass_engine_batch_records_sum'] / calls:,.0f} "
                          "records each on average (a partition's share of a fetch, up to worker_batch_max "
                          f"{s.worker_batch_max:,} per fetch)")
        ct = Table(title="CPU used from the first scored batch to the last stored event (/proc, user + system; "
                         "in brackets the part in the kernel)")
        ct.add_column("process")
        ct.add_column("1 worker: µs per event", justify="right")
        ct.add_column("2 workers: µs per event", justify="right")
        for k, label in (("workers", "worker process(es), all threads"), ("clickhouse", "ClickHouse server"),
                         ("kafka", "Kafka broker")):
            ct.add_row(label, *(f"{st_[f'cpu:{k}'] / n * 1e6:,.1f} ({st_[f'cpu:kernel:{k}'] / n * 1e6:,.1f})"
                                if f"cpu:{k}" in st_ else "-" for st_ in (stages1, stages2)))
        console.print(ct)
        if "cpu:workers" in stages1:
            per_core = n / stages1["cpu:workers"]
            console.print(f"one worker on a core of its own (events per CPU-second of the 1-worker run): "
                          f"{per_core:,.0f} events/s, {per_core / (n / plain):.2f} of the plain consumer; "
                          "derived from CPU time, not measured wall time")
        if lat:
            for label, xs in (("event in Kafka (broker ack)", lat), ("producer send() call", lat_send)):
                q = np.percentile(np.array(xs) * 1000, [50, 90, 99, 100])
                console.print(f"{label} -> alert in ClickHouse at {lat_rate:,.0f} events/s "
                              f"({args.latency_rate:g} of the 1-worker rate), {len(xs)} alerts: p50 {q[0]:,.0f} ms, "
                              f"p90 {q[1]:,.0f} ms, p99 {q[2]:,.0f} ms, "
                              f"max {q[3]:,.0f} ms")
        else:
            console.print("latency: no alerts in the latency run")
        shared = ("the 1-worker run's worker had CPU 0 to itself (broker, ClickHouse server and this process the "
                  "others); the other runs share every core" if args.pin
                  else "broker, ClickHouse server, workers and this process share them")
        console.print(f"[dim]cores: {os.cpu_count()}; {shared}; logs in {tmp}[/]")
    finally:
        for db in dbs.values():
            admin.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
        lat_names = [f"{x}-lat" for x in (*s.topics().values(), s.topic_risk_evidence)]
        delete_topics(s, names + lat_names)
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("stream", help="worker events/s, lag and event-to-alert latency on the local Kafka, "
                       "beside a plain consumer", description=__doc__.split("\n\n", 1)[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_traffic_args(r, events=200_000, what="events to produce")
    r.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    r.add_argument("--latency-events", type=int, default=30_000,
                   help="events of the real-time latency run (default 30000; 0 skips it)")
    r.add_argument("--latency-rate", type=float, default=0.5, metavar="FRACTION",
                   help="the latency run's rate, as a fraction of the 1-worker run's events/s (default 0.5, "
                        "the target's half rate; 0.9 shows alerts under load)")
    r.add_argument("--pin", action="store_true",
                   help="the 1-worker run on CPU 0 alone, the broker, ClickHouse and "
                        "this process on the other CPUs: events/s of one worker on one core, on the wall")
    r.set_defaults(func=run)
