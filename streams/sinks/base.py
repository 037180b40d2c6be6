"""The store contract: what Spyglass needs from ClickHouse, and the error every store raises.

Two stores implement it (:mod:`streams.sinks.clickhouse`): a ClickHouse server over the native protocol and
chDB in-process, picked by ``SPYGLASS_CLICKHOUSE_URL``. The worker's scorer, the checkpoints, the migrations
and the sinks speak only this, so every SQL statement Spyglass ships runs on both.
"""

from __future__ import annotations

from typing import Any, Protocol

from schemas.errors import SpyglassError


class StoreError(SpyglassError):
    """A statement failed on the store; the message names the store (never its password)."""


class Store(Protocol):
    """What Spyglass needs from ClickHouse. Every method raises :class:`StoreError` when the store fails."""

    database: str

    def execute(self, sql: str) -> None: ...

    def query(self, sql: str) -> list[tuple[Any, ...]]: ...

    def insert(self, table: str, columns: dict[str, list[Any]]) -> int:
        """Insert whole columns (same length each) into ``database.table``; returns rows inserted."""

    def close(self) -> None: ...
