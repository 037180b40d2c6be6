"""OpenTelemetry GenAI spans through the real broker into the worker (docs/opentelemetry.md).

The spans are made with the official OpenTelemetry SDK. First encoded with its OTLP encoder as the Collector's
Kafka exporter writes them (``otlp_proto`` and ``otlp_json``) and produced to the spans topic; then sent over
OTLP/HTTP by the SDK's exporter to the real OpenTelemetry Collector (built by ``make deps``), whose Kafka exporter
writes them to the local broker. Either way a worker consumes the topic with its group, and its events, alerts
and dead letters are read back from the real ClickHouse server and the dead-letter topic.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from streams.settings import Settings
from tests.fault.harness import Run, WorkerProc, committed, end_offsets, read_topic
from tests.otlp_spans import agent_run, otlp_json, otlp_proto, recorded

MAPPING = """\
version: 1
tools:
  delete_user: {target: iam, privilege: admin, risk: critical}
  search_kb: {target: kb, privilege: read, risk: low}
untrusted_tools: [fetch_url]
api_key_attribute: deployment.key
"""


def _run(stack_settings: Settings, tmp_path: Path) -> Run:
    run = Run.create(stack_settings, tmp_path, partitions=2)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(MAPPING)
    # one agent's few spans: no learning period (its events would fall in the tenant's first day)
    run.worker_settings = {"engine_learning_hours": 0, "otlp_mapping_file": str(mapping)}
    return run


def _rogue(tracer) -> None:
    """An agent deletes a user with its approval bypassed, after reading a web page."""
    agent_run(tracer, agent="agt-rogue", user="mallory", tools=("fetch_url", "delete_user"),
              tool_attrs={"spyglass.approval": "bypassed"})


def _wait_spans_scored(run: Run, workers: list[WorkerProc], records: int, timeout_s: float = 180) -> None:
    """Until the spans topic holds ``records`` records and the group has committed all of them."""
    topic = run.settings.topic_otlp_spans
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        ends = end_offsets(run, [topic])
        if sum(ends.values()) >= records:
            with contextlib.suppress(Exception):
                last = committed(run)
            if last is not None and all(last.get(tp, 0) >= end for tp, end in ends.items()):
                return
        time.sleep(1.0)
    logs = "\n\n".join(f"--- {w.name} ---\n{w.tail()}" for w in workers)
    raise AssertionError(f"the spans were not all scored in {timeout_s}s: committed={last}\n{logs}")


def _stored(run: Run) -> tuple[list[tuple], list[tuple]]:
    """(kind, entity, principal, source) of the stored events; (detector, entity, source_topic) of the alerts."""
    st = run.store()
    try:
        events = st.query(f"SELECT kind, entity, principal, source FROM {run.db}.events FINAL "  # noqa: S608
                          "ORDER BY kind, entity, principal, event_id")
        alerts = st.query(f"SELECT detector, entity, source_topic FROM {run.db}.alerts FINAL "  # noqa: S608
                          "ORDER BY detector, entity")
    finally:
        st.close()
    return [tuple(r) for r in events], [tuple(r) for r in alerts]


def _score(run: Run, records: int) -> tuple[list[tuple], list[tuple], str]:
    """Start a worker, wait until it scored the spans topic's ``records`` records; (events, alerts, metrics)."""
    w = WorkerProc(run, "otlp").start()
    try:
        _wait_spans_scored(run, [w], records)
        metrics = w.metrics()
    finally:
        assert w.terminate() == 0, w.tail()
    return (*_stored(run), metrics)


def _drop(run: Run) -> None:
    run.cleanup()
    with contextlib.suppress(Exception):
        st = run.store()
        st.execute(f"DROP DATABASE IF EXISTS {run.db}")
        st.close()


def test_sdk_spans_in_both_encodings_become_scored_events_and_alerts(stack_settings: Settings, tmp_path: Path):
    from kafka import KafkaProducer

    run = _run(stack_settings, tmp_path)
    try:
        resource = {"service.name": "helpdesk-bot", "deployment.key": "key-helpdesk"}
        calm = recorded(resource, lambda t: agent_run(t, agent="agt-calm", user="ana", tools=("search_kb",)))
        rogue = recorded(resource, _rogue)

        def others(t) -> None:
            t.start_span("GET /health", attributes={"http.request.method": "GET"}).end()  # not GenAI: skipped
            t.start_span("execute_tool orphan", attributes={  # no agent anywhere: a dead letter
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "orphan", "user.id": "ana"}).end()

        stray = recorded(resource, others)
        producer = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all")
        topic = run.settings.topic_otlp_spans
        for value in (otlp_proto(calm), otlp_json(rogue), otlp_proto(stray), b"not an OTLP export"):
            producer.send(topic, value=value)
        producer.flush()
        producer.close()

        events, alerts, metrics = _score(run, 4)

        # invoke_agent + one tool each, and each run's chat call (keyed by the resource's deployment.key)
        assert events == [("agent_execution", "agt-calm", "ana", "helpdesk-bot")] * 2 + [
            ("agent_execution", "agt-rogue", "mallory", "helpdesk-bot")] * 3 + [
            ("api_usage", "key-helpdesk", "ana", "helpdesk-bot"), ("api_usage", "key-helpdesk", "mallory",
                                                                   "helpdesk-bot")]
        assert ("agent.approval_bypass", "agt-rogue", topic) in alerts
        assert not [a for a in alerts if a[1] == "agt-calm"]
        dead = read_topic(run, run.settings.topic_dead_letter)
        reasons = sorted((dict(m.headers)["spyglass.error.field"].decode(),
                          dict(m.headers)["spyglass.source.topic"].decode()) for m in dead)
        assert reasons == [("$", topic), ("span.attributes.gen_ai.agent.id", topic)]
        assert 'spyglass_otlp_spans_total{outcome="skipped_not_genai"} 1.0' in metrics
        assert 'spyglass_otlp_spans_total{outcome="mapped_agent_execution"} 5.0' in metrics
        assert 'spyglass_otlp_spans_total{outcome="dead"} 1.0' in metrics
        assert 'spyglass_events_in_total{kind="agent_execution"} 5.0' in metrics
    finally:
        _drop(run)


def test_the_opentelemetry_collector_writes_spans_the_worker_scores(stack_settings: Settings, tmp_path: Path):
    """The SDK's OTLP/HTTP exporter -> the Collector (otlp receiver, kafka exporter) -> the broker -> the worker,
    once per encoding of the exporter."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from streams.stack import otelcol

    if not otelcol.binary_path(stack_settings.cache_dir).exists() and otelcol.go_command() is None:
        pytest.skip("the OpenTelemetry Collector is not built and Go is not installed to build it (make deps)")
    binary = otelcol.build(stack_settings.cache_dir)  # cached by make deps; built here otherwise (about a minute)
    run = _run(stack_settings, tmp_path)
    collectors = []
    try:
        sent = 0
        for encoding, agent in (("otlp_proto", "agt-rogue"), ("otlp_json", "agt-json")):
            col = otelcol.Collector(binary, tmp_path / encoding, brokers=run.settings.kafka_bootstrap,
                                    topic=run.settings.topic_otlp_spans, encoding=encoding).start()
            collectors.append(col)
            provider = TracerProvider(resource=Resource.create({"service.name": f"bot-{encoding}",
                                                                "deployment.key": f"key-{encoding}"}))
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=col.traces_url, timeout=10)))
            tracer = provider.get_tracer("spyglass-tests")
            agent_run(tracer, agent=agent, user="mallory", tools=("fetch_url", "delete_user"),
                      tool_attrs={"spyglass.approval": "bypassed"})
            provider.shutdown()  # exports the batch: one trace, one record (partition_traces_by_id)
            sent += 1
            deadline = time.monotonic() + 60
            while sum(end_offsets(run, [run.settings.topic_otlp_spans]).values()) < sent:
                assert time.monotonic() < deadline, f"the Collector wrote nothing to the topic:\n{col.log()}"
                time.sleep(0.5)

        events, alerts, metrics = _score(run, sent)

        for encoding, agent in (("otlp_proto", "agt-rogue"), ("otlp_json", "agt-json")):
            assert [e for e in events if e[3] == f"bot-{encoding}"] == [
                ("agent_execution", agent, "mallory", f"bot-{encoding}")] * 3 + [
                ("api_usage", f"key-{encoding}", "mallory", f"bot-{encoding}")]
            assert ("agent.approval_bypass", agent, run.settings.topic_otlp_spans) in alerts
        assert 'spyglass_otlp_spans_total{outcome="dead"}' not in metrics
    finally:
        for col in collectors:
            col.stop()
        _drop(run)


def test_a_worker_scores_the_event_topics_when_the_spans_topic_does_not_exist(stack_settings: Settings,
                                                                              tmp_path: Path):
    """The spans topic is on by default: a broker without it (nobody created it) must not hold the worker back."""
    from streams.simulator.output import produce_kafka
    from streams.simulator.run import Simulation
    from streams.stack.kafka import delete_topics
    from tests.fault.harness import stored_event_ids, wait_committed

    run = _run(stack_settings, tmp_path)
    try:
        assert delete_topics(run.settings, [run.settings.topic_otlp_spans]) == [run.settings.topic_otlp_spans]
        stats = produce_kafka(Simulation(seed=3, events=6_000, days=1, instances=1), run.settings.kafka_bootstrap,
                              run.settings.topics())
        w = WorkerProc(run, "no-spans").start()
        try:
            wait_committed(run, stats.events, [w], timeout_s=180)
        finally:
            assert w.terminate() == 0, w.tail()
        assert stored_event_ids(run) == stats.events
    finally:
        _drop(run)
