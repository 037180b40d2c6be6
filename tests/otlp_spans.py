"""GenAI spans made with the official OpenTelemetry SDK and encoded as the Collector's Kafka exporter writes them.

The spans come from the SDK's tracer (in memory); :func:`otlp_proto` encodes them with the official OTLP encoder
(``opentelemetry-exporter-otlp-proto-common``'s ``encode_spans``, what the OTLP exporters send) and serialises the
request, as the exporter's ``otlp_proto`` does; :func:`otlp_json` writes the same request in OTLP/JSON (protobuf's
JSON mapping with trace and span ids in hex, as the OTLP specification and the exporter's ``otlp_json`` write).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer


def recorded(resource: dict[str, Any], build: Callable[[Tracer], None]) -> Sequence[ReadableSpan]:
    """The spans ``build`` makes with a tracer of a fresh SDK provider whose resource has ``resource``."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        build(provider.get_tracer("spyglass-tests"))
        return exporter.get_finished_spans()
    finally:
        provider.shutdown()


def otlp_proto(spans: Sequence[ReadableSpan]) -> bytes:
    return encode_spans(spans).SerializeToString()


def otlp_json(spans: Sequence[ReadableSpan]) -> bytes:
    from google.protobuf import json_format

    doc = json_format.MessageToDict(encode_spans(spans))
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for k in ("traceId", "spanId", "parentSpanId"):
                    if k in span:
                        span[k] = base64.b64decode(span[k]).hex()
    return json.dumps(doc).encode()


def agent_run(tracer: Tracer, *, agent: str = "agt-7", user: str = "ana", tools: Sequence[str] = ("search_kb",),
              tool_attrs: dict[str, Any] | None = None, chat_model: str = "gpt-4o", fail_tool: str | None = None,
              start_ns: int | None = None) -> None:
    """One agent invocation as agent frameworks trace it: ``invoke_agent`` (with the agent and the user), a
    ``chat`` call, then one ``execute_tool`` span per tool (attributes on the tool spans: ``tool_attrs``).
    ``start_ns``: the invocation's start time (its children follow one second apart)."""
    t = start_ns
    step = 1_000_000_000

    def at(i: int) -> dict[str, int]:
        return {} if t is None else {"start_time": t + i * step}

    def end(span: Any, i: int) -> None:
        span.end(None if t is None else t + i * step + step // 2)

    root = tracer.start_span(f"invoke_agent {agent}", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": agent, "gen_ai.agent.name": "helpdesk",
        "gen_ai.conversation.id": f"conv-{agent}", "gen_ai.provider.name": "openai", "user.id": user}, **at(0))
    from opentelemetry import trace

    with trace.use_span(root, end_on_exit=False):
        chat = tracer.start_span(f"chat {chat_model}", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": chat_model, "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 812, "gen_ai.usage.output_tokens": 96, "server.address": "api.openai.com"},
            **at(1))
        end(chat, 1)
        for i, tool in enumerate(tools, start=2):
            span = tracer.start_span(f"execute_tool {tool}", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.type": "function",
                **(tool_attrs or {})}, **at(i))
            if tool == fail_tool:
                span.set_status(Status(StatusCode.ERROR, "tool failed"))
            end(span, i)
    end(root, len(tools) + 2)
