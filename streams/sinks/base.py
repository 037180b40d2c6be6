"""The store contract: what Spyglass needs from ClickHouse, and the error every store raises.

Two stores implement it (:mod:`streams.sinks.clickhouse`): a ClickHouse server over the native protocol and
chDB in-process, picked by ``SPYGLASS_CLICKHOUSE_URL``. The worker's scorer, the checkpoints, the migrations
and the sinks speak only this, so every SQL statement Spyglass ships runs on both.
"""

from __future__ import annotations

import re
import socket
import struct
from typing import Any, Protocol

from schemas.errors import SpyglassError


class StoreError(SpyglassError):
    """A statement failed on the store; the message names the store (never its password).

    Transient unless it is a :class:`StoreDataError`: the store is away, slow or behind (network, timeout,
    server unavailable, too many parts), and the same statement can succeed later (retry with backoff).
    """

    transient = True

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code  # ClickHouse's error code, when the store gave one


class StoreDataError(StoreError):
    """The store refused the statement's data (a value out of its type's range, a type mismatch, an insert
    spanning too many partitions): retrying the same rows cannot succeed. The writer isolates and quarantines
    the rows instead (dead letters with the reason) and goes on."""

    transient = False


# ClickHouse error codes that mean "these values": parse and conversion errors, type and range errors
DATA_ERROR_CODES = frozenset({
    6,    # CANNOT_PARSE_TEXT
    27,   # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,   # CANNOT_PARSE_DATE
    41,   # CANNOT_PARSE_DATETIME
    53,   # TYPE_MISMATCH
    69,   # ARGUMENT_OUT_OF_BOUND
    70,   # CANNOT_CONVERT_TYPE
    72,   # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
})
TOO_MANY_PARTS = 252  # also raised for an insert spanning too many partitions: that one is the data's
_PARTITIONS_PER_INSERT = re.compile(r"too many partitions for single insert", re.IGNORECASE)
_CODE = re.compile(r"\bCode: (\d+)")
# raised by a client while it serialises values it cannot write (out of the column type's range, wrong type)
_CLIENT_DATA_ERRORS = (struct.error, OverflowError, TypeError, ValueError, UnicodeError)
_NETWORK_ERRORS = (ConnectionError, TimeoutError, socket.timeout, EOFError, OSError)


def classify(exc: BaseException, message: str) -> StoreError:
    """A store error for ``exc`` (from clickhouse-driver or chDB), with ``message``: a :class:`StoreDataError`
    when the data is at fault, else a transient :class:`StoreError`.

    A ClickHouse error is classified by its code (the exception's ``code``, or ``Code: N`` in chDB's message);
    an error raised by the client while it serialises the values is the data's; anything else (network,
    timeout, an unknown error) is transient: retried, never dropped.
    """
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        found = _CODE.search(str(exc))
        code = int(found.group(1)) if found else None
    text = str(exc)
    if code in DATA_ERROR_CODES or (code == TOO_MANY_PARTS and _PARTITIONS_PER_INSERT.search(text)):
        return StoreDataError(message, code)
    if code is None and isinstance(exc, _CLIENT_DATA_ERRORS) and not isinstance(exc, _NETWORK_ERRORS):
        return StoreDataError(message, code)
    return StoreError(message, code)


class Store(Protocol):
    """What Spyglass needs from ClickHouse. Every method raises :class:`StoreError` when the store fails."""

    database: str

    def execute(self, sql: str) -> None: ...

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def insert(self, table: str, columns: dict[str, list[Any]]) -> int:
        """Insert whole columns (same length each) into ``database.table``; returns rows inserted."""

    def close(self) -> None: ...
