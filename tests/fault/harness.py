"""Helpers of the fault tests: one isolated run (topics, database, group) and its worker processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from detectors.correlation import Correlator, evidence_of
from detectors.engine import Engine
from schemas.errors import EventError
from schemas.events import Event, decode
from streams.kafka_security import kafka_client_config
from streams.settings import Settings, StoreURL
from streams.simulator.output import produce_kafka
from streams.simulator.run import Simulation
from streams.sinks.clickhouse import NativeStore
from streams.stack.base import free_port
from streams.stack.kafka import delete_topics, ensure_topics, group_offsets
from streams.stack.kafka_secure import ADMIN_USER, WORKER_USER, SecureMaterial, grant_pipeline_acls

SPYGLASS = Path(sys.executable).with_name("spyglass")


@dataclass
class Run:
    """Topics, database and consumer group of one test, so runs never see each other's data."""

    settings: Settings
    tmp: Path
    names: list[str] = field(default_factory=list)
    db: str = ""
    checkpoint_key: str = field(default_factory=lambda: uuid.uuid4().hex)  # the workers of a run share it
    worker_settings: dict = field(default_factory=dict)  # settings of this run's workers (``Settings`` fields)
    workers: list[WorkerProc] = field(default_factory=list)  # every worker started for the run
    producers: list[Producing] = field(default_factory=list)  # every background producer of the run

    @property
    def scored_partitions(self) -> int:
        """How many partitions one worker scores when it owns them all (``spyglass_partitions_owned``): the event
        topics' and the OTLP spans topic's, 3 each (``create``'s default)."""
        spans = [self.settings.topic_otlp_spans] if self.settings.topic_otlp_spans else []
        return 3 * len([*self.settings.topics().values(), *spans])

    @classmethod
    def create(cls, base: Settings, tmp: Path, partitions: int = 3) -> Run:
        tag = uuid.uuid4().hex[:8]
        settings = base.model_copy(update={**Settings.topic_names(f"f-{tag}"), "worker_group": f"f-{tag}"})
        run = cls(settings, tmp)
        run.names = ensure_topics(settings, partitions=partitions)
        run.grant_worker()
        run.db = f"f_{tag}"
        return run

    def grant_worker(self) -> None:
        """On a secure broker (the tests connect as its admin), the pipeline's ACLs for this run's topics."""
        if self.settings.kafka_sasl_username == ADMIN_USER:
            grant_pipeline_acls(self.settings)

    def worker_kafka(self) -> dict:
        """The Kafka settings of this run's workers: on a secure broker the worker principal, else the run's."""
        s = self.settings
        if s.kafka_sasl_username != ADMIN_USER or s.kafka_sasl_password_file is None:
            return {}
        worker = SecureMaterial(s.kafka_sasl_password_file.parent).client_settings(s, WORKER_USER)
        return {"kafka_sasl_username": worker.kafka_sasl_username,
                "kafka_sasl_password_file": worker.kafka_sasl_password_file}

    def for_group(self, suffix: str) -> Run:
        """Another run over the same event topics, with its own group, alerts topic and database."""
        s = self.settings
        settings = s.model_copy(update={"topic_alerts": f"{s.topic_alerts}-{suffix}",
                                        "topic_dead_letter": f"{s.topic_dead_letter}-{suffix}",
                                        "topic_risk_evidence": f"{s.topic_risk_evidence}-{suffix}",
                                        "topic_feedback": f"{s.topic_feedback}-{suffix}",
                                        "worker_group": f"{s.worker_group}-{suffix}"})
        other = Run(settings, self.tmp)
        other.names = ensure_topics(settings, partitions=3)
        other.grant_worker()
        other.db = f"{self.db}_{suffix}"
        return other

    @property
    def store_url(self) -> str:
        return self.settings.store().with_database(self.db).secret_url()  # TLS and password if the stack's

    def env(self, name: str, web_port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPYGLASS_")}
        env.update(self.settings.child_env(
            clickhouse_url=self.store_url, stack_dir=self.tmp / "worker-state", worker_web_port=web_port,
            worker_checkpoint_s=2, worker_session_timeout_s=6, checkpoint_key=self.checkpoint_key,
            **{**self.worker_kafka(), **self.worker_settings}))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def store(self) -> NativeStore:
        from streams.settings import StoreURL

        return NativeStore(StoreURL.parse(self.store_url))

    def event_topics(self) -> list[str]:
        return list(self.settings.topics().values())

    def cleanup(self) -> None:
        """End what the test left running, then delete the run's topics and database (a reused stack would
        otherwise gather them). A test that failed half-way must not leave a producer sending to deleted topics
        or a worker consuming them while the next test runs: their errors would be that test's."""
        for p in self.producers:
            p.stop.set()
        for p in self.producers:
            p.join(60)
        for w in self.workers:
            w.kill()
        with contextlib.suppress(Exception):  # best effort
            delete_topics(self.settings, self.names)
        with contextlib.suppress(Exception):
            store = NativeStore(StoreURL.parse(self.store_url))
            try:
                store.execute(f"DROP DATABASE IF EXISTS {self.db}")
            finally:
                store.close()


class WorkerProc:
    """``spyglass worker`` as a child process, with its log in the run's directory."""

    def __init__(self, run: Run, name: str) -> None:
        self.run = run
        self.name = name
        self.port = free_port()
        self.log = run.tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        run.workers.append(self)

    def start(self) -> WorkerProc:
        self.starts += 1
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([str(SPYGLASS), "worker", "--name", self.name], stdout=out, stderr=out,
                                     env=self.run.env(self.name, self.port), start_new_session=True)
        out.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL if still running (a paused worker too), and reaped."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the worker stops dead (as in a long GC or a stalled disk), its sockets left open."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGCONT)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            return -9

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):  # peak resident set size
                return int(line.split()[1]) / 1024
        return 0.0

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:  # noqa: S310
            return r.read().decode()

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"


class Producing(threading.Thread):
    """A background producer of the run: ``stop`` ends it early (the run's cleanup does, if the test did not
    wait for it), and an error it raised is kept in ``error`` and raised again by :meth:`wait`."""

    def __init__(self, run: Run, target: Callable[[threading.Event], object]) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._target_fn = target
        run.producers.append(self)

    def run(self) -> None:
        try:
            self._target_fn(self.stop)
        except BaseException as e:  # noqa: BLE001 - kept for wait()
            self.error = e

    def wait(self, timeout: float) -> None:
        """Join; fail if it is still producing after ``timeout`` s or ended with an error."""
        self.join(timeout)
        assert not self.is_alive(), f"the producer is still producing after {timeout}s"
        if self.error is not None:
            raise AssertionError(f"the producer failed: {self.error!r}") from self.error


def produce_in_background(run: Run, sim: Simulation, rate: float) -> Producing:
    t = Producing(run, lambda stop: produce_kafka(
        sim, run.settings.kafka_bootstrap, run.settings.topics(), rate=rate, client_id="fault-producer",
        client_config=kafka_client_config(run.settings), stop=stop))
    t.start()
    return t


def cross_kind_rows(principals: int) -> list[dict]:
    """Hand-made cross-kind activity, in event-time order: each principal's day of ordinary reads, then a burst of
    denied reads (data_access) and, for two in three of them, an agent acting for them runs a high-risk refund
    without approval half an hour later (agent_execution). Bursts start 15 minutes apart from
    2026-11-02T00:00Z."""
    t0 = 1_793_577_600_000
    out: list[tuple[int, dict]] = []

    def iso(ms: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"

    for i in range(principals):
        t = t0 + i * 900_000
        who = f"p{i:04d}"
        # a day of ordinary granted reads first (the tenant's learning period passes; denials are unusual for it)
        out += [(t - 90_000_000 + k * 3_600_000, {
            "event_id": f"xk-{who}-b{k}", "kind": "data_access", "ts": iso(t - 90_000_000 + k * 3_600_000),
            "tenant": "acme", "principal": who, "principal_department": "sales", "dataset": "sales/pipeline",
            "dataset_owner_department": "sales", "sensitivity": "internal", "operation": "read", "rows": 10,
            "granted": True}) for k in range(12)]
        out += [(t + j * 5_000, {
            "event_id": f"xk-{who}-d{j}", "kind": "data_access", "ts": iso(t + j * 5_000), "tenant": "acme",
            "principal": who, "principal_department": "sales", "dataset": f"hr/file{j}",
            "dataset_owner_department": "hr", "sensitivity": "restricted", "operation": "read", "rows": 0,
            "granted": False}) for j in range(8)]
        if i % 3:
            out.append((t + 1_800_000, {
                "event_id": f"xk-{who}-g", "kind": "agent_execution", "ts": iso(t + 1_800_000), "tenant": "acme",
                "agent_id": f"agt-{who}", "agent_type": "helper", "session_id": f"s-{who}", "principal": who,
                "action": "refund", "target_system": "billing", "privilege": "write", "risk_level": "high",
                "approval": "bypassed", "triggered_by": "user", "outcome": "success"}))
    return [r for _, r in sorted(out, key=lambda x: x[0])]


def produce_rows(run: Run, rows: list[dict], rate: float) -> Producing:
    """Produce hand-made rows to their kinds' topics (keyed like the simulator), paced at ``rate`` rows/s."""
    import msgspec
    from kafka import KafkaProducer

    from streams.simulator.output import PARTITION_KEY

    def go(stop: threading.Event) -> None:
        producer = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all",
                                 client_id="fault-rows", **kafka_client_config(run.settings))
        enc = msgspec.json.Encoder()
        t0 = time.monotonic()
        try:
            for n, row in enumerate(rows):
                if stop.is_set():
                    break
                kind = row["kind"]
                producer.send(run.settings.topics()[kind], key=row[PARTITION_KEY[kind]].encode(),
                              value=enc.encode(row))
                ahead = n / rate - (time.monotonic() - t0)
                if ahead > 0:
                    stop.wait(ahead)
            producer.flush()
        finally:
            producer.close(timeout=30)

    th = Producing(run, go)
    th.start()
    return th


def end_offsets(run: Run, topics: list[str]) -> dict[tuple[str, int], int]:
    c = KafkaConsumer(bootstrap_servers=run.settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                      **kafka_client_config(run.settings))
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(c.partitions_for_topic(t) or [])]
        return {(tp.topic, tp.partition): off for tp, off in c.end_offsets(parts).items()}
    finally:
        c.close()


def committed(run: Run) -> dict[tuple[str, int], int]:
    return group_offsets(run.settings.kafka_bootstrap, run.settings.worker_group, **kafka_client_config(run.settings))


def wait_committed(run: Run, expected: int, workers: list[WorkerProc], timeout_s: float = 240) -> None:
    """Until the group has committed every record of the event topics (and all were produced), and every
    record of the risk-evidence topic their alerts gave (no end offset moved while the commits were read)."""
    deadline = time.monotonic() + timeout_s
    last = None
    topics = [*run.event_topics(), run.settings.topic_risk_evidence]
    events = set(run.event_topics())
    while time.monotonic() < deadline:
        ends = end_offsets(run, topics)
        if sum(n for (t, _p), n in ends.items() if t in events) >= expected:
            try:
                last = committed(run)
            except Exception:  # noqa: BLE001 - the broker may be restarting
                last = None
            if last is not None and all(last.get(tp, 0) >= end for tp, end in ends.items()) \
                    and end_offsets(run, topics) == ends:
                return
        time.sleep(1.0)
    logs = "\n\n".join(f"--- {w.name} ---\n{w.tail()}" for w in workers)
    raise AssertionError(f"the group did not commit everything in {timeout_s}s: committed={last}\n{logs}")


def read_topic(run: Run, topic: str, timeout_s: float = 30) -> list:
    ends = end_offsets(run, [topic])
    c = KafkaConsumer(bootstrap_servers=run.settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", **kafka_client_config(run.settings))
    try:
        parts = [TopicPartition(t, p) for t, p in ends]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        out: list = []
        deadline = time.monotonic() + timeout_s
        while len(out) < sum(ends.values()) and time.monotonic() < deadline:
            for msgs in c.poll(timeout_ms=500, max_records=10_000).values():
                out.extend(msgs)
        return out
    finally:
        c.close()


def reference_alert_ids(run: Run, keep: Callable[[Event], bool] | None = None) -> set[str]:
    """What a fault-free run must give: one engine per partition over its records (those ``keep`` keeps),
    offline, and the correlator over the evidence of their alerts (in any order: it does not depend on it)."""
    ids: set[str] = set()
    correlator = Correlator(run.settings.correlation_window_hours, run.settings.correlation_horizon_days)
    by_tp: dict[tuple[str, int], list] = {}
    for m in read_topic(run, run.settings.topic_api_usage) + read_topic(run, run.settings.topic_data_access) + \
            read_topic(run, run.settings.topic_agent_execution):
        by_tp.setdefault((m.topic, m.partition), []).append(m)
    kinds = {t: k for k, t in run.settings.topics().items()}
    for (topic, _p), msgs in by_tp.items():
        msgs.sort(key=lambda m: m.offset)
        events = []
        for m in msgs:
            ev = decode(m.value) if m.value is not None else None
            if ev is None or isinstance(ev, EventError) or type(ev).__struct_config__.tag != kinds[topic]:
                continue
            if keep is not None and not keep(ev):
                continue
            events.append(ev)
        eng = Engine(run.settings.model_copy(update=run.worker_settings).engine_config())
        for i in range(0, len(events), 2_000):
            alerts = eng.process(events[i: i + 2_000])
            ids.update(a.alert_id for a in alerts)
            ids.update(a.alert_id for a in correlator.process(
                [evidence_of(a, eng.alert_principals[a.alert_id]) for a in alerts
                 if a.kind != "cross" and a.severity != "info" and a.alert_id in eng.alert_principals]))
    return ids


def stored_alerts(run: Run) -> Counter:
    """alert_id -> rows as stored, without ``FINAL``: an alert inserted twice counts twice until a background
    merge collapses it (:func:`risk_minute_alert_count` counts every insert, merged or not)."""
    st = run.store()
    try:
        return Counter(r[0] for r in st.query(f"SELECT alert_id FROM {run.db}.alerts"))  # noqa: S608
    finally:
        st.close()


def risk_minute_alert_count(run: Run) -> int:
    """Alerts the per-minute risk view counted (each insert is counted: an alert inserted twice counts twice,
    whatever merges did to ``alerts`` since)."""
    return _count(run, f"SELECT sum(alerts) FROM {run.db}.entity_risk_minute")  # noqa: S608


def _count(run: Run, sql: str) -> int:
    st = run.store()
    try:
        return int(st.query(sql)[0][0])
    finally:
        st.close()


def stored_event_ids(run: Run) -> int:
    return _count(run, f"SELECT uniqExact(event_id) FROM {run.db}.events")  # noqa: S608


def minute_event_count(run: Run) -> int:
    """Events the per-minute view counted (each insert is counted: a row inserted twice counts twice)."""
    return _count(run, f"SELECT sum(events) FROM {run.db}.events_minute")  # noqa: S608


def dead_letters(run: Run) -> list:
    return read_topic(run, run.settings.topic_dead_letter)


def published_alert_ids(run: Run) -> Counter:
    import msgspec

    return Counter(msgspec.json.decode(m.value)["alert_id"] for m in read_topic(run, run.settings.topic_alerts))


def owns_partitions(w: WorkerProc, count: int | None = None) -> bool:
    """Whether the worker owns event-topic partitions (``count``: exactly that many), by its metrics."""
    try:
        text = w.metrics()
    except Exception:  # noqa: BLE001 - not answering yet
        return False
    for line in text.splitlines():
        if line.startswith("spyglass_partitions_owned "):
            owned = float(line.split()[1])
            return owned > 0 if count is None else owned == count
    return False


def checkpoints_of(run: Run, worker: str, since: datetime | None = None) -> int:
    """How many engine checkpoints the worker named ``worker`` has stored (``since``: written at or after it).

    The table keeps one row per partition in the end (a ``ReplacingMergeTree``): a background merge may drop a
    worker's older rows once another worker checkpointed the same partitions, so the count can fall, never rise
    without a write."""
    when = f" AND written_at >= toDateTime('{since.strftime('%Y-%m-%d %H:%M:%S')}', 'UTC')" if since else ""
    return _count(run, f"SELECT count() FROM {run.db}.engine_checkpoints WHERE worker = '{worker}'{when}")  # noqa: S608


def next_second() -> datetime:
    """The next whole second of wall time: a checkpoint written at or after it was written after this call
    (``written_at`` has whole seconds)."""
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)


def wait_checkpointed(run: Run, w: WorkerProc, since: datetime | None = None, timeout_s: float = 120) -> None:
    """Until the worker has stored a checkpoint (``since``: written at or after it); a busy machine scores its
    first batches late."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the database appears with the worker's first write
            if checkpoints_of(run, w.name, since):
                return
        time.sleep(0.5)
    raise AssertionError(f"{w.name} stored no checkpoint in {timeout_s}s\n{w.tail()}")


def check_accounting_and_alerts(run: Run, expected_events: int, reference: set[str]) -> set[str]:
    """The fault tests' accounting: every event stored or dead-lettered, events_minute counted each once, no
    alert id twice (rows counted without FINAL, and entity_risk_minute's count), none published twice, and the
    alert ids equal ``reference`` (a fault-free run's); returns the stored alert ids."""
    assert stored_event_ids(run) + len(dead_letters(run)) == expected_events
    # events an earlier owner stored are not inserted again, so the dashboards' counts are right too
    assert minute_event_count(run) == stored_event_ids(run), "events_minute counted re-delivered events twice"
    stored = stored_alerts(run)
    assert stored, "the run has attacks: it must raise alerts"
    assert max(stored.values()) == 1, "an alert_id appears twice in the alerts table"
    assert risk_minute_alert_count(run) == len(stored), "an alert was inserted twice (entity_risk_minute counted it)"
    published = published_alert_ids(run)
    assert [a for a, n in published.items() if n > 1] == [], "an alert_id was published twice"
    assert set(published) == set(stored) == reference
    return set(stored)


def score_with_one_worker(run: Run, name: str, total: int, timeout_s: float = 180) -> WorkerProc:
    """One worker started, left until the group committed ``total`` event records, and stopped cleanly (exit 0)."""
    w = WorkerProc(run, name).start()
    try:
        wait_committed(run, total, [w], timeout_s=timeout_s)
    finally:
        assert w.terminate() == 0, w.tail()
    return w
