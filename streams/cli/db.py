"""``spyglass db migrate|status|prune|users``: the ClickHouse schema (``alerts``: :mod:`streams.cli.alerts`)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas.errors import SpyglassError
from streams.settings import Settings


def register(subparsers: Any) -> None:
    """Add the ``db`` and ``alerts`` commands to a top-level ``add_subparsers()`` object."""
    db = subparsers.add_parser(
        "db",
        help="the ClickHouse schema: apply migrations, show their state, prune expired partitions",
        description="Manage the schema of the store SPYGLASS_CLICKHOUSE_URL names (server or chDB). Migrations "
        "are versioned and idempotent: safe to run twice and from two processes at once.",
    )
    sub = db.add_subparsers(dest="db_command", metavar="{migrate,status,prune,users}", required=True)
    m = sub.add_parser(
        "migrate",
        help="apply pending migrations and set retention TTLs (where the server has TTL)",
        description="Create the database, apply every pending migration in schemas/clickhouse/migrations, "
        "record it in schema_migrations, and set table TTLs from SPYGLASS_RETENTION_EVENTS_DAYS and "
        "SPYGLASS_RETENTION_AGGREGATES_DAYS on servers with TTL (ClickHouse >= 19.6; on 18.16 run `db prune`). "
        "Run it as a user that may create tables (not the worker's writer user).",
    )
    m.add_argument("--target", type=int, help="stop after this migration version (default: all)")
    m.set_defaults(func=cmd_migrate)
    s = sub.add_parser("status", help="show the server, its features and each migration's state",
                       description="Show the server version, the features the migrations use, and for each "
                       "migration whether it is applied (when, checksum match), pending or needs a feature.")
    s.set_defaults(func=cmd_status)
    p = sub.add_parser(
        "prune",
        help="drop day partitions older than the retention settings (how retention works on 18.16)",
        description="Drop the day partitions of events (SPYGLASS_RETENTION_EVENTS_DAYS) and of the aggregates "
        "and pipeline health (SPYGLASS_RETENTION_AGGREGATES_DAYS) whose every row is past retention. "
        "ClickHouse 18.16 has no TTL: run this daily (cron, systemd timer). Harmless where TTL exists.",
    )
    p.add_argument("--dry-run", action="store_true", help="only list what would be dropped")
    p.set_defaults(func=cmd_prune)
    u = sub.add_parser(
        "users",
        help="create the worker and grafana users with their roles (servers with SQL access control)",
        description="On a server with SQL access control (ClickHouse >= 20.4), after `db migrate` created the "
        "roles: create or update the users worker (role spyglass_writer) and grafana (role spyglass_grafana), "
        "with the passwords in SPYGLASS_CLICKHOUSE_WRITER_PASSWORD and SPYGLASS_CLICKHOUSE_GRAFANA_PASSWORD "
        "(never an argument; only their sha256 hashes reach the server). Run it as an administrator. "
        "ClickHouse 18.16 has no SQL users: there `spyglass stack up` writes them into users.d.",
    )
    u.set_defaults(func=cmd_users)

    from streams.cli.alerts import register as register_alerts

    register_alerts(subparsers)


def _open(settings: Settings) -> Any:
    from streams.sinks.clickhouse import open_store

    return open_store(settings.store())


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass db migrate``."""
    from schemas.migrate import migrate

    store = _open(settings)
    try:
        rep = migrate(store, retention=settings.retention(), target=args.target)
    finally:
        store.close()
    out = Console()
    out.print(f"{rep.database} on ClickHouse {rep.server} (features: {', '.join(sorted(rep.features)) or 'none'})",
              highlight=False)
    for mig in rep.applied:
        out.print(f"  applied  {mig.version:03d}_{mig.name}", highlight=False)
    for mig, why in rep.skipped:
        out.print(f"  [yellow]skipped[/]  {mig.version:03d}_{mig.name}: {why}", highlight=False)
    for change in rep.ttl_changes:
        out.print(f"  ttl      {change}", highlight=False)
    if "ttl" not in rep.features:
        out.print("  retention: this server has no TTL; run `spyglass db prune` daily", highlight=False)
    out.print(f"{len(rep.applied)} applied, {len(rep.already)} already applied, {len(rep.skipped)} skipped",
              highlight=False)
    return 0


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass db users``."""
    from schemas.migrate import detect_features
    from schemas.users import GRAFANA, RBAC_USERS, WRITER, password_sha256, rbac_user_statements

    passwords = {WRITER: settings.clickhouse_writer_password, GRAFANA: settings.clickhouse_grafana_password}
    missing = [f"SPYGLASS_CLICKHOUSE_{role.removeprefix('spyglass_').upper()}_PASSWORD"
               for role, pw in passwords.items() if pw is None or not pw.get_secret_value()]
    if missing:
        raise SpyglassError(f"db users: set {' and '.join(missing)} (a password is never taken as an argument)")
    plain = {role: pw.get_secret_value() for role, pw in passwords.items() if pw is not None}
    store = _open(settings)
    try:
        if "rbac" not in detect_features(store):
            raise SpyglassError(
                f"db users: {store.database} on this server has no SQL access control this user may manage "
                "(ClickHouse < 20.4, chDB, or not an administrator); on 18.16 `spyglass stack up` writes the "
                "users into users.d (schemas/users.py)")
        hashes = [password_sha256(pw) for pw in plain.values()]
        for sql in rbac_user_statements(store.database, plain):
            try:
                store.execute(sql)
            except SpyglassError as exc:
                text = str(exc)
                for h in hashes:  # the error may quote the statement: never print a hash
                    text = text.replace(h, "<sha256>")
                raise SpyglassError(f"db users: {text}") from None
    finally:
        store.close()
    Console().print(", ".join(f"{user} (role {role})" for user, role in RBAC_USERS.items())
                    + f": created or updated, default database {store.database}")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass db status``; exit 1 when migrations are pending or an applied one was edited."""
    from schemas.migrate import detect_features, load_migrations, recorded_versions

    store = _open(settings)
    try:
        server = str(store.query("SELECT version()")[0][0])
        feats = detect_features(store)
        recorded = recorded_versions(store)
    finally:
        store.close()
    table = Table(title=f"{store.database} on ClickHouse {server} (features: {', '.join(sorted(feats)) or 'none'})",
                  title_justify="left")
    for col in ("version", "name", "state", "applied at"):
        table.add_column(col)
    bad = 0
    for mig in load_migrations():
        rec = recorded.get(mig.version)
        if rec is None:
            missing = mig.requires - feats
            state = f"[yellow]needs {', '.join(sorted(missing))}[/]" if missing else "[red]pending[/]"
            bad += not missing
        elif rec[1] != mig.checksum:
            state, bad = "[red]applied, file edited since[/]", bad + 1
        else:
            state = "[green]applied[/]"
        table.add_row(f"{mig.version:03d}", mig.name, state, rec[2] if rec else "-")
    Console().print(table)
    return 1 if bad else 0


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass db prune``."""
    from schemas.migrate import prune

    store = _open(settings)
    try:
        dropped = prune(store, settings.retention(), dry_run=args.dry_run)
    finally:
        store.close()
    verb = "would drop" if args.dry_run else "dropped"
    for d in dropped:
        print(f"{verb} {store.database}.{d.table} partition {d.partition}")
    print(f"{verb} {len(dropped)} partition(s)")
    return 0
