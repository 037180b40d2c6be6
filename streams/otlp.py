"""OpenTelemetry GenAI spans -> contract-v1 events: the worker's fourth source (docs/opentelemetry.md).

The OpenTelemetry Collector's Kafka exporter writes each batch of spans as one record, an
``ExportTraceServiceRequest`` encoded as ``otlp_proto`` (its default) or ``otlp_json``; both are read
(a record starting with ``{`` is JSON) and decoded with the official ``opentelemetry-proto`` messages.
Each span is then

- an ``agent_execution`` event (``execute_tool``, ``invoke_agent`` operations),
- an ``api_usage`` event (``chat``, ``text_completion``, ``generate_content``, ``embeddings``),
- skipped and counted: not a GenAI span, or a GenAI operation Spyglass has no event for
  (``spyglass_otlp_spans_total{outcome}``),
- or a dead letter naming the attribute that is missing or wrong.

What the conventions do not carry comes, in this order, from span attributes of Spyglass's own
namespace (``spyglass.*``), from the mapping file (:class:`SpanMapping`), from a documented default.
The GenAI conventions are still *Development* and their names move: the old names are read where the
new ones are absent (:data:`RENAMED`). :data:`SEMCONV_VERSION` is the release the mapping follows.

Mapped events leave as contract JSON records (:class:`SpanRecord`, one per span, with the offset of the
Kafka record they came from) and take the worker's normal decode path, so the contract's validation
applies to them as to any emitter's events.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, get_args

import msgspec
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from schemas.errors import ConfigError, EventError
from schemas.events import Approval, Privilege, RiskLevel, TriggeredBy
from streams import metrics as m
from streams.records import Record

# the OpenTelemetry semantic conventions release whose GenAI spans this mapping follows (its last release in the
# main repository; the GenAI conventions have since moved to their own repository, unreleased)
SEMCONV_VERSION: Final = "1.41.0"

AGENT_OPERATIONS: Final = ("execute_tool", "invoke_agent")
API_OPERATIONS: Final = ("chat", "text_completion", "generate_content", "embeddings")
# the GenAI operations of the conventions Spyglass has no event for: skipped, counted
OTHER_OPERATIONS: Final = ("create_agent", "retrieval", "invoke_workflow")

# current name -> the older names read when it is absent (conventions before SEMCONV_VERSION)
RENAMED: Final[dict[str, tuple[str, ...]]] = {
    "gen_ai.provider.name": ("gen_ai.system",),
    "gen_ai.usage.input_tokens": ("gen_ai.usage.prompt_tokens",),
    "gen_ai.usage.output_tokens": ("gen_ai.usage.completion_tokens",),
}

# the principal: Spyglass's attribute, the user attributes, then the end user's (another Development attribute)
PRINCIPAL_ATTRS: Final = ("spyglass.principal", "user.id", "user.name", "user.email", "enduser.id")

MAX_OTLP_RECORD_BYTES: Final = 16 * 1024 * 1024  # a record above this is refused whole (the exporter's default: 1 MB)
MAX_ANCESTORS: Final = 64  # how far up a span's parents an agent's identity is looked for


class ToolRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What the mapping file says of one tool (every field optional)."""

    target: str | None = None  # the system the tool acts on (target_system)
    privilege: Privilege | None = None
    risk: RiskLevel | None = None
    approval: Approval | None = None  # the approval its calls run under, when the span does not say
    untrusted_output: bool = False  # it returns content from outside (web pages, mail): its steps read untrusted input


class SpanMapping(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The mapping file (YAML): what GenAI spans do not carry. Every field optional; the defaults are the
    documented ones (docs/opentelemetry.md)."""

    version: Literal[1] = 1
    tools: dict[str, ToolRule] = {}
    untrusted_tools: list[str] = []  # tools returning untrusted content (also ToolRule.untrusted_output)
    api_key_attribute: str = "spyglass.api_key.id"  # the resource attribute whose value is the API key id
    agent_attribute: str | None = None  # a resource attribute whose value is the agent id of spans naming none
    principal_default: str | None = None  # the principal of spans that name no user (None: dead letter)
    default_privilege: Privilege = "read"
    default_approval: Approval = "not_required"

    def rule(self, tool: str) -> ToolRule:
        return self.tools.get(tool) or _NO_RULE

    def untrusted(self, tool: str) -> bool:
        """Whether ``tool`` returns untrusted content (its steps read untrusted input)."""
        return self.rule(tool).untrusted_output or tool in self.untrusted_tools


_NO_RULE: Final = ToolRule()


def load_mapping(path: Path | None) -> SpanMapping:
    """The mapping file at ``path`` (YAML), or the defaults when None; a bad file raises
    :class:`~schemas.errors.ConfigError` naming the field."""
    if path is None:
        return _mapping({})
    import yaml

    try:
        raw = yaml.safe_load(path.expanduser().read_text())
    except OSError as exc:
        raise ConfigError(f"SPYGLASS_OTLP_MAPPING_FILE: cannot read {path} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"SPYGLASS_OTLP_MAPPING_FILE: {path} is not YAML: {exc}") from None
    try:
        return _mapping(raw if raw is not None else {})
    except msgspec.ValidationError as exc:
        raise ConfigError(f"SPYGLASS_OTLP_MAPPING_FILE: {path}: {exc}") from None


def _mapping(raw: Any) -> SpanMapping:
    """The mapping of a parsed file; a tool's bad field is named with the tool (``tools.NAME.privilege``)."""
    tools = raw.get("tools") if isinstance(raw, dict) else None
    if isinstance(tools, dict):
        for name, rule in tools.items():
            try:
                msgspec.convert(rule, ToolRule)
            except msgspec.ValidationError as exc:
                raise msgspec.ValidationError(str(exc).replace("`$", f"`$.tools.{name}")) from None
    return msgspec.convert(raw, SpanMapping)


# --- decoding ------------------------------------------------------------------------------------------------
def decode_request(value: bytes | None) -> ExportTraceServiceRequest | EventError:
    """One Kafka record of the exporter: its spans, or why it is not an OTLP trace export (``otlp_proto`` or
    ``otlp_json``)."""
    if not value:
        return EventError("$", "empty record (no OTLP trace export)")
    if len(value) > MAX_OTLP_RECORD_BYTES:
        return EventError("$", f"record is {len(value)} bytes, above the {MAX_OTLP_RECORD_BYTES}-byte limit")
    req = ExportTraceServiceRequest()
    if value.lstrip()[:1] == b"{":
        try:
            doc = msgspec.json.decode(value)
            if not isinstance(doc, dict):
                return EventError("$", "otlp_json: not an object")
            json_format.ParseDict(_ids_to_base64(doc), req, ignore_unknown_fields=True)
        except (msgspec.DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
            return EventError("$", f"not an OTLP/JSON trace export: {str(exc)[:300]}")
        return req
    try:
        req.ParseFromString(value)
    except (DecodeError, RecursionError, ValueError) as exc:
        return EventError("$", f"not an OTLP/protobuf trace export: {str(exc)[:300]}")
    return req


_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _ids_to_base64(doc: dict) -> dict:
    """OTLP/JSON writes trace and span ids as hex, protobuf's JSON mapping reads bytes as base64: convert the
    ids of every span (and link) in place."""
    for rs in _dicts(doc.get("resourceSpans", doc.get("resource_spans"))):
        for ss in _dicts(rs.get("scopeSpans", rs.get("scope_spans"))):
            for span in _dicts(ss.get("spans")):
                _hex_ids(span)
                for link in _dicts(span.get("links")):
                    _hex_ids(link)
    return doc


def _dicts(v: Any) -> Iterator[dict]:
    return (x for x in v if isinstance(x, dict)) if isinstance(v, list) else iter(())


def _hex_ids(d: dict) -> None:
    for k in _ID_FIELDS:
        v = d.get(k)
        if isinstance(v, str) and v:
            try:
                d[k] = binascii.b2a_base64(bytes.fromhex(v), newline=False).decode()
            except ValueError:
                raise ValueError(f"{k} {v[:40]!r} is not hex") from None


def span_json(span: Span) -> bytes:
    """One span in OTLP/JSON (ids in hex): what a dead letter of an unmappable span carries."""
    doc = json_format.MessageToDict(span)
    for k in ("traceId", "spanId", "parentSpanId"):
        if k in doc:
            doc[k] = binascii.a2b_base64(doc[k]).hex()
    return msgspec.json.encode(doc)


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Span or resource attributes as a dict of plain values (arrays as lists; maps and bytes left out)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        v = _plain(kv.value)
        if v is not None:
            out[kv.key] = v
    return out


def _plain(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "string_value":
        return v.string_value
    if which == "int_value":
        return v.int_value
    if which == "bool_value":
        return v.bool_value
    if which == "double_value":
        return v.double_value
    if which == "array_value":
        return [x for x in map(_plain, v.array_value.values) if x is not None]
    return None


# --- mapping -------------------------------------------------------------------------------------------------
class Skipped(NamedTuple):
    """A span that is not mapped and is no error: its outcome label."""

    outcome: str


SKIP_NOT_GENAI: Final = Skipped("skipped_not_genai")
SKIP_OPERATION: Final = Skipped("skipped_operation")


@dataclass
class SpanContext:
    """One span with what its mapping needs from around it: its resource's attributes and the other spans of the
    same export (by trace and span id), where an agent's identity may be found on a parent."""

    span: Span
    attrs: dict[str, Any]
    resource: dict[str, Any]
    spans: Mapping[tuple[bytes, bytes], SpanContext] = field(default_factory=dict)

    def get(self, name: str) -> Any:
        """The span attribute ``name`` (or an older name of it)."""
        v = self.attrs.get(name)
        if v is None:
            for old in RENAMED.get(name, ()):
                v = self.attrs.get(old)
                if v is not None:
                    break
        return v

    def parents(self) -> Iterator[SpanContext]:
        """The span's ancestors present in the same export, nearest first (a cycle is cut)."""
        seen = {self.span.span_id}
        cur = self
        for _ in range(MAX_ANCESTORS):
            pid = cur.span.parent_span_id
            if not pid or pid in seen:
                return
            seen.add(pid)
            nxt = self.spans.get((cur.span.trace_id, pid))
            if nxt is None:
                return
            yield nxt
            cur = nxt

    def inherited(self, name: str) -> Any:
        """The attribute on the span, else on its nearest ancestor in the same export that has it."""
        v = self.get(name)
        if v is not None:
            return v
        for p in self.parents():
            v = p.get(name)
            if v is not None:
                return v
        return None


def operation(ctx: SpanContext) -> str | None:
    """The span's GenAI operation: ``gen_ai.operation.name``, else the first word of the span's name when it is
    one of the conventions' operations and the span has a ``gen_ai.*`` attribute; None: not a GenAI span."""
    op = ctx.attrs.get("gen_ai.operation.name")
    if isinstance(op, str) and op:
        return op
    first = ctx.span.name.split(" ", 1)[0]
    if first in AGENT_OPERATIONS + API_OPERATIONS + OTHER_OPERATIONS and any(
            k.startswith("gen_ai.") for k in ctx.attrs):
        return first
    return None


def _iso(ns: int) -> str:
    secs, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rest // 1000:06d}Z"


def _text(ctx: SpanContext, names: Sequence[str], inherit: bool = False) -> tuple[str, str] | None:
    """The first of ``names`` the span (or, ``inherit``, an ancestor) has as a non-empty value: (name, value)."""
    for n in names:
        v = ctx.inherited(n) if inherit else ctx.get(n)
        if v is not None and v != "" and not isinstance(v, list):
            return n, str(v)
    return None


def _count(ctx: SpanContext, name: str) -> int | None:
    v = ctx.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise EventError(f"span.attributes.{name}", f"a token count must be a non-negative number, got {v!r}")
    return int(v)


def _choice(ctx: SpanContext, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    """A ``spyglass.*`` enum attribute, checked against the contract's values; ``default`` when absent."""
    v = ctx.get(name)
    if v is None:
        return default
    if v not in allowed:
        raise EventError(f"span.attributes.{name}", f"{v!r} is not one of {', '.join(allowed)}")
    return str(v)


def _bool(ctx: SpanContext, name: str) -> bool | None:
    v = ctx.get(name)
    if v is None or isinstance(v, bool):
        return v
    raise EventError(f"span.attributes.{name}", f"expected a boolean, got {v!r}")


_PRIVILEGES: Final = get_args(Privilege)
_RISKS: Final = get_args(RiskLevel)
_APPROVALS: Final = get_args(Approval)
_TRIGGERS: Final = get_args(TriggeredBy)
_OUTCOMES: Final = ("success", "error", "blocked")
_AUTH: Final = ("ok", "invalid_credentials", "expired", "forbidden", "rate_limited")


class SpanMapper:
    """Maps spans to contract rows (dicts) with one mapping file's rules."""

    def __init__(self, mapping: SpanMapping | None = None) -> None:
        self.mapping = mapping or _mapping({})

    def map(self, ctx: SpanContext) -> dict[str, Any] | Skipped | EventError:
        """One span: a contract row, a skip, or the error that makes it a dead letter."""
        op = operation(ctx)
        if op is None:
            return SKIP_NOT_GENAI
        if op not in AGENT_OPERATIONS and op not in API_OPERATIONS:
            return SKIP_OPERATION
        try:
            row = self._envelope(ctx)
            row.update(self._agent(ctx, op) if op in AGENT_OPERATIONS else self._api(ctx, op))
        except EventError as err:
            return err
        return row

    def _envelope(self, ctx: SpanContext) -> dict[str, Any]:
        s = ctx.span
        if len(s.trace_id) != 16 or len(s.span_id) != 8:
            raise EventError("span.span_id", "a span needs a 16-byte trace id and an 8-byte span id")
        if s.start_time_unix_nano <= 0:
            raise EventError("span.start_time_unix_nano", "the span has no start time")
        row: dict[str, Any] = {"event_id": f"{s.trace_id.hex()}-{s.span_id.hex()}", "ts": _iso(s.start_time_unix_nano)}
        tenant = ctx.get("spyglass.tenant") or ctx.resource.get("spyglass.tenant")
        if tenant is not None:
            row["tenant"] = str(tenant)
        service = ctx.resource.get("service.name")
        if service:
            row["source"] = str(service)
        return row

    def _principal(self, ctx: SpanContext) -> str:
        found = _text(ctx, PRINCIPAL_ATTRS, inherit=True)
        if found is not None:
            return found[1]
        if self.mapping.principal_default:
            return self.mapping.principal_default
        raise EventError("span.attributes.user.id", "no principal: the span (and its parents in the export) has "
                         "none of " + ", ".join(PRINCIPAL_ATTRS) + ", and the mapping file sets no principal_default")

    def _duration_ms(self, ctx: SpanContext) -> float | None:
        s = ctx.span
        if s.end_time_unix_nano >= s.start_time_unix_nano > 0:
            return (s.end_time_unix_nano - s.start_time_unix_nano) / 1e6
        return None

    def _agent(self, ctx: SpanContext, op: str) -> dict[str, Any]:
        found = _text(ctx, ("spyglass.agent.id", "gen_ai.agent.id", "gen_ai.agent.name"), inherit=True)
        if found is None and self.mapping.agent_attribute:
            v = ctx.resource.get(self.mapping.agent_attribute)
            found = (self.mapping.agent_attribute, str(v)) if v is not None and v != "" else None
        if found is None:
            raise EventError("span.attributes.gen_ai.agent.id", f"an {op} span with no agent: neither it nor its "
                             "parents in the export have spyglass.agent.id, gen_ai.agent.id or gen_ai.agent.name, "
                             "and the mapping file names no agent_attribute of the resource that has a value")
        agent_id = found[1]
        agent_type = _text(ctx, ("spyglass.agent.type", "gen_ai.agent.name"), inherit=True)
        session = _text(ctx, ("spyglass.session.id", "gen_ai.conversation.id"), inherit=True)
        if op == "execute_tool":
            tool = _text(ctx, ("spyglass.action", "gen_ai.tool.name"))
            if tool is None:
                raise EventError("span.attributes.gen_ai.tool.name", "an execute_tool span with no tool name")
            action = tool[1]
            rule = self.mapping.rule(action)
            target = _text(ctx, ("spyglass.target",))
            target_system = target[1] if target else (rule.target or action)
        else:
            action = "invoke_agent"
            rule = _NO_RULE
            target = _text(ctx, ("spyglass.target", "gen_ai.agent.name"))
            target_system = target[1] if target else agent_id
        parent = ctx.span.parent_span_id
        status = ctx.span.status.code
        outcome = _choice(ctx, "spyglass.outcome", _OUTCOMES,
                          "error" if status == Status.STATUS_CODE_ERROR else "success")
        untrusted = _bool(ctx, "spyglass.untrusted_input")
        if untrusted is None and self.mapping.untrusted(action):
            untrusted = True
        row: dict[str, Any] = {
            "kind": "agent_execution", "agent_id": agent_id,
            "agent_type": agent_type[1] if agent_type else "genai",
            "session_id": session[1] if session else ctx.span.trace_id.hex(),
            "principal": self._principal(ctx), "action": action, "target_system": target_system,
            "privilege": _choice(ctx, "spyglass.privilege", _PRIVILEGES,
                                 rule.privilege or self.mapping.default_privilege),
            "approval": _choice(ctx, "spyglass.approval", _APPROVALS, rule.approval or self.mapping.default_approval),
            "triggered_by": _choice(ctx, "spyglass.triggered_by", _TRIGGERS,
                                    "agent" if parent or op == "execute_tool" else "user"),
            "outcome": outcome,
        }
        risk = _choice(ctx, "spyglass.risk_level", _RISKS, rule.risk)
        optional = {"risk_level": risk, "untrusted_input": untrusted, "duration_ms": self._duration_ms(ctx),
                    "tokens_in": _count(ctx, "gen_ai.usage.input_tokens"),
                    "tokens_out": _count(ctx, "gen_ai.usage.output_tokens"),
                    "parent_event_id": f"{ctx.span.trace_id.hex()}-{parent.hex()}" if len(parent) == 8 else None}
        row.update({k: v for k, v in optional.items() if v is not None})
        return row

    def _api(self, ctx: SpanContext, op: str) -> dict[str, Any]:
        key = _text(ctx, ("spyglass.api_key.id",))
        if key is None:
            v = ctx.resource.get(self.mapping.api_key_attribute)
            if v is not None and v != "":
                key = (self.mapping.api_key_attribute, str(v))
        if key is None:
            raise EventError("span.attributes.spyglass.api_key.id", "no API key: the span has no spyglass.api_key.id "
                             f"and its resource no {self.mapping.api_key_attribute} (api_key_attribute)")
        status_code = ctx.get("http.response.status_code")
        error = ctx.span.status.code == Status.STATUS_CODE_ERROR or ctx.get("error.type") is not None
        if isinstance(status_code, int) and not isinstance(status_code, bool) and 100 <= status_code <= 599:
            status = status_code
        else:
            status = 500 if error else 200
        auth = {401: "invalid_credentials", 403: "forbidden", 429: "rate_limited"}.get(status, "ok")
        server = _text(ctx, ("server.address",))
        row: dict[str, Any] = {
            "kind": "api_usage", "api_key_id": key[1], "principal": self._principal(ctx),
            "client_ip": (_text(ctx, ("spyglass.client.ip", "client.address")) or ("", "unknown"))[1],
            "method": str(ctx.get("http.request.method") or "POST"),
            "endpoint": (_text(ctx, ("spyglass.endpoint",)) or ("", f"{server[1] if server else ''}/{op}"))[1],
            "status": status, "auth_result": _choice(ctx, "spyglass.auth_result", _AUTH, auth),
        }
        model = _text(ctx, ("gen_ai.request.model", "gen_ai.response.model"))
        optional = {"model": model[1] if model else None, "latency_ms": self._duration_ms(ctx),
                    "user_agent": (_text(ctx, ("user_agent.original",)) or (None, None))[1],
                    "tokens_in": _count(ctx, "gen_ai.usage.input_tokens"),
                    "tokens_out": _count(ctx, "gen_ai.usage.output_tokens")}
        row.update({k: v for k, v in optional.items() if v is not None})
        return row


def span_contexts(req: ExportTraceServiceRequest) -> list[SpanContext]:
    """Every span of an export with its resource's attributes, linked to the others by (trace id, span id)."""
    index: dict[tuple[bytes, bytes], SpanContext] = {}
    out = []
    for rs in req.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                ctx = SpanContext(span, attributes(span.attributes), resource, index)
                index.setdefault((span.trace_id, span.span_id), ctx)
                out.append(ctx)
    return out


# --- the worker's side ---------------------------------------------------------------------------------------
class SpanRecord(NamedTuple):
    """A span as the worker's decode path sees a record: the offset and key of the Kafka record it came from, and
    its contract JSON (a mapped span) or its OTLP/JSON (a dead letter's value)."""

    offset: int
    key: bytes | None
    value: bytes


@dataclass
class Expanded:
    """The spans of a partition's records: mapped (contract JSON records), dead letters, counts by outcome."""

    records: list[SpanRecord] = field(default_factory=list)
    dead: list[tuple[Record, EventError]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)


_encode = msgspec.json.Encoder().encode


class SpanSource:
    """Expands the OTLP records of a partition into contract records, one per mapped span."""

    def __init__(self, mapping: SpanMapping | None = None) -> None:
        self.mapper = SpanMapper(mapping)

    def expand(self, records: Sequence[Record]) -> Expanded:
        out = Expanded()
        counts = out.outcomes
        for r in records:
            req = decode_request(r.value)
            if isinstance(req, EventError):
                out.dead.append((r, req))
                counts["dead_record"] = counts.get("dead_record", 0) + 1
                continue
            for ctx in span_contexts(req):
                got = self.mapper.map(ctx)
                if isinstance(got, dict):
                    out.records.append(SpanRecord(r.offset, r.key, _encode(got)))
                    outcome = "mapped_" + got["kind"]
                elif isinstance(got, EventError):
                    out.dead.append((SpanRecord(r.offset, r.key, span_json(ctx.span)), got))
                    outcome = "dead"
                else:
                    outcome = got.outcome
                counts[outcome] = counts.get(outcome, 0) + 1
        for outcome, n in counts.items():
            m.OTLP_SPANS.labels(outcome).inc(n)
        return out
