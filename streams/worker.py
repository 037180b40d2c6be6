"""``spyglass worker``: the Faust app. Every fetch of the three event topics (and of the risk-evidence
topic, correlated across kinds) goes to one scoring handler.

Workers share partitions through Kafka's consumer group (the Faust app id). Each fetch of
Faust's consumer comes whole to ``score`` (:mod:`streams.transport`), without Faust's
per-message streams and automatic acks; :class:`~streams.scoring.Scorer` scores,
publishes and stores them and says which records are safe to ack (their partition's state
is checkpointed), and only those are acked, so Faust commits nothing that could be lost.
Faust's own exactly-once mode is not used (``processing_guarantee`` stays at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import faust
import msgspec
from faust.types import TP
from prometheus_client import generate_latest

from schemas.errors import ConfigError
from schemas.migrate import pending
from streams import metrics as m
from streams.checkpoints import CheckpointStore, Mark, checkpoint_key
from streams.kafka_security import kafka_client_config
from streams.scoring import Scorer
from streams.settings import Settings
from streams.sinks.clickhouse import NativeStore, apply_ddl, open_store
from streams.transport import BatchApp, Fetch

log = logging.getLogger("spyglass.worker")


def build_app(settings: Settings, *, worker_name: str | None = None, store: Any = None) -> tuple[faust.App, Scorer]:
    name = worker_name or f"{socket.gethostname()}-{os.getpid()}"
    datadir = settings.stack_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = BatchApp(
        settings.worker_group,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        store="memory://",
        topic_disable_leader=True,
        topic_allow_declare=False,
        producer_acks=-1,
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=settings.worker_session_timeout_s / 4,
        broker_commit_every=1,  # commit whatever has been acked, as soon as it is acked
        broker_commit_interval=1.0,
        # at shutdown Faust would wait for every record to be acked, but records are acked only
        # at checkpoints: the final checkpoint (on_before_shutdown) comes after the consumer stops
        stream_wait_empty=False,
        broker_max_poll_records=settings.worker_batch_max,
        web_enabled=settings.worker_web_port > 0,
        web_port=settings.worker_web_port or 6066,
        web_bind=str(settings.worker_web_host),  # the address /health and /metrics listen on
        web_host=str(settings.worker_web_host),
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        broker_client_id=f"spyglass-{name}",
        datadir=str(datadir / name),
        **kafka_client_config(settings, "faust"),
    )
    store = store if store is not None else open_store(settings.store())
    # the events inserts get a connection of their own on a server, so an alert never waits behind one; the
    # embedded store is one session per process, shared
    events_store = open_store(store.url) if isinstance(store, NativeStore) else None
    key = worker_checkpoint_key(settings)
    checkpoints = CheckpointStore(store, settings.worker_group, key, worker=name)

    async def publish(topic: str, key_: bytes | None, value: bytes, headers: list | None) -> Any:
        return await app.producer.send(topic, key_, value, None, None, headers)

    def ack(topic: str, partition: int, offsets: list[int]) -> None:  # Faust commits up to the highest
        app.consumer.ack_offsets(TP(topic, partition), offsets)               # contiguous acked offset

    def crash(exc: BaseException) -> None:  # the writer failed: exit (non-zero) and let the group move on
        asyncio.get_running_loop().create_task(app.crash(exc))

    async def log_bounds(topic: str, partition: int) -> tuple[int, int]:
        tp = TP(topic, partition)
        start = (await app.consumer.earliest_offsets(tp)).get(tp, 0)
        end = (await app.consumer.highwaters(tp)).get(tp, 0)
        return start, end

    record_reader = RecordReader(settings)
    scorer = Scorer(settings, store, checkpoints, publish, ack=ack, worker=name, on_failure=crash,
                    published_alerts=lambda since_ms: published_alert_ids(settings, since_ms),
                    events_store=events_store, log_bounds=log_bounds, record_at=record_reader)
    # the event topics, and the risk evidence the engines publish (correlated across kinds: risk.cross_kind)
    # and the OpenTelemetry Collector's spans, when that topic is set (their GenAI spans become events: streams.otlp)
    # and the analysts' feedback (the same partition numbers as the event topics: assigned with them)
    otlp = [settings.topic_otlp_spans] if settings.topic_otlp_spans else []
    topics = app.topic(*settings.topics().values(), settings.topic_risk_evidence, settings.topic_feedback, *otlp,
                       key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", internal=False)

    app.topics.add(topics)  # subscribed and acked through Faust's conductor; fetches come to score()
    started: list[bool] = []

    async def score(fetch: Fetch) -> None:
        """One fetch: score it and queue its writes; records are acked when a checkpoint covers them."""
        started[:] = [True]
        owned = app.consumer.assignment()
        batches = {}
        for tp, records in fetch.items():
            if tp not in owned or not records:  # a fetch can outlive a rebalance: the new owner reads those
                continue
            if tp.topic == settings.topic_feedback:
                await scorer.feedback((tp.topic, tp.partition), records)
                continue
            batches[tp] = records  # aiokafka's records as they are (a TP is a (topic, partition) tuple)
            part = scorer.parts.get((tp.topic, tp.partition))
            if part is not None:
                part.highwater = app.consumer.highwater(tp) or -1
        if batches:
            await scorer.handle(batches)

    app.batch_handler = score
    app.fetch_max_wait_ms = settings.worker_fetch_max_wait_ms

    @app.timer(max(settings.worker_checkpoint_s / 2, 0.5))
    async def checkpoint_idle() -> None:
        if started:
            await scorer.checkpoint_due()

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: faust.App, revoked: set, **_: Any) -> None:
        await scorer.revoke([(tp.topic, tp.partition) for tp in revoked])

    @app.on_partitions_assigned.connect
    async def on_assigned(app_: faust.App, assigned: set, **_: Any) -> None:
        ours = {*settings.topics().values(), *otlp}
        m.PARTITIONS.set(sum(1 for tp in app.consumer.assignment() if tp.topic in ours))

    @app.on_before_shutdown.connect
    async def on_shutdown(app_: faust.App, **_: Any) -> None:
        scorer.stopping = True
        try:
            await scorer.checkpoint_all()
        except Exception as exc:  # the next owner re-scores from the last checkpoint
            log.warning("final checkpoint failed", extra={"error": str(exc)})

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        ok, body = scorer.health.report(scorer.lag())
        body.update(worker=name, partitions=sorted(f"{t}[{p}]" for t, p in scorer.parts))
        return web.json(body, status=200 if ok else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(m.REGISTRY), content_type="text/plain; version=0.0.4")

    app.spyglass_store = store  # type: ignore[attr-defined]
    app.spyglass_record_reader = record_reader  # type: ignore[attr-defined]
    app.spyglass_events_store = events_store  # type: ignore[attr-defined]
    return app, scorer


class _AlertId(msgspec.Struct):
    alert_id: str = ""


ALERT_SCAN_LIMIT_S = 60.0  # a scan this long is given up as partial (logged, counted)


def published_alert_ids(settings: Settings, since_ms: int, time_limit_s: float = ALERT_SCAN_LIMIT_S) -> set[str]:
    """Ids of the alerts on the alerts topic since ``since_ms`` (producer time), every partition.

    A new owner of a partition asks this before re-scoring the records after its checkpoint, so
    alerts a crashed owner published but never stored are not published twice. Blocking: run it
    on the I/O thread. The alerts topic is small (alerts, not events), so the scan is short.
    """
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap.split(","), enable_auto_commit=False,
                      client_id="spyglass-worker-alert-scan", group_id=None, consumer_timeout_ms=2000,
                      **kafka_client_config(settings))
    try:
        parts = [TopicPartition(settings.topic_alerts, p) for p in sorted(
            c.partitions_for_topic(settings.topic_alerts) or [])]
        if not parts:
            return set()
        ends = c.end_offsets(parts)  # as of the scan's start
        starts = c.offsets_for_times({tp: max(since_ms, 0) for tp in parts})
        todo = {tp: (start.offset, ends[tp]) for tp, start in starts.items()
                if start is not None and start.offset < ends[tp]}
        if not todo:
            return set()
        c.assign(list(todo))
        for tp, (start_offset, _) in todo.items():
            c.seek(tp, start_offset)
        return alert_ids_up_to(c, {tp: end for tp, (_, end) in todo.items()}, time_limit_s)
    finally:
        c.close()


def alert_ids_up_to(consumer: Any, ends: dict[Any, int], time_limit_s: float,
                    clock: Callable[[], float] = time.monotonic) -> set[str]:
    """Ids of the alerts ``consumer`` (assigned, positioned) reads up to each partition's end offset in ``ends``
    (the ends as the scan started: what is published later is not the earlier owner's).

    A poll that returns nothing does not end the scan (the broker may be slow to answer); a partition is done once
    the consumer's position reaches its end. A scan still short of an end after ``time_limit_s`` is partial:
    logged and counted (``spyglass_alert_scans_partial_total``), and what it read is returned."""
    todo = dict(ends)
    ids: set[str] = set()
    dec = msgspec.json.Decoder(_AlertId)
    deadline = clock() + time_limit_s
    while todo:
        for tp, msgs in consumer.poll(timeout_ms=1000, max_records=10_000).items():
            for msg in msgs:
                if msg.offset < todo.get(tp, 0):
                    try:
                        ids.add(dec.decode(msg.value).alert_id)
                    except msgspec.DecodeError:
                        continue
        todo = {tp: end for tp, end in todo.items() if consumer.position(tp) < end}
        if todo and clock() >= deadline:
            m.ALERT_SCANS_PARTIAL.inc()
            short = {f"{tp.topic}[{tp.partition}]": end - consumer.position(tp) for tp, end in todo.items()}
            log.error("the alerts topic scan did not finish within its time limit: partial (an alert it missed may "
                      "be published again)", extra={"time_limit_s": time_limit_s, "alerts_found": len(ids),
                                                    "records_short_of_end": short})
            break
    return ids


class RecordReader:
    """Reads one record of a partition by offset, as a :class:`~streams.checkpoints.Mark` (a restore compares it
    with the checkpoint's). Blocking: called on the I/O thread, one consumer kept for every call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._consumer: Any = None

    def __call__(self, topic: str, partition: int, offset: int) -> Mark | None:
        from kafka import KafkaConsumer, TopicPartition

        if self._consumer is None:
            self._consumer = KafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap.split(","),
                                           enable_auto_commit=False, group_id=None,
                                           client_id="spyglass-worker-record-check", max_poll_records=1,
                                           fetch_max_bytes=2 * 1024 * 1024, **kafka_client_config(self.settings))
        c, tp = self._consumer, TopicPartition(topic, partition)
        c.assign([tp])
        start, end = c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]
        if not start <= offset < end:
            return None
        c.seek(tp, offset)
        for _ in range(10):
            for msg in c.poll(timeout_ms=1000, max_records=1).get(tp, []):
                if msg.offset == offset:
                    return Mark.of(msg.offset, msg.key, msg.value)
                if msg.offset > offset:  # compacted away, or an aborted transaction's
                    return None
        return None

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


def worker_checkpoint_key(settings: Settings) -> bytes:
    """The checkpoint signing key the settings give (required for a server store; see
    :func:`streams.checkpoints.checkpoint_key`)."""
    return checkpoint_key(settings.checkpoint_key.get_secret_value() if settings.checkpoint_key else None,
                          settings.stack_dir, server=settings.store().scheme != "chdb")


def warm_up() -> float:
    """Score a short stream of every kind (:func:`schemas.samples.sample_stream`) on a throwaway engine; returns
    the seconds it took.

    The first call of each compiled kernel loads it from Numba's cache; done before joining the group, the first
    real records do not wait for it.
    """
    from detectors.engine import Engine
    from schemas.block import decode_block, native_available
    from schemas.events import decode
    from schemas.samples import sample_stream

    t0 = time.perf_counter()
    enc = msgspec.json.Encoder()
    # as many events as a full fetch at the default SPYGLASS_WORKER_BATCH_MAX, so the first real batch also finds
    # numpy's and the allocator's buffers grown to its size
    rows = sample_stream(per_kind=1700)
    events = [decode(enc.encode(row)) for row in rows]
    Engine().process(events)
    # and as a topic's records come: decoded straight into columns (other array types: other kernel signatures)
    by_kind: dict[str, list[bytes | None]] = {}
    for row in rows:
        by_kind.setdefault(row["kind"], []).append(enc.encode(row))
    engine = Engine()
    for kind, values in by_kind.items():
        engine.process(decode_block(values, kind)[0])
    seconds = time.perf_counter() - t0
    # the native decoder (schemas/native) is built by `make deps`; without it msgspec decodes, slower
    log.info("engine warmed up", extra={"seconds": round(seconds, 3), "events": len(events),
                                        "decoder": "native" if native_available() else "msgspec"})
    return seconds


def tune_gc(threshold: tuple[int, int, int] = (20_000, 20, 50)) -> None:
    """Garbage collection for a long-running stream: what start-up built is frozen out of it, and
    collections run less often. Every batch allocates thousands of short-lived objects, so Python's
    default thresholds would collect many times a batch (``spyglass_gc_seconds_total`` tracks the time)."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
    m.GC_TIME.start()


def _with_store_retries(fn: Any, what: str, give_up_after_s: float = 120.0) -> Any:
    """``fn()`` retried with backoff while the store fails (a worker started while ClickHouse restarts
    waits for it, as a running one does); past ``give_up_after_s`` the last error is raised (exit)."""

    from streams.sinks.base import StoreError

    deadline = time.monotonic() + give_up_after_s
    delay = 0.5
    while True:
        try:
            return fn()
        except StoreError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.error(f"{what} failed; retrying", extra={"error": str(exc), "retry_in_s": delay})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def require_codecs() -> None:
    """Refuse to start without the snappy, lz4 and zstd codecs of both Kafka clients.

    Producers may compress their batches with any codec the broker accepts; a fetcher without the codec
    would crash on the first such batch and, restarted, crash on it again. A clear error at start instead.
    """
    from aiokafka import codec as aiokafka_codec
    from kafka import codec as kafka_codec

    missing = [f"{client} {name}" for client, codec in (("aiokafka", aiokafka_codec), ("kafka-python", kafka_codec))
               for name in ("snappy", "lz4", "zstd") if not getattr(codec, f"has_{name}")()]
    if missing:
        raise ConfigError(f"no {', '.join(missing)} codec: install spyglass's dependencies "
                          f"(pip install -c constraints.txt cramjam 'kafka-python[lz4,snappy,zstd]')")


def run_worker(settings: Settings, *, migrate: bool = True, loglevel: str = "INFO",
               worker_name: str | None = None) -> int:
    """Start a worker in the foreground until SIGTERM/SIGINT; returns its exit code."""
    import logging.config

    logging.config.dictConfig(m.logging_config(loglevel))
    require_codecs()
    worker_checkpoint_key(settings)  # a missing or short key fails here, before anything starts
    store = open_store(settings.store())
    if migrate:
        _with_store_retries(lambda: apply_ddl(store), "migrations")
    else:  # the worker writes the newest columns: an older schema would fail every insert
        behind = _with_store_retries(lambda: pending(store), "schema check")
        if behind:
            store.close()
            names = ", ".join(f"{mig.version:03d}_{mig.name}" for mig in behind)
            raise ConfigError(f"the store's schema lacks migration(s) {names}: run `spyglass db migrate` "
                              f"(or start the worker without --no-migrate)")
    warm_up()
    app, scorer = build_app(settings, worker_name=worker_name, store=store)
    tune_gc()
    m.zero_series(settings.topics(), [*settings.topics().values(), settings.topic_otlp_spans])
    worker = faust.Worker(app, loglevel=loglevel, logging_config=m.logging_config(loglevel), quiet=True,
                          override_logging=False, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        scorer.close()
        app.spyglass_record_reader.close()  # type: ignore[attr-defined]
        store.close()
        if app.spyglass_events_store is not None:  # type: ignore[attr-defined]
            app.spyglass_events_store.close()  # type: ignore[attr-defined]
    return 0
