"""Event contract v1: typed structs, the decoders the hot path uses, and their errors.

The structs below *are* the contract: the published JSON Schemas in ``schemas/json/`` are
generated from them (``spyglass schemas export``) and a unit test keeps the two in step.

Decoding never raises on bad input: :func:`decode` returns either an event or an
:class:`~schemas.errors.EventError` naming the offending field, so a bad record becomes
data (a dead letter, a skipped replay line) and the stream goes on.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from schemas.errors import EventError

CONTRACT_VERSION: Final = 1
DEFAULT_TENANT: Final = "default"

# RFC 3339 with a mandatory offset; naive timestamps are rejected by the decoder (tz=True)
# and by the published schema (this pattern), so emitters get the same answer from both.
RFC3339_PATTERN: Final = (
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)

# --- field types -------------------------------------------------------------------------
Id = Annotated[str, Meta(min_length=1, max_length=256)]
EventId = Annotated[str, Meta(min_length=1, max_length=128, description="Unique per emitter")]
Text = Annotated[str, Meta(max_length=1024)]
Timestamp = Annotated[
    datetime,
    Meta(
        tz=True,
        description="RFC 3339 timestamp with offset, e.g. 2026-11-21T13:45:00.123Z",
        extra_json_schema={"pattern": RFC3339_PATTERN},
    ),
]
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Millis = Annotated[float, Meta(ge=0)]
HttpStatus = Annotated[int, Meta(ge=100, le=599)]
Scopes = Annotated[list[Annotated[str, Meta(min_length=1, max_length=256)]], Meta(max_length=256)]

AuthResult = Literal["ok", "invalid_credentials", "expired", "forbidden", "rate_limited"]
Sensitivity = Literal["public", "internal", "confidential", "restricted"]
Operation = Literal["read", "write", "delete", "export", "train"]
Privilege = Literal["read", "write", "admin"]
RiskLevel = Literal["low", "medium", "high", "critical"]
Approval = Literal["not_required", "approved", "pending", "denied", "bypassed"]
TriggeredBy = Literal["user", "schedule", "agent", "external_content"]
Outcome = Literal["success", "error", "blocked"]

KINDS: Final = ("api_usage", "data_access", "agent_execution")
# The entity each kind's per-entity state is keyed by (also the Kafka partition key).
ENTITY_FIELD: Final = {"api_usage": "api_key_id", "data_access": "principal", "agent_execution": "agent_id"}


class Envelope(Struct, tag_field="kind", kw_only=True, omit_defaults=True, gc=False):
    """Fields every event carries. ``kind`` is the tag that selects the struct."""

    event_id: EventId
    ts: Timestamp
    tenant: Annotated[str, Meta(min_length=1, max_length=128)] | UnsetType = UNSET
    source: Id | UnsetType = UNSET


class ApiUsage(Envelope, tag="api_usage"):
    """One request to an API gateway fronting models and services."""

    api_key_id: Id
    principal: Id
    client_ip: Annotated[str, Meta(min_length=2, max_length=64)]
    method: Annotated[str, Meta(min_length=1, max_length=16)]
    endpoint: Annotated[str, Meta(min_length=1, max_length=512, description="Route template")]
    status: HttpStatus
    auth_result: AuthResult
    user_agent: Text | None = None
    latency_ms: Millis | None = None
    request_bytes: Count | None = None
    response_bytes: Count | None = None
    scopes_granted: Scopes | None = None
    scope_used: Id | None = None
    model: Id | None = None
    tokens_in: Count | None = None
    tokens_out: Count | None = None


class DataAccess(Envelope, tag="data_access"):
    """One read/write/export of a dataset by a principal (possibly through an agent)."""

    principal: Id
    principal_department: Id
    dataset: Id
    dataset_owner_department: Id
    sensitivity: Sensitivity
    operation: Operation
    granted: bool
    rows: Count | None = None
    bytes: Count | None = None
    client_ip: Annotated[str, Meta(min_length=2, max_length=64)] | None = None
    via_agent: Id | None = None
    purpose: Text | None = None
    encrypted: bool | None = None


class AgentExecution(Envelope, tag="agent_execution"):
    """One tool call made by an AI agent on behalf of a principal."""

    agent_id: Id
    agent_type: Id
    session_id: Id
    principal: Id
    action: Id
    target_system: Id
    privilege: Privilege
    approval: Approval
    triggered_by: TriggeredBy
    outcome: Outcome
    risk_level: RiskLevel | None = None
    untrusted_input: bool | None = None
    duration_ms: Millis | None = None
    tokens_in: Count | None = None
    tokens_out: Count | None = None
    parent_event_id: EventId | None = None


Event = ApiUsage | DataAccess | AgentExecution


def entity_of(event: Event) -> str:
    """The entity an event is about (its kind's :data:`ENTITY_FIELD`): how its topic is keyed and stored."""
    return getattr(event, ENTITY_FIELD[type(event).__struct_config__.tag])


EVENT_TYPES: Final[dict[str, type[Envelope]]] = {
    "api_usage": ApiUsage,
    "data_access": DataAccess,
    "agent_execution": AgentExecution,
}

# Records above this size are refused before decoding (the huge-payload guard).
MAX_RECORD_BYTES: Final = 64 * 1024

_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()

_AT = re.compile(r" - at `(\$[^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def _error_from(exc: msgspec.MsgspecError) -> EventError:
    msg = str(exc)
    m = _AT.search(msg)
    reason = _AT.sub("", msg)
    if m:
        path = m.group(1)
        missing = _MISSING.search(msg)
        if missing:  # "Object missing required field `x` - at `$`"
            path = f"{path}.{missing.group(1)}"
        return EventError(path, reason)
    missing = _MISSING.search(msg)
    if missing:
        return EventError(f"$.{missing.group(1)}", reason)
    if isinstance(exc, msgspec.ValidationError):
        return EventError("$", reason)
    return EventError("$", f"not valid JSON: {reason}")


def decode(raw: bytes | str, *, default_tenant: str = DEFAULT_TENANT) -> Event | EventError:
    """Decode one JSON record into a typed event, or an error naming the bad field.

    Examples
    --------
    >>> e = decode(b'{"kind":"data_access","event_id":"e1","ts":"2026-11-21T13:45:00Z",'
    ...            b'"principal":"ana","principal_department":"hr","dataset":"payroll",'
    ...            b'"dataset_owner_department":"hr","sensitivity":"restricted",'
    ...            b'"operation":"read","granted":true,"rows":"12"}')
    >>> e.field, e.reason
    ('$.rows', 'Expected `int | null`, got `str`')
    >>> decode(b'{"kind":"api_usage","event_id":"e2","ts":"2026-11-21T13:45:00"}').field
    '$.ts'
    """
    if len(raw) > MAX_RECORD_BYTES:
        return EventError("$", f"record is {len(raw)} bytes, above the {MAX_RECORD_BYTES}-byte limit")
    try:
        event = _decoder.decode(raw)
    except msgspec.MsgspecError as exc:
        return _error_from(exc)
    except UnicodeDecodeError as exc:
        return EventError("$", f"invalid UTF-8 at byte {exc.start}")
    except RecursionError:  # msgspec's own guard against deeply nested input
        return EventError("$", "JSON nested too deeply")
    if event.tenant is UNSET:
        event.tenant = default_tenant
    return event


def decode_as(value: bytes | None, default_tenant: str, kind: str | None = None) -> Event | EventError:
    """Decode a Kafka record's value; ``kind``, when given, is the only event kind its topic carries."""
    if value is None:
        return EventError("$", "empty record (null value)")
    ev = decode(value, default_tenant=default_tenant)
    if isinstance(ev, EventError) or kind is None:
        return ev
    tag = type(ev).__struct_config__.tag
    if tag != kind:
        return EventError("$.kind", f"a {tag} event on the {kind} topic")
    return ev


def decode_batch(
    raws: list[bytes], *, default_tenant: str = DEFAULT_TENANT
) -> tuple[list[Event], list[tuple[int, EventError]]]:
    """Decode a batch: (events, [(index in batch, error)]). Never raises on bad input."""
    oks: list[Event] = []
    errs: list[tuple[int, EventError]] = []
    for i, raw in enumerate(raws):
        r = decode(raw, default_tenant=default_tenant)
        if isinstance(r, EventError):
            errs.append((i, r))
        else:
            oks.append(r)
    return oks, errs


def encode(event: Event) -> bytes:
    """Canonical JSON of an event (the emitter side; also used by the simulator)."""
    return _encoder.encode(event)


def json_schema(kind: str) -> dict[str, object]:
    """The published JSON Schema (draft 2020-12) of one event kind."""
    cls = EVENT_TYPES[kind]
    schema = msgspec.json.schema(cls)
    defs = schema.pop("$defs", {})
    body = defs[cls.__name__] if "$ref" in schema else schema
    doc: dict[str, object] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:spyglass:event:{kind}:v{CONTRACT_VERSION}",
    }
    doc.update(body)
    doc["title"] = f"Spyglass {kind} event, contract v{CONTRACT_VERSION}"
    # Unknown extra fields are tolerated and ignored (forward compatibility for emitters).
    doc["additionalProperties"] = True
    return doc
