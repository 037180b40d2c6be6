"""The alert contract: the same JSON in replay output, the alerts topic and ClickHouse."""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

Severity = Literal["info", "low", "medium", "high", "critical"]
EntityType = Literal["api_key", "principal", "agent", "client_ip", "dataset"]
SEVERITIES = ("info", "low", "medium", "high", "critical")


class Feature(msgspec.Struct, kw_only=True):
    """One measured feature of a finding against its baseline.

    ``contribution``: the feature's share (0 to 1, summing to 1 over the alert's features) of how far the
    finding departed from its baselines: the detector's own split where it has one (a risk incident's
    members: their share of its combined surprise), else each feature's distance from its baseline in
    decades, ``|log10((1 + |value|) / (1 + |baseline|))|``, over the sum of them; a feature without a baseline
    is context and contributes 0.
    """

    name: str
    value: float
    baseline: float | None = None
    contribution: float = 1.0


class Evidence(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What an alert rests on: its features, the ids of its events (at most the engine's ``max_evidence``;
    ``events_total`` counts them all when the list was cut) and, for an incident, the alerts it aggregates."""

    features: list[Feature]
    event_ids: list[str]
    events_total: int | None = None  # set when event_ids was cut: how many events the episode had
    alert_ids: list[str] = msgspec.field(default_factory=list)  # a risk incident's member alerts


class Alert(msgspec.Struct, kw_only=True):
    alert_id: str
    tenant: str
    detector: str
    kind: str
    entity_type: EntityType
    entity: str
    severity: Severity
    score: float
    first_seen: str
    last_seen: str
    title: str
    explanation: str
    evidence: Evidence
    tags: list[str]


def alert_id(detector: str, tenant: str, entity: str, first_event_id: str) -> str:
    """Deterministic: the same input gives the same id (so replays and retries dedupe)."""
    h = hashlib.blake2b(f"{detector}\x1f{tenant}\x1f{entity}\x1f{first_event_id}".encode(), digest_size=12)
    return h.hexdigest()


def severity_of(score: float) -> Severity:
    if score >= 0.9:
        return "critical"
    if score >= 0.75:
        return "high"
    if score >= 0.5:
        return "medium"
    if score >= 0.25:
        return "low"
    return "info"


def plain_number(obj: object) -> int | float | bool | str:
    """``enc_hook`` of the encoders of alerts and their evidence: a number a detector took from a numpy column
    (a numpy scalar, which JSON encoders refuse) as its Python value, so one such value cannot stop the writer.
    Anything else is refused with a ``TypeError`` naming its type."""
    item = getattr(obj, "item", None)
    if callable(item) and type(obj).__module__ == "numpy":
        value = item()
        if isinstance(value, int | float | bool | str):
            return value
    raise TypeError(f"an alert cannot carry a value of type {type(obj).__name__}")


_enc = msgspec.json.Encoder(enc_hook=plain_number)


def encode_alert(a: Alert) -> bytes:
    return _enc.encode(a)
