"""One Kafka record -> an event or a dead letter: shared by the worker and ``spyglass ingest``.

A dead letter carries the refused record's value whole only while it is within the decode limit
(``MAX_RECORD_BYTES``); of a larger one it carries a prefix of :data:`DEAD_LETTER_PREFIX_BYTES`
and headers with the value's size and SHA-256, so a dead letter always fits the producer's and
the broker's default limits (1 MB), whatever was written to an event topic. Keys are bounded the
same way.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Protocol

from aiokafka import errors as aiokafka_errors
from kafka import errors as kafka_errors

from schemas.errors import EventError
from schemas.events import MAX_RECORD_BYTES
from schemas.events import decode_as as decode_record  # noqa: F401 - the one rule, kept under its old name

# what the producers (aiokafka's, kafka-python's) or the broker raise for a record that cannot be published as it
# is, whatever the broker's state: a problem of that record, not of the worker
RECORD_REFUSED: tuple[type[Exception], ...] = (
    aiokafka_errors.MessageSizeTooLargeError, aiokafka_errors.RecordTooLargeError,
    aiokafka_errors.RecordListTooLargeError, aiokafka_errors.CorruptRecordException,
    kafka_errors.MessageSizeTooLargeError, kafka_errors.RecordListTooLargeError, kafka_errors.CorruptRecordError,
    kafka_errors.InvalidRecordError)



def record_refused(exc: BaseException) -> bool:
    """Whether ``exc`` is one of :data:`RECORD_REFUSED`, or wraps one (Faust's producer raises
    ``ProducerSendError`` from the client's error)."""
    return isinstance(exc, RECORD_REFUSED) or isinstance(exc.__cause__, RECORD_REFUSED)


DEAD_LETTER_PREFIX_BYTES = 4 * 1024  # what a dead letter keeps of an oversized value
DEAD_LETTER_KEY_BYTES = 1024  # what it keeps of a key longer than that


def dead_letter_headers(topic: str, partition: int, offset: int, err: EventError,
                        stage: str) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: where the record came from and why it was refused."""
    return [("spyglass.source.topic", topic.encode()),
            ("spyglass.source.partition", str(partition).encode()),
            ("spyglass.source.offset", str(offset).encode()),
            ("spyglass.error.field", err.field.encode()),
            ("spyglass.error.reason", err.reason.encode()[:1024]),
            ("spyglass.stage", stage.encode())]


class DeadLetter(NamedTuple):
    """A dead letter as published: key, value and headers, all bounded."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, err: EventError,
                stage: str) -> DeadLetter:
    """The dead letter of a refused record: its value whole up to the decode limit, else a prefix plus the
    value's size and SHA-256 (headers ``spyglass.value.size``, ``spyglass.value.sha256``,
    ``spyglass.value.truncated``); the key likewise, cut at :data:`DEAD_LETTER_KEY_BYTES`."""
    headers = dead_letter_headers(topic, partition, offset, err, stage)
    value = value or b""
    if len(value) > MAX_RECORD_BYTES:
        headers += [("spyglass.value.size", str(len(value)).encode()),
                    ("spyglass.value.sha256", hashlib.sha256(value).hexdigest().encode()),
                    ("spyglass.value.truncated", b"true")]
        value = value[:DEAD_LETTER_PREFIX_BYTES]
    if key is not None and len(key) > DEAD_LETTER_KEY_BYTES:
        headers += [("spyglass.key.size", str(len(key)).encode()),
                    ("spyglass.key.sha256", hashlib.sha256(key).hexdigest().encode())]
        key = key[:DEAD_LETTER_KEY_BYTES]
    return DeadLetter(key, value, headers)


def bare_dead_letter(letter: DeadLetter, why: str) -> DeadLetter:
    """The dead letter without its value (headers only, ``why`` added): what is published when even the bounded
    form is refused by the producer or the broker."""
    headers = list(letter.headers)
    if not any(name == "spyglass.value.size" for name, _ in headers):
        headers += [("spyglass.value.size", str(len(letter.value)).encode()),
                    ("spyglass.value.sha256", hashlib.sha256(letter.value).hexdigest().encode())]
    return DeadLetter(letter.key, b"", [*headers, ("spyglass.value.dropped", why.encode()[:1024])])


TP = tuple[str, int]  # a topic partition


class Record(Protocol):
    """One Kafka record as the worker sees it: the record aiokafka parsed, not copied
    (:class:`streams.transport.RawPartitionRecords`). Its topic and partition are the fetch's key."""

    offset: int
    key: bytes | None
    value: bytes | None
