"""GenAI spans (official SDK, official OTLP encoder) -> contract events: streams/otlp.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from schemas.errors import ConfigError, EventError
from schemas.events import AgentExecution, ApiUsage, decode
from streams import metrics as m
from streams.otlp import SEMCONV_VERSION, SpanMapping, SpanRecord, SpanSource, decode_request, load_mapping
from streams.step import decode as decode_records
from tests.otlp_spans import agent_run, otlp_json, otlp_proto, recorded

RESOURCE = {"service.name": "helpdesk-bot", "spyglass.api_key.id": "key-helpdesk"}

def _mapping(**raw) -> SpanMapping:
    return msgspec.convert(raw, SpanMapping)


def _expand(value: bytes, mapping: SpanMapping | None = None):
    return SpanSource(mapping).expand([SpanRecord(7, b"k", value)])


def _events(value: bytes, mapping: SpanMapping | None = None) -> list:
    out = _expand(value, mapping)
    events = [decode(r.value) for r in out.records]
    assert not [e for e in events if isinstance(e, EventError)], events
    return events


@pytest.mark.parametrize("encode", [otlp_proto, otlp_json], ids=["otlp_proto", "otlp_json"])
def test_an_agent_run_becomes_agent_execution_and_api_usage_events(encode):
    spans = recorded(RESOURCE, lambda t: agent_run(t, tools=("fetch_url", "delete_user"), fail_tool="delete_user"))
    events = _events(encode(spans), _mapping(tools={"delete_user": {"target": "iam", "privilege": "admin",
                                                                     "risk": "critical"}},
                                             untrusted_tools=["fetch_url"]))
    by_action = {e.action: e for e in events if isinstance(e, AgentExecution)}
    assert set(by_action) == {"invoke_agent", "fetch_url", "delete_user"}
    root, fetch, delete = by_action["invoke_agent"], by_action["fetch_url"], by_action["delete_user"]
    span_of = {s.name.split(" ")[1]: s for s in spans}
    trace = f"{span_of['agt-7'].context.trace_id:032x}"
    assert root.event_id == f"{trace}-{span_of['agt-7'].context.span_id:016x}"
    for e in (root, fetch, delete):
        assert (e.agent_id, e.agent_type, e.session_id, e.principal, e.source) == (
            "agt-7", "helpdesk", "conv-agt-7", "ana", "helpdesk-bot")  # the tools inherit the agent's identity
    assert fetch.parent_event_id == delete.parent_event_id == root.event_id and root.parent_event_id is None
    assert (root.triggered_by, fetch.triggered_by) == ("user", "agent")
    # the mapping file: the tool's target, privilege and risk; which tools return untrusted content
    assert (delete.target_system, delete.privilege, delete.risk_level, delete.outcome) == ("iam", "admin", "critical",
                                                                                          "error")
    assert (fetch.target_system, fetch.privilege, fetch.risk_level, fetch.untrusted_input) == ("fetch_url", "read",
                                                                                             None, True)
    assert delete.untrusted_input is None and delete.approval == "not_required"
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert (fetch.ts - epoch) // timedelta(microseconds=1) == span_of["fetch_url"].start_time // 1000  # µs precision
    assert fetch.duration_ms == pytest.approx((span_of["fetch_url"].end_time - span_of["fetch_url"].start_time) / 1e6)
    (chat,) = [e for e in events if isinstance(e, ApiUsage)]
    assert (chat.api_key_id, chat.principal, chat.model, chat.tokens_in, chat.tokens_out, chat.endpoint,
            chat.status, chat.auth_result, chat.method) == ("key-helpdesk", "ana", "gpt-4o", 812, 96,
                                                             "api.openai.com/chat", 200, "ok", "POST")


def test_proto_and_json_give_the_same_events():
    spans = recorded(RESOURCE, lambda t: agent_run(t, tools=("a", "b")))
    assert [r.value for r in _expand(otlp_proto(spans)).records] == [r.value for r in _expand(otlp_json(spans)).records]


def test_old_attribute_names_are_read_where_the_new_ones_are_absent():
    def build(t):
        t.start_span("text_completion m", attributes={
            "gen_ai.system": "openai", "gen_ai.operation.name": "text_completion", "gen_ai.request.model": "m",
            "gen_ai.usage.prompt_tokens": 5, "gen_ai.usage.completion_tokens": 3, "enduser.id": "bob"}).end()
    (e,) = _events(otlp_proto(recorded(RESOURCE, build)))
    assert (e.tokens_in, e.tokens_out, e.principal, e.endpoint) == (5, 3, "bob", "/text_completion")


def test_spyglass_attributes_win_over_the_mapping_file_and_the_defaults():
    attrs = {"user.id": "ana", "gen_ai.agent.id": "agt-1", "spyglass.principal": "svc-ops", "spyglass.agent.type":
             "ops", "spyglass.privilege": "write", "spyglass.risk_level": "high", "spyglass.approval": "bypassed",
             "spyglass.target": "billing", "spyglass.triggered_by": "external_content",
             "spyglass.untrusted_input": False, "spyglass.tenant": "acme", "spyglass.outcome": "blocked"}
    spans = recorded(RESOURCE, lambda t: t.start_span("execute_tool refund", attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "refund", **attrs}).end())
    mapping = _mapping(tools={"refund": {"target": "payments", "privilege": "read", "risk": "low",
                                         "untrusted_output": True}})
    (e,) = _events(otlp_proto(spans), mapping)
    assert (e.principal, e.agent_type, e.privilege, e.risk_level, e.approval, e.target_system, e.triggered_by,
            e.untrusted_input, e.tenant, e.outcome) == ("svc-ops", "ops", "write", "high", "bypassed", "billing",
                                                        "external_content", False, "acme", "blocked")


def test_the_mapping_file_names_the_resource_attribute_of_the_api_key_and_a_default_principal():
    attrs = {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "e5", "http.response.status_code": 429}
    spans = recorded({"service.name": "bot", "deployment.key": "k-9"},
                     lambda t: t.start_span("embeddings e5", attributes=attrs).end())
    (e,) = _events(otlp_proto(spans), _mapping(api_key_attribute="deployment.key", principal_default="unknown-user"))
    assert (e.api_key_id, e.principal, e.status, e.auth_result) == ("k-9", "unknown-user", 429, "rate_limited")


def test_a_resource_attribute_named_by_the_mapping_file_is_the_agent_of_spans_that_name_none():
    spans = recorded({"service.name": "triage-agent"}, lambda t: t.start_span("execute_tool lookup", attributes={
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup", "user.id": "u"}).end())
    assert [e.field for _, e in _expand(otlp_proto(spans)).dead] == ["span.attributes.gen_ai.agent.id"]
    (e,) = _events(otlp_proto(spans), _mapping(agent_attribute="service.name"))
    assert (e.agent_id, e.agent_type, e.action) == ("triage-agent", "genai", "lookup")


def test_non_genai_spans_are_skipped_and_counted_and_other_operations_too():
    def build(t):
        t.start_span("GET /health", attributes={"http.request.method": "GET"}).end()
        t.start_span("create_agent helper", attributes={"gen_ai.operation.name": "create_agent"}).end()
        t.start_span("chat m", attributes={"gen_ai.request.model": "m", "user.id": "u"}).end()  # op from the name
    before = {o: m.OTLP_SPANS.labels(o)._value.get() for o in ("skipped_not_genai", "skipped_operation",
                                                                "mapped_api_usage")}
    out = _expand(otlp_proto(recorded(RESOURCE, build)))
    assert out.outcomes == {"skipped_not_genai": 1, "skipped_operation": 1, "mapped_api_usage": 1}
    assert not out.dead and len(out.records) == 1
    for o, n in out.outcomes.items():
        assert m.OTLP_SPANS.labels(o)._value.get() - before[o] == n


def test_unmappable_spans_become_dead_letters_naming_the_attribute():
    def build(t):
        t.start_span("execute_tool x", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "x",
                                                   "user.id": "u"}).end()  # no agent anywhere
        t.start_span("execute_tool y", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "y",
                                                   "gen_ai.agent.id": "a", "user.id": "u",
                                                   "spyglass.privilege": "root"}).end()
        t.start_span("chat m", attributes={"gen_ai.operation.name": "chat", "user.id": "u"}).end()  # no API key
        t.start_span("execute_tool z", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "z",
                                                   "gen_ai.agent.id": "a"}).end()  # no principal
        t.start_span("execute_tool w", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "w",
                                                   "gen_ai.agent.id": "a", "user.id": "u",
                                                   "gen_ai.usage.input_tokens": -4}).end()
        t.start_span("execute_tool v", attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "v",
                                                   "gen_ai.agent.id": "a" * 300, "user.id": "u"}).end()
    spans = recorded({"service.name": "s"}, build)
    out = _expand(otlp_proto(spans))
    fields = [err.field for _, err in out.dead]
    assert fields == ["span.attributes.gen_ai.agent.id", "span.attributes.spyglass.privilege",
                      "span.attributes.spyglass.api_key.id", "span.attributes.user.id",
                      "span.attributes.gen_ai.usage.input_tokens"]
    assert "'root' is not one of read, write, admin" in out.dead[1][1].reason
    assert all(r.offset == 7 and json.loads(r.value)["name"].startswith(("execute_tool", "chat"))
               for r, _ in out.dead)  # the dead letter's value: the span, as OTLP/JSON (ids in hex)
    first = json.loads(out.dead[0][0].value)
    assert (first["traceId"], first["spanId"]) == (f"{spans[0].context.trace_id:032x}",
                                                   f"{spans[0].context.span_id:016x}")
    # the agent id over the contract's limit is mapped, and refused by the contract's decoder on the normal path
    (rec,) = out.records
    _, _, ok, bad = decode_records([rec.value], "default", None)
    assert ok == [] and bad[0][1].field == "$.agent_id"


@pytest.mark.parametrize("value", [b"", b"\x0a\xff\xff\xff", b"{not json", b'{"resourceSpans": 3}', b"[1]",
                                   b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}'])
def test_a_record_that_is_no_otlp_export_is_one_dead_letter(value):
    out = _expand(value)
    assert [(r.value, e.field) for r, e in out.dead] == [(value, "$")] and not out.records
    assert isinstance(decode_request(value), EventError)


def test_mapped_events_take_the_normal_decode_path():
    spans = recorded(RESOURCE, lambda t: agent_run(t, tools=("a", "b", "c")))
    out = _expand(otlp_json(spans))
    events, blocks, ok, bad = decode_records([r.value for r in out.records], "default", None)
    assert len(ok) == 5 and not bad
    assert sorted(b.kind for b in blocks) == ["agent_execution", "api_usage"]


def test_the_mapping_file_is_checked_and_names_the_bad_field(tmp_path: Path):
    good = tmp_path / "m.yaml"
    good.write_text("version: 1\ntools:\n  delete_user: {target: iam, privilege: admin, risk: critical}\n"
                    "untrusted_tools: [fetch_url]\napi_key_attribute: deployment.key\n")
    mp = load_mapping(good)
    assert mp.rule("delete_user").privilege == "admin" and mp.untrusted("fetch_url") and not mp.untrusted("x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools:\n  delete_user: {privilege: root}\n")
    with pytest.raises(ConfigError, match=r"'root' - at `\$\.tools\.delete_user\.privilege`"):
        load_mapping(bad)
    bad.write_text("toolz: {}\n")
    with pytest.raises(ConfigError, match="toolz"):
        load_mapping(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_mapping(tmp_path / "missing.yaml")
    assert load_mapping(None) == SpanMapping()


def test_the_semantic_conventions_version_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "opentelemetry.md").read_text()
    assert f"v{SEMCONV_VERSION}" in doc


def test_an_engine_scores_the_mapped_events_of_a_spans_record_counted_by_kind():
    from detectors.engine import Engine
    from streams.step import score_events

    spans = recorded(RESOURCE, lambda t: agent_run(t, tools=("a", "b")))
    out = _expand(otlp_proto(spans))
    before = {k: m.EVENTS_IN.labels(k)._value.get() for k in ("agent_execution", "api_usage")}
    scored = score_events(Engine(), out.records, None, "default")  # type: ignore[arg-type]
    assert scored.events_in == 4 and not scored.dead
    assert sorted((b.kind, len(b), len(b.scores)) for b in scored.events) == [("agent_execution", 3, 3),
                                                                              ("api_usage", 1, 1)]
    assert {k: m.EVENTS_IN.labels(k)._value.get() - v for k, v in before.items()} == {"agent_execution": 3,
                                                                                     "api_usage": 1}


def test_the_collector_is_built_from_the_documented_modules_and_configured_for_loopback():
    from streams.stack import otelcol

    gomod = (otelcol.SOURCE / "go.mod").read_text()
    for module in ("go.opentelemetry.io/collector/otelcol v0.165.0",
                   "go.opentelemetry.io/collector/receiver/otlpreceiver v0.165.0",
                   "github.com/open-telemetry/opentelemetry-collector-contrib/exporter/kafkaexporter v0.165.1"):
        assert module in gomod
    cfg = otelcol.config(otlp_http_port=4318, brokers="127.0.0.1:9092,127.0.0.1:9094", topic="t", encoding="otlp_json")
    assert cfg["receivers"]["otlp"]["protocols"] == {"http": {"endpoint": "127.0.0.1:4318"}}
    assert cfg["exporters"]["kafka"]["brokers"] == ["127.0.0.1:9092", "127.0.0.1:9094"]
    assert cfg["exporters"]["kafka"]["traces"] == {"topic": "t", "encoding": "otlp_json"}
    assert cfg["service"]["telemetry"]["metrics"] == {"level": "none"}  # no port of its own
    assert otelcol.binary_path(Path("/c")).parent.name == f"otelcol-{otelcol.source_digest()}"
