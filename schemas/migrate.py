"""Versioned, idempotent ClickHouse migrations: ``schemas/clickhouse/migrations/NNN_name.sql``.

Each file is one migration of one or more ``;``-separated statements, applied in version order
and recorded in ``{db}.schema_migrations`` (version, name, checksum of the file, applied_at).
Every statement is idempotent on its own (``IF NOT EXISTS`` everywhere; where a server lacks it,
the runner checks first and treats "already exists" as done), so running the migrations twice,
or from two workers at once, ends in the same schema: a version recorded twice is one version
(ReplacingMergeTree, read with argMax).

The same files serve ClickHouse 18.16 (Debian) and current releases (chDB): placeholders are
filled per server from :func:`detect_features`, the column names and types never change, so
every query Spyglass ships runs on both.

- ``{db}``: the database;
- ``{codec_time}``, ``{codec_text}``: a compression codec where the server has codecs, else nothing;
- a header line ``-- requires: FEATURE`` skips a migration on servers without that feature
  (not recorded, so it applies once the server has it).

Retention is not part of the versioned schema (it is configuration): :func:`apply_retention`
sets table TTLs where the server has TTL (>= 19.6), and :func:`prune` drops expired day partitions
on every server (the only way on 18.16).
"""

from __future__ import annotations

import hashlib
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from typing import Any

from schemas.errors import SpyglassError

MIGRATIONS_TABLE = "schema_migrations"
_FILE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_REQUIRES = re.compile(r"^--\s*requires:\s*([a-z_, ]+)$", re.MULTILINE)
_ADD_COLUMN = re.compile(
    r"^ALTER TABLE (?P<table>\S+) ADD COLUMN IF NOT EXISTS (?P<column>\w+)\s", re.IGNORECASE)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# First release with each feature. Conservative where the changelogs are vague: an older server
# then gets the plain form, which is valid everywhere.
FEATURE_SINCE: dict[str, tuple[int, int]] = {
    "ttl": (19, 6),
    "codecs": (20, 1),
    "add_column_if_not_exists": (20, 1),
    "rbac": (20, 4),
}

# (table, time column) of what each retention setting expires.
RETENTION_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (("events", "ts"),),
    "aggregates": (("events_minute", "minute"), ("entity_risk_minute", "minute"), ("pipeline_health", "ts")),
}

_SCHEMA_MIGRATIONS = """CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    version        UInt32,
    name           String,
    checksum       String,
    applied_at     DateTime,
    applied_by     String,
    server_version String
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version"""


class MigrationError(SpyglassError):
    """A migration cannot be applied (or an applied one was edited afterwards)."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        """sha256 of the file as written (placeholders unfilled), so it is the same on every server."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def requires(self) -> frozenset[str]:
        return frozenset(f.strip() for m in _REQUIRES.findall(self.text) for f in m.split(",") if f.strip())

    def statements(self, database: str, features: Iterable[str] = ()) -> list[str]:
        """The statements of this migration for a server with ``features``, placeholders filled."""
        _check_ident(database)
        feats = set(features)
        values = {
            "db": database,
            "codec_time": "CODEC(Delta, ZSTD(1))" if "codecs" in feats else "",
            "codec_text": "CODEC(ZSTD(3))" if "codecs" in feats else "",
        }

        def fill(m: re.Match[str]) -> str:
            if m.group(1) not in values:
                raise MigrationError(f"migration {self.version:03d}_{self.name}: unknown placeholder {m.group(0)}")
            return values[m.group(1)]

        body = "\n".join(line for line in self.text.splitlines() if not line.lstrip().startswith("--"))
        out = []
        for stmt in body.split(";"):
            if stmt.strip():
                sql = _PLACEHOLDER.sub(fill, stmt.strip())
                if "add_column_if_not_exists" not in feats:
                    sql = re.sub(r"ADD COLUMN IF NOT EXISTS", "ADD COLUMN", sql, flags=re.IGNORECASE)
                out.append(sql)
        return out


def load_migrations() -> list[Migration]:
    """Every migration shipped in ``schemas/clickhouse/migrations``, in version order."""
    root = resources.files("schemas").joinpath("clickhouse").joinpath("migrations")
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        m = _FILE.match(entry.name)
        if m is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version:03d}: {found[version].name}, {m.group(2)}")
        found[version] = Migration(version, m.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def server_version(store: Any) -> tuple[int, int]:
    """(major, minor) of the server behind ``store``."""
    raw = str(store.query("SELECT version()")[0][0])
    parts = raw.split(".")
    return int(parts[0]), int(parts[1])


def detect_features(store: Any) -> frozenset[str]:
    """What the server supports of :data:`FEATURE_SINCE`; ``rbac`` only if this user may also manage access.

    chDB (embedded) speaks RBAC SQL but its built-in user may not manage access, so ``rbac``
    is absent there and the roles migration is skipped.
    """
    version = server_version(store)
    feats = {name for name, since in FEATURE_SINCE.items() if version >= since}
    if "rbac" in feats:
        try:
            store.query("SELECT count() FROM system.roles")
        except Exception:  # noqa: BLE001 - no access management for this user: no roles
            feats.discard("rbac")
    return frozenset(feats)


@dataclass
class MigrationReport:
    """What :func:`migrate` did."""

    database: str
    server: str
    features: frozenset[str]
    applied: list[Migration] = field(default_factory=list)
    already: list[Migration] = field(default_factory=list)
    skipped: list[tuple[Migration, str]] = field(default_factory=list)
    ttl_changes: list[str] = field(default_factory=list)

    @property
    def versions_applied(self) -> list[int]:
        return [m.version for m in self.applied]


def migrate(
    store: Any,
    *,
    retention: dict[str, int] | None = None,
    target: int | None = None,
    applied_by: str | None = None,
    migrations: Sequence[Migration] | None = None,
) -> MigrationReport:
    """Apply every pending migration (up to ``target``) to ``store``'s database; safe to repeat and to race.

    ``retention``: days per :data:`RETENTION_TABLES` key (``{"events": 30, "aggregates": 180}``);
    when given, table TTLs are set to it where the server has TTL.
    """
    db = store.database
    _check_ident(db)
    try:  # a current schema needs no DDL at all, so a worker without DDL rights may call this
        recorded = applied_versions(store)
    except Exception:  # noqa: BLE001 - no database or no schema_migrations yet: bootstrap them
        store.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        _execute_idempotent(store, _SCHEMA_MIGRATIONS.replace("{db}", db), frozenset())
        recorded = applied_versions(store)
    features = detect_features(store)
    server = str(store.query("SELECT version()")[0][0])
    report = MigrationReport(database=db, server=server, features=features)
    who = applied_by or f"{socket.gethostname()}"
    for m in load_migrations() if migrations is None else migrations:
        if target is not None and m.version > target:
            break
        if m.version in recorded:
            if recorded[m.version][1] != m.checksum:
                raise MigrationError(
                    f"migration {m.version:03d}_{m.name} was applied with checksum {recorded[m.version][1][:12]} "
                    f"but the file now has {m.checksum[:12]}: applied migrations must not be edited; "
                    f"add a new migration instead")
            report.already.append(m)
            continue
        missing = m.requires - features
        if missing:
            report.skipped.append((m, f"server {server} lacks {', '.join(sorted(missing))}"))
            continue
        for stmt in m.statements(db, features):
            _execute_idempotent(store, stmt, features)
        store.insert(MIGRATIONS_TABLE, {
            "version": [m.version], "name": [m.name], "checksum": [m.checksum],
            "applied_at": [datetime.now(UTC).replace(microsecond=0)], "applied_by": [who],
            "server_version": [server],
        })
        report.applied.append(m)
    if retention and "ttl" in features:
        report.ttl_changes = apply_retention(store, retention)
    return report


def pending(store: Any) -> list[Migration]:
    """Migrations this server could take that ``store``'s database has not recorded (all, if none is)."""
    recorded = recorded_versions(store)
    features = detect_features(store)
    return [m for m in load_migrations() if m.version not in recorded and not m.requires - features]


def recorded_versions(store: Any) -> dict[int, tuple[str, str, str]]:
    """:func:`applied_versions`, or nothing while the database has no ``schema_migrations`` table."""
    db = store.database
    _check_ident(db)
    exists = store.query(f"SELECT count() FROM system.tables WHERE database = '{db}' "  # noqa: S608
                         f"AND name = '{MIGRATIONS_TABLE}'")[0][0]
    return applied_versions(store) if exists else {}


def applied_versions(store: Any) -> dict[int, tuple[str, str, str]]:
    """version -> (name, checksum, applied_at) of the recorded migrations (the latest record of each)."""
    db = store.database
    rows = store.query(
        f"SELECT version, argMax(name, applied_at), argMax(checksum, applied_at), toString(max(applied_at)) "  # noqa: S608
        f"FROM {db}.{MIGRATIONS_TABLE} GROUP BY version ORDER BY version")
    return {int(v): (str(n), str(c), str(t)) for v, n, c, t in rows}


def _already_exists(exc: Exception) -> bool:
    text = str(exc)
    # 57 TABLE_ALREADY_EXISTS, 44 ILLEGAL_COLUMN (18.16's duplicate column), 15 DUPLICATE_COLUMN
    return "already exists" in text or re.search(r"Code: (57|44|15)\b", text) is not None


def _execute_idempotent(store: Any, sql: str, features: frozenset[str]) -> None:
    """Run one DDL statement so that running it again (or concurrently) is a no-op."""
    add = _ADD_COLUMN.match(sql)
    if add is None and "add_column_if_not_exists" not in features:
        add = re.match(r"^ALTER TABLE (?P<table>\S+) ADD COLUMN (?P<column>\w+)\s", sql, re.IGNORECASE)
    if add is not None:
        db, _, table = add.group("table").rpartition(".")
        if _column_exists(store, db or store.database, table, add.group("column")):
            return
    try:
        store.execute(sql)
    except Exception as exc:
        guarded = add is not None or re.search(r"\bIF NOT EXISTS\b", sql, re.IGNORECASE) is not None
        if guarded and _already_exists(exc):
            return  # another process created it between our check and our statement
        raise


def _column_exists(store: Any, database: str, table: str, column: str) -> bool:
    for name in (database, table, column):
        _check_ident(name)
    return bool(store.query(
        f"SELECT count() FROM system.columns WHERE database = '{database}' AND table = '{table}' "  # noqa: S608
        f"AND name = '{column}'")[0][0])


def apply_retention(store: Any, retention: dict[str, int]) -> list[str]:
    """Set each retention table's TTL to ``time column + N days`` where it differs; return what changed.

    Only on servers with TTL (>= 19.6); on older ones use :func:`prune`.
    """
    db = store.database
    changed = []
    for key, days in retention.items():
        if int(days) < 1:
            raise MigrationError(f"retention of {key} must be at least 1 day, got {days}")
        for table, column in RETENTION_TABLES[key]:
            rows = store.query(
                f"SELECT engine_full FROM system.tables WHERE database = '{db}' AND name = '{table}'")  # noqa: S608
            if not rows:
                continue
            want = f"TTL {column} + toIntervalDay({int(days)})"
            if want in str(rows[0][0]):
                continue
            store.execute(f"ALTER TABLE {db}.{table} MODIFY TTL {column} + INTERVAL {int(days)} DAY")
            changed.append(f"{table}: {want}")
    return changed


@dataclass(frozen=True)
class Dropped:
    """One day partition :func:`prune` dropped."""

    table: str
    partition: str


def prune(store: Any, retention: dict[str, int], *, today: date | None = None, dry_run: bool = False) -> list[Dropped]:
    """Drop the day partitions (``toYYYYMMDD``) whose every row is older than its retention.

    A partition of day D holds rows up to the end of D, so it goes once ``D < today - days``
    (UTC). Works on every server; on 18.16, which has no TTL, it is how retention happens
    (run ``spyglass db prune`` daily from cron or a systemd timer). Dropping a partition
    that is already gone is a no-op, so two prunes may race.
    """
    db = store.database
    today = today or datetime.now(UTC).date()
    dropped = []
    for key, days in retention.items():
        if int(days) < 1:
            raise MigrationError(f"retention of {key} must be at least 1 day, got {days}")
        cutoff = int((today - timedelta(days=int(days))).strftime("%Y%m%d"))
        for table, _column in RETENTION_TABLES[key]:
            rows = store.query(
                f"SELECT DISTINCT partition FROM system.parts WHERE database = '{db}' AND table = '{table}' "  # noqa: S608
                f"AND active ORDER BY partition")
            for (part,) in rows:
                text = str(part).strip("'")
                if text.isdigit() and len(text) == 8 and int(text) < cutoff:
                    if not dry_run:
                        store.execute(f"ALTER TABLE {db}.{table} DROP PARTITION {int(text)}")
                    dropped.append(Dropped(table, text))
    return dropped


def _check_ident(name: str) -> None:
    if not _IDENT.match(name):
        raise MigrationError(f"not a valid ClickHouse identifier: {name!r}")
