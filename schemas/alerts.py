"""The alert contract: the same JSON in replay output, the alerts topic and ClickHouse."""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

Severity = Literal["info", "low", "medium", "high", "critical"]
EntityType = Literal["api_key", "principal", "agent", "client_ip", "dataset"]
SEVERITIES = ("info", "low", "medium", "high", "critical")


class Feature(msgspec.Struct, kw_only=True):
    name: str
    value: float
    baseline: float | None = None
    contribution: float = 1.0


class Evidence(msgspec.Struct, kw_only=True):
    features: list[Feature]
    event_ids: list[str]


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


_enc = msgspec.json.Encoder()


def encode_alert(a: Alert) -> bytes:
    return _enc.encode(a)
