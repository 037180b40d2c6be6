"""Prometheus metrics and the health state of a worker (served by the worker's web endpoint)."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter("spyglass_events_in_total", "Events decoded and scored", ["kind"], registry=REGISTRY)
DEAD_LETTERS = Counter("spyglass_dead_letters_total", "Records sent to the dead-letter topic", ["topic"],
                       registry=REGISTRY)
DEAD_LETTERS_UNPUBLISHED = Counter(
    "spyglass_dead_letters_unpublished_total", "Dead letters Kafka refused even without their value (logged, "
    "not published)", ["topic"], registry=REGISTRY)
QUARANTINED = Counter("spyglass_store_quarantined_total", "Rows the store refused for their data (dead-lettered "
                      "with the reason)", ["table"], registry=REGISTRY)
CHECKPOINTS_OUT_OF_RANGE = Counter(
    "spyglass_checkpoints_out_of_range_total", "Checkpoints found outside their partition's log (topic recreated, "
    "truncated, records deleted before they were scored)", ["topic"], registry=REGISTRY)
PARTITIONS_FENCED = Counter("spyglass_partitions_fenced_total", "Partitions this worker found claimed by another "
                            "worker since it claimed them (it writes nothing more for them)", ["topic"],
                            registry=REGISTRY)
ALERT_SCANS_PARTIAL = Counter(
    "spyglass_alert_scans_partial_total", "Alerts-topic scans (a partition taken on) that did not reach the end "
    "offsets they started with within their time limit: an alert they missed may be published again",
    registry=REGISTRY)
ALERTS = Counter("spyglass_alerts_total", "Alerts raised (first delivery only)", ["detector", "severity"],
                 registry=REGISTRY)
BATCH_SECONDS = Histogram("spyglass_batch_seconds", "Batch latency: decode, score, publish and store",
                          buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY)
ENGINE_BATCH = Histogram(
    "spyglass_engine_batch_records", "Records one engine scores at a time (a partition's share of a fetch): its "
    "per-call costs are spread over these", buckets=(10, 100, 250, 500, 1000, 2000, 5000, 10000), registry=REGISTRY)
LAG = Gauge("spyglass_consumer_lag", "Records behind the partition's high-water mark", ["topic", "partition"],
            registry=REGISTRY)
CHECKPOINT_AGE = Gauge("spyglass_checkpoint_age_seconds", "Seconds since the partition's state was checkpointed",
                       ["topic", "partition"], registry=REGISTRY)
STORE_UP = Gauge("spyglass_store_up", "1 when the last store write succeeded, 0 while it is being retried",
                 registry=REGISTRY)
STORE_INSERTS = Counter("spyglass_store_inserts_total", "Inserts into ClickHouse by the writer, by table (rows per "
                        "events insert: spyglass_events_stored_total / this)", ["table"], registry=REGISTRY)
EVENTS_STORED = Counter("spyglass_events_stored_total", "Events inserted into ClickHouse by the writer",
                        registry=REGISTRY)
STAGE_SECONDS = Counter("spyglass_stage_seconds_total", "Seconds spent in each stage of the pipeline: decode, score "
                        "(engine), correlate (risk evidence), publish (Kafka acks), store (the alerts inserts), "
                        "checkpoint (handing writes to the events lane, waiting for it), store.events (the events "
                        "inserts, in the events lane); and the event loop's waits: fetch.wait (for the next fetch "
                        "from Kafka), backpressure (for room in the writer's queue)", ["stage"],
                        registry=REGISTRY)
PARTITIONS = Gauge("spyglass_partitions_owned", "Topic partitions this worker scores", registry=REGISTRY)
ENTITIES = Gauge("spyglass_entities_tracked", "Entities with state in this worker's engines", registry=REGISTRY)
EVICTED = Counter("spyglass_entities_evicted_total", "Entities the engines forgot: idle past the horizon, or over "
                  "the cap (least recently seen first)", ["reason"], registry=REGISTRY)
FEEDBACK = Counter("spyglass_feedback_total", "Analysts' marks read from the feedback topic, by what they did: "
                   "false_positive, true_positive (taught the engine), no_effect (triage only, or applied already), "
                   "invalid (refused, logged with the field)", ["status"], registry=REGISTRY)
ALERTS_WITHHELD = Counter("spyglass_alerts_withheld_total", "Alerts stored but neither published nor routed: "
                          "suppressed (a rule of SPYGLASS_SUPPRESSIONS_FILE matched) or shadow (their detector runs "
                          "in shadow mode for the tenant)", ["reason"], registry=REGISTRY)
STATE_BYTES = Gauge("spyglass_state_bytes", "Bytes of per-entity state in this worker's engines", registry=REGISTRY)
OTLP_SPANS = Counter("spyglass_otlp_spans_total", "Spans read from the OTLP spans topic, by outcome: mapped_api_usage, "
                     "mapped_agent_execution, skipped_not_genai, skipped_operation (a GenAI operation with no event), "
                     "dead (dead-lettered with the reason), dead_record (a record that is no OTLP trace export)",
                     ["outcome"], registry=REGISTRY)


class _GcTime:
    """Seconds the interpreter spent in garbage collection, per generation (every thread: the GIL is held).

    Summed by a ``gc.callbacks`` hook into plain floats (a collection can start inside any allocation,
    so the hook takes no lock) and exported as ``spyglass_gc_seconds_total`` when scraped."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._t0 = 0.0

    def _hook(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds[info["generation"]] += time.perf_counter() - self._t0

    def start(self) -> None:
        if self._hook not in gc.callbacks:
            gc.callbacks.append(self._hook)

    def collect(self):  # the prometheus_client collector interface
        c = CounterMetricFamily("spyglass_gc_seconds", "Seconds spent in garbage collection, by generation",
                                labels=["generation"])
        for gen, s in enumerate(self.seconds):
            c.add_metric([str(gen)], s)
        yield c


GC_TIME = _GcTime()
REGISTRY.register(GC_TIME)


def zero_series(kinds: Iterable[str], topics: Iterable[str]) -> None:
    """Create the zero series of the event and dead-letter counters before anything happens.

    Prometheus's ``rate()`` sees no increase on a series' first sample, so a series born at its first
    increment would show a burst (or a single dead letter) as nothing on the pipeline-health board."""
    for kind in kinds:
        EVENTS_IN.labels(kind)
    for topic in topics:
        DEAD_LETTERS.labels(topic)


def count_evictions(before: dict[str, int], after: dict[str, int]) -> None:
    """Add an engine's evictions during a batch (``Engine.evicted`` before and after) to the counter."""
    for reason, n in after.items():
        if n > before.get(reason, 0):
            EVICTED.labels(reason).inc(n - before.get(reason, 0))


def scrape(port: int, host: str = "127.0.0.1", timeout: float = 2.0, *,
           series: bool = False) -> dict[str, float] | None:
    """A worker's /metrics, each metric summed over its labels (``series``: each labelled series on its own,
    e.g. ``spyglass_stage_seconds_total{stage="decode"}``); None when the worker does not answer."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:  # noqa: S310
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.rsplit(" ", 1)[0] if series else line.split("{", 1)[0].split(" ", 1)[0]
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


class Health:
    """What ``/health`` reports: ok, or degraded with the reason (store down, stalled)."""

    def __init__(self, stall_after_s: float = 60.0) -> None:
        self.started = time.monotonic()
        self.last_batch = 0.0
        self.store_error: str | None = None
        self.failed: str | None = None  # the writer failed: nothing more is stored or checkpointed
        self.stall_after_s = stall_after_s

    def report(self, lag: int) -> tuple[bool, dict]:
        now = time.monotonic()
        idle = now - self.last_batch if self.last_batch else now - self.started
        stalled = lag > 0 and idle > self.stall_after_s
        ok = self.store_error is None and self.failed is None and not stalled
        return ok, {"status": "ok" if ok else "degraded", "store_error": self.store_error, "failed": self.failed,
                    "lag": lag, "seconds_since_last_batch": round(idle, 1), "stalled": stalled}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra`` fields (topic, partition, offset, ...) are kept."""

    _skip = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        for k, v in record.__dict__.items():
            if k not in self._skip and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


JsonFormatter.converter = time.gmtime  # type: ignore[assignment]


def logging_config(level: str = "INFO") -> dict:
    """dictConfig for the worker: JSON lines on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        # kafka-python (the alert scan) logs every connection at INFO
        "loggers": {"kafka": {"level": "WARNING"}},
    }
