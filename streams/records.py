"""One Kafka record -> an event or a dead letter: shared by the worker and ``spyglass ingest``."""

from __future__ import annotations

from typing import Protocol

from schemas.errors import EventError
from schemas.events import decode_as as decode_record  # noqa: F401 - the one rule, kept under its old name


def dead_letter_headers(topic: str, partition: int, offset: int, err: EventError,
                        stage: str) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: where the record came from and why it was refused."""
    return [("spyglass.source.topic", topic.encode()),
            ("spyglass.source.partition", str(partition).encode()),
            ("spyglass.source.offset", str(offset).encode()),
            ("spyglass.error.field", err.field.encode()),
            ("spyglass.error.reason", err.reason.encode()[:1024]),
            ("spyglass.stage", stage.encode())]


TP = tuple[str, int]  # a topic partition


class Record(Protocol):
    """One Kafka record as the worker sees it: the record aiokafka parsed, not copied
    (:class:`streams.transport.RawPartitionRecords`). Its topic and partition are the fetch's key."""

    offset: int
    key: bytes | None
    value: bytes | None
