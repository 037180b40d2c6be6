"""``spyglass stack up|down|status|fetch``: the local Kafka broker and ClickHouse server, no Docker."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from schemas.errors import SpyglassError, StackError
from streams.settings import Settings
from streams.stack.base import ServiceStatus
from streams.stack.manager import Stack

_ALL = ("kafka", "clickhouse", "chdb", "alertmanager")


def register(subparsers: Any) -> None:
    """Add the ``stack`` command and its subcommands to a top-level ``add_subparsers()`` object."""
    stack = subparsers.add_parser(
        "stack",
        help="run the local Kafka broker and ClickHouse server (real processes on 127.0.0.1, no Docker)",
        description=(
            "Manage the local stack: a single-node KRaft Kafka broker (jars cached in SPYGLASS_CACHE_DIR), "
            "a ClickHouse server (Debian's clickhouse-server) and the chDB directory. Data, logs and pids "
            "live in SPYGLASS_STACK_DIR; ports come from the SPYGLASS_KAFKA_* and SPYGLASS_CLICKHOUSE_* settings."
        ),
    )
    sub = stack.add_subparsers(dest="stack_command", metavar="{up,down,status,fetch}", required=True)

    up = sub.add_parser(
        "up",
        help="start the services (reusing ones already running), wait until they answer, and create the topics",
        description=(
            "Download/check what is needed, start Kafka and ClickHouse detached (services already running "
            "from this stack directory are reused), wait until each answers requests, then create the event, "
            "alerts and dead-letter topics."
        ),
    )
    up.add_argument("--fresh", action="store_true", help="stop the services and wipe their data before starting")
    up.add_argument(
        "--secure", action="store_true",
        help="run Kafka with a SASL_SSL listener (a CA made for this stack, SCRAM-SHA-512 users) and ACLs, and "
        "ClickHouse with TLS only and a password; passwords are written to SPYGLASS_STACK_DIR/kafka/secure and "
        "SPYGLASS_STACK_DIR/clickhouse/secure, mode 0600, never printed",
    )
    up.add_argument(
        "--only", choices=("kafka", "clickhouse", "alertmanager"), help="start just this service instead of all of them"
    )
    up.set_defaults(func=cmd_up)

    down = sub.add_parser(
        "down",
        help="stop the services of this stack directory (their data is kept)",
        description="Stop the Kafka broker and the ClickHouse server (SIGTERM, SIGKILL after 20 s); data is kept.",
    )
    down.set_defaults(func=cmd_down)

    status = sub.add_parser(
        "status",
        help="show whether each service runs, its pid, endpoint and version",
        description="Show each service's state, pid, endpoint and details; exit 1 if Kafka or ClickHouse is down.",
    )
    status.set_defaults(func=cmd_status)

    fetch = sub.add_parser(
        "fetch",
        help="only provision: download the Kafka jars into the cache, check the ClickHouse binary, build the "
             "OpenTelemetry Collector",
        description=(
            "Provision without starting anything: resolve the Kafka jars from Maven Central into "
            "SPYGLASS_CACHE_DIR (needs mvn once), check java and the clickhouse-server binary, build the "
            "OpenTelemetry Collector the OTLP tests run into SPYGLASS_CACHE_DIR (needs Go once)."
        ),
    )
    fetch.set_defaults(func=cmd_fetch)


def _table(statuses: Sequence[ServiceStatus], ready: dict[str, float] | None = None) -> Table:
    table = Table(title="spyglass stack", title_justify="left")
    for col in ("service", "state", "pid", "endpoint", "ready (s)", "detail"):
        wraps = col in ("endpoint", "detail")
        table.add_column(
            col,
            justify="right" if col in ("pid", "ready (s)") else "left",
            overflow="fold" if wraps else "ellipsis",
            no_wrap=not wraps,
            min_width=16 if wraps else None,
        )
    for st in statuses:
        state = "[green]running[/]" if st.running else "[red]stopped[/]"
        if st.name == "chdb":
            state = "[green]ready[/]" if st.running else "[yellow]absent[/]"
        secs = f"{ready[st.name]:.1f}" if ready and st.name in ready else "-"
        table.add_row(st.name, state, str(st.pid or "-"), st.endpoint, secs, st.detail)
    return table


def _fail(console: Console, exc: SpyglassError) -> int:
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    return 1


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass stack up``."""
    console, err = Console(), Console(stderr=True)
    services = (args.only,) if getattr(args, "only", None) else _ALL
    fresh = bool(getattr(args, "fresh", False))
    # without --secure a broker keeps the mode it was set up in, unless --fresh wipes it (PLAINTEXT then)
    secure = True if getattr(args, "secure", False) else (False if fresh else None)
    stack = Stack(settings, secure_kafka=secure, secure_clickhouse=secure)
    t0 = time.monotonic()
    try:
        with console.status("starting the local stack ..."):
            ready = stack.up(services, fresh=fresh)
    except StackError as exc:
        return _fail(err, exc)
    console.print(_table(stack.status(services), ready))
    if stack.topics:
        console.print(f"topics: {', '.join(stack.topics)}", highlight=False)
    bootstrap = stack.kafka.bootstrap
    if "kafka" in services and settings.kafka_bootstrap not in (bootstrap, f"localhost:{settings.kafka_port}"):
        console.print(
            f"[yellow]note:[/] SPYGLASS_KAFKA_BOOTSTRAP is {settings.kafka_bootstrap}, "
            f"not the local broker {bootstrap}",
            highlight=False,
        )
    if "kafka" in services and stack.kafka.secure:
        from streams.stack.kafka_secure import EMITTER_USER, WORKER_USER

        console.print("kafka: SASL_SSL with ACLs; connect the worker and the emitters with (no secret here):",
                      highlight=False)
        for user in (WORKER_USER, EMITTER_USER):
            env = " ".join(f"{k}={v}" for k, v in stack.kafka.secure_material.client_env(user).items())
            console.print(f"  {user}: {env}", highlight=False, soft_wrap=True)
    if "clickhouse" in services:
        ch = stack.clickhouse
        if ch.secure:
            env = " ".join(f"{k}={v}" for k, v in ch.client_env().items())
            console.print(f"clickhouse: TLS only; connect as default with (no secret here):\n  {env}",
                          highlight=False, soft_wrap=True)
        console.print(f"clickhouse users: spyglass_writer, spyglass_grafana (database {ch.users_database}); "
                      f"passwords in {ch.credentials_file} unless set by SPYGLASS_CLICKHOUSE_*_PASSWORD",
                      highlight=False)
    console.print(f"up in {time.monotonic() - t0:.1f} s; state in {stack.state_file}", highlight=False)
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass stack down``."""
    console = Console()
    stack = Stack(settings)
    try:
        stopped = stack.down()
    except StackError as exc:
        return _fail(Console(stderr=True), exc)
    console.print(_table(stack.status()))
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}", highlight=False)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass stack status``; exit 1 when a server process is not running."""
    stack = Stack(settings)
    statuses = stack.status()
    Console().print(_table(statuses))
    servers_up = all(st.running for st in statuses if st.name in ("kafka", "clickhouse"))
    return 0 if servers_up else 1


def cmd_fetch(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass stack fetch``: provision only."""
    console = Console()
    stack = Stack(settings)
    try:
        with console.status(f"resolving Kafka {settings.kafka_version} jars ..."):
            t0 = time.monotonic()
            stack.provision(_ALL)
    except StackError as exc:
        return _fail(Console(stderr=True), exc)
    from streams.stack.alertmanager import binary_path
    from streams.stack.clickhouse import find_server_binary

    jars = len(list(stack.kafka.libs_dir.glob("*.jar")))
    console.print(f"kafka: {jars} jars in {stack.kafka.libs_dir} ({time.monotonic() - t0:.1f} s)", highlight=False)
    console.print(f"clickhouse: {' '.join(find_server_binary())}", highlight=False)
    console.print(f"alertmanager: {binary_path(settings)}", highlight=False)
    if stack.chdb.path is not None:
        console.print(f"chdb: {stack.chdb.path}", highlight=False)
    return _fetch_collector(console, settings)


def _fetch_collector(console: Console, settings: Settings) -> int:
    """Build the OpenTelemetry Collector the OTLP tests run (docs/opentelemetry.md), unless it is cached; without
    Go, say so and go on (those tests then skip, saying why)."""
    from streams.stack import otelcol

    if not otelcol.binary_path(settings.cache_dir).exists() and otelcol.go_command() is None:
        console.print("otelcol: not built: Go is not installed (the OpenTelemetry Collector tests will skip)",
                      highlight=False)
        return 0
    try:
        with console.status("building the OpenTelemetry Collector (Go modules from the proxy, about a minute) ..."):
            t0 = time.monotonic()
            path = otelcol.build(settings.cache_dir)
    except StackError as exc:
        return _fail(Console(stderr=True), exc)
    console.print(f"otelcol: {path} ({time.monotonic() - t0:.1f} s)", highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stack`` on its own (``python -m streams.cli.stack up``)."""
    parser = argparse.ArgumentParser(prog="spyglass")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stack", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args, Settings()))


if __name__ == "__main__":
    raise SystemExit(main())
