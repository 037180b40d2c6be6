"""One Kafka record -> an event or a dead letter: shared by the worker and ``spyglass ingest``."""

from __future__ import annotations

from schemas.errors import EventError
from schemas.events import Event, decode


def decode_record(value: bytes | None, default_tenant: str, kind: str | None = None) -> Event | EventError:
    """Decode a record's value; ``kind``, when given, is the only event kind its topic carries."""
    if value is None:
        return EventError("$", "empty record (null value)")
    ev = decode(value, default_tenant=default_tenant)
    if isinstance(ev, EventError) or kind is None:
        return ev
    tag = type(ev).__struct_config__.tag
    if tag != kind:
        return EventError("$.kind", f"a {tag} event on the {kind} topic")
    return ev


def dead_letter_headers(topic: str, partition: int, offset: int, err: EventError,
                        stage: str) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: where the record came from and why it was refused."""
    return [("spyglass.source.topic", topic.encode()),
            ("spyglass.source.partition", str(partition).encode()),
            ("spyglass.source.offset", str(offset).encode()),
            ("spyglass.error.field", err.field.encode()),
            ("spyglass.error.reason", err.reason.encode()[:1024]),
            ("spyglass.stage", stage.encode())]
