"""ClickHouse as the store: the server over the native protocol, or chDB in-process.

``SPYGLASS_CLICKHOUSE_URL`` picks the implementation (``clickhouse://`` or ``chdb://``);
both implement the store contract (:class:`streams.sinks.base.Store`), and every SQL statement
Spyglass ships must run on both (ClickHouse 18.16 and a current release).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from schemas.errors import ConfigError
from schemas.rows import Packed
from streams.settings import StoreURL
from streams.sinks.base import Store, StoreError, classify

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NativeStore:
    """ClickHouse server over the native protocol (clickhouse-driver), columnar inserts."""

    def __init__(self, url: StoreURL, *, connect_timeout: float = 5.0, send_receive_timeout: float = 60.0) -> None:
        from streams.sinks.native import PackedClient

        self.url = url
        self.database = url.database
        self._client = PackedClient(
            **url.driver_options(),  # address, user, password and TLS (clickhouses://)
            # no database at connect: a user restricted to its own (allow_databases) is refused "default"
            database="", connect_timeout=connect_timeout, send_receive_timeout=send_receive_timeout,
            client_name="spyglass",
        )

    def execute(self, sql: str) -> None:
        try:
            self._client.execute(sql)
        except Exception as exc:
            raise StoreError(f"{self.url}: {exc}") from None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return [tuple(r) for r in self._client.execute(sql)]
        except Exception as exc:
            raise StoreError(f"{self.url}: {exc}") from None

    def insert(self, table: str, columns: dict[str, list[Any]]) -> int:
        _check_ident(table)
        names = list(columns)
        data = [columns[n] for n in names]
        n = len(data[0]) if data else 0
        if n == 0:
            return 0
        try:
            self._client.execute(
                f"INSERT INTO {self.database}.{table} ({', '.join(names)}) VALUES", data, columnar=True
            )
        except Exception as exc:
            raise classify(exc, f"{self.url}: insert into {table}: {exc}") from None
        return n

    def insert_packed(self, table: str, packed: Packed) -> int:
        """Insert whole columns already in the Native wire form (:func:`schemas.rows.block_packed`) as they
        are; the server's column types must be the packed ones. Returns rows inserted."""
        _check_ident(table)
        if packed.rows == 0:
            return 0
        names = ", ".join(name for name, _, _ in packed.columns)
        for name, _, _ in packed.columns:
            _check_ident(name)
        try:
            self._client.execute(f"INSERT INTO {self.database}.{table} ({names}) VALUES", packed)
        except Exception as exc:
            raise classify(exc, f"{self.url}: insert into {table}: {exc}") from None
        return packed.rows

    def version(self) -> str:
        return str(self.query("SELECT version()")[0][0])

    def close(self) -> None:
        self._client.disconnect()


class ChdbStore:
    """The embedded engine (chDB): current ClickHouse SQL in-process, data in a directory."""

    def __init__(self, url: StoreURL, *, database: str = "spyglass") -> None:
        from chdb import session

        assert url.path is not None
        url.path.mkdir(parents=True, exist_ok=True)
        self.url = url
        self.database = database
        self._session = session.Session(str(url.path))
        self.execute(f"CREATE DATABASE IF NOT EXISTS {database}")

    def execute(self, sql: str) -> None:
        try:
            self._session.query(sql)
        except Exception as exc:
            raise StoreError(f"{self.url}: {exc}") from None

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        import msgspec

        try:
            res = self._session.query(sql, "JSONCompact")
        except Exception as exc:
            raise StoreError(f"{self.url}: {exc}") from None
        raw = res.bytes() if hasattr(res, "bytes") else bytes(res)
        if not raw.strip():
            return []
        return [tuple(r) for r in msgspec.json.decode(raw)["data"]]

    def insert(self, table: str, columns: dict[str, list[Any]]) -> int:
        _check_ident(table)
        names = list(columns)
        n = len(columns[names[0]]) if names else 0
        if n == 0:
            return 0
        import msgspec

        arrays = [k for k, v in columns.items() if v and isinstance(v[0], list | tuple)]
        if not all(isinstance(x, str) for k in arrays for row in columns[k] for x in row):
            return self._insert_json(table, names, columns, n)
        # chDB's Python() table function reads a dict of lists from this frame, column by column.
        # It takes no datetime objects (they go as epoch seconds, cast by the INSERT), no bytes and no
        # arrays (string arrays go as JSON text, parsed back by the SELECT).
        enc = msgspec.json.Encoder()
        spyglass_batch = {  # noqa: F841 - read by chDB by name
            k: [int(x.timestamp()) for x in v] if v and isinstance(v[0], datetime)
            else [x.decode("utf-8") for x in v] if v and isinstance(v[0], bytes)
            else [enc.encode(x).decode("utf-8") for x in v] if k in arrays else list(v)
            for k, v in columns.items()
        }
        cols = ", ".join(names)
        select = ", ".join(f"JSONExtract({k}, 'Array(String)') AS {k}" if k in arrays else k for k in names)
        try:
            self._session.query(  # identifiers checked by _check_ident
                f"INSERT INTO {self.database}.{table} ({cols}) SELECT {select} FROM Python(spyglass_batch)"  # noqa: S608
            )
        except Exception as exc:
            raise classify(exc, f"{self.url}: insert into {table}: {exc}") from None
        return n

    def _insert_json(self, table: str, names: list[str], columns: dict[str, list[Any]], n: int) -> int:
        """Rows as JSONEachRow: the Python() table function takes no array columns."""
        import msgspec

        def cell(v: Any) -> Any:
            if isinstance(v, datetime):
                return int(v.timestamp())
            if isinstance(v, float) and v != v:
                return "nan"  # JSON has no NaN; ClickHouse reads the quoted form
            if isinstance(v, bytes):
                return v.decode("utf-8")  # a String column's text (msgspec would write bytes as base64)
            if isinstance(v, list | tuple):
                return [cell(x) for x in v]
            return v

        enc = msgspec.json.Encoder()
        body = b"\n".join(enc.encode({k: cell(columns[k][i]) for k in names}) for i in range(n))
        try:
            self._session.query(f"INSERT INTO {self.database}.{table} ({', '.join(names)}) FORMAT JSONEachRow\n"
                                + body.decode("utf-8"))
        except Exception as exc:
            raise classify(exc, f"{self.url}: insert into {table}: {exc}") from None
        return n

    def version(self) -> str:
        return str(self.query("SELECT version()")[0][0])

    def close(self) -> None:
        self._session.close()


def open_store(url: StoreURL) -> NativeStore | ChdbStore:
    """The store the URL names."""
    if url.scheme == "chdb":
        return ChdbStore(url)
    if url.scheme == "clickhouse":
        return NativeStore(url)
    raise ConfigError(f"SPYGLASS_CLICKHOUSE_URL: unsupported scheme {url.scheme!r}")


def ddl_statements(database: str, features: frozenset[str] | tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(migration file name, statement) of every migration in ``schemas/clickhouse/migrations``, in order.

    ``features`` (see :func:`schemas.migrate.detect_features`) picks the server's form; none gives the
    plain form that runs on ClickHouse 18.16.
    """
    from schemas.migrate import load_migrations

    _check_ident(database)
    return [(f"{m.version:03d}_{m.name}.sql", stmt)
            for m in load_migrations() for stmt in m.statements(database, features)]


def apply_ddl(store: Store, retention: dict[str, int] | None = None) -> int:
    """Create the database and apply every pending migration (idempotent, safe to race); return how many ran.

    The migration runner (:func:`schemas.migrate.migrate`) records versions in ``schema_migrations``.
    """
    from schemas.migrate import migrate

    return len(migrate(store, retention=retention).applied)


def sql_string(s: str) -> str:
    """A ClickHouse string literal (for values we configured: topic names, group ids, database names)."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _check_ident(name: str) -> None:
    if not _IDENT.match(name):
        raise StoreError(f"not a valid ClickHouse identifier: {name!r}")


class EventsSink:
    """Writes decoded events to the ``events`` audit table, one columnar insert per batch."""

    name = "clickhouse.events"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rows_written = 0

    def write(self, batch: list[tuple[Any, bytes]]) -> None:
        """``batch``: (decoded event, its raw JSON) pairs; stored unscored (score 0)."""
        if not batch:
            return
        from schemas.rows import event_columns

        cols = event_columns([ev for ev, _ in batch], [raw for _, raw in batch], [0.0] * len(batch),
                             datetime.now(UTC))
        self.rows_written += self.store.insert("events", cols)

    def flush(self) -> None:
        """Inserts are synchronous: nothing is buffered here."""

    def close(self) -> None:
        self.store.close()
