"""``spyglass``: the command line. Settings are built once here and passed down.

The root parser and the runtime's commands (simulate, replay, ingest, worker, topics, schemas) are here; each
other command group has its module beside it (``db``, ``evaluate``, ``grafana``, ``report``, ``demo``,
``stack``), and the benchmarks theirs in :mod:`streams.bench`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from schemas.errors import SpyglassError
from streams.kafka_security import kafka_client_config
from streams.settings import Settings

EPILOG = "Configuration comes from SPYGLASS_* environment variables; see the README's configuration table."


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from streams.simulator.output import produce_kafka, write_jsonl, write_labels
    from streams.simulator.run import Simulation, parse_start

    err = Console(stderr=True)
    start = parse_start(args.start) if args.start else None
    kwargs = {"start": start} if start else {}
    sim = Simulation(seed=args.seed, events=args.events, days=args.days, instances=args.instances,
                     scenarios=args.scenario or None, world_seed=args.world_seed, **kwargs)
    if not args.kafka and not args.out:
        err.print("[red]give --out PATH (or -) for a JSONL file, or --kafka to produce to the topics[/]")
        return 2
    show = sys.stderr.isatty() and args.out != "-" or args.kafka and sys.stderr.isatty()
    with Progress(TextColumn("[bold]simulate"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, disable=not show) as progress:
        task = progress.add_task("events", total=sim.total)
        if args.kafka:
            stats = produce_kafka(sim, settings.kafka_bootstrap, settings.topics(), rate=args.rate,
                                  client_config=kafka_client_config(settings),
                                  on_sent=lambda _k, n: progress.advance(task, n))
            where = f"Kafka {settings.kafka_bootstrap}"
        else:
            stats = write_jsonl(sim, args.out, on_chunk=lambda n: progress.advance(task, n))
            where = args.out
    if args.world_out:
        from schemas.jsonl import open_out

        with open_out(args.world_out) as f:
            f.write(json.dumps(sim.metadata(), indent=1).encode())
    if args.labels:
        n_labels = write_labels(sim, args.labels)
        err.print(f"labels: {n_labels} attack instances of {len({i.label.scenario for i in sim.injections})} "
                  f"scenarios -> {args.labels}")
    err.print(f"wrote {stats.events:,} events ({stats.bytes / 1e6:.1f} MB) to {where} in {stats.seconds:.2f}s: "
              f"{stats.rate:,.0f} events/s")
    return 0


def _schemas_export(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.publish import export

    for path in export(Path(args.dir) if args.dir else None):
        print(path)
    return 0


def _schemas_check(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.publish import check_jsonl

    bad = total = 0
    name = "<stdin>" if args.file == "-" else args.file
    for _line, errors in check_jsonl(args.file, default_tenant=settings.default_tenant):
        total += 1
        if errors:
            bad += 1
            if bad <= args.max_errors:
                for err in errors:
                    print(f"{name}:{err.line}: {err.field}: {err.reason}", file=sys.stderr)
    if bad > args.max_errors:
        print(f"... and {bad - args.max_errors:,} more invalid lines (--max-errors)", file=sys.stderr)
    print(f"{total - bad:,} valid, {bad:,} invalid of {total:,} lines")
    return 1 if bad else 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.cli.demo import run_demo

    return run_demo(settings, events=args.events, rate=args.rate, seed=args.seed, keep_stack=args.keep_stack,
                    report=Path(args.report) if args.report else None)


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from detectors.engine import Engine
    from schemas.jsonl import open_in, open_out
    from streams.replay import replay

    if args.from_store:  # a backtest of --config against the current configuration (streams.cli.backtest)
        from streams.cli.backtest import run_backtest

        return run_backtest(args, settings)
    if not args.input:
        raise SpyglassError("replay: give --input (or --from-store)")
    from streams.detector_config import load as load_tuning

    err = Console(stderr=True)
    show = sys.stderr.isatty() and args.input != "-"
    engine = Engine(settings.engine_config(), tuning=load_tuning(args.config or settings.detectors_file))
    ocsf: list | None = [] if args.format == "ocsf" else None

    def report(e) -> None:
        if args.verbose_errors:
            err.print(f"{args.input}:{e.line}: {e.field}: {e.reason}", style="yellow", markup=False, highlight=False)

    with open_in(args.input) as src, open_out(args.output) as out, Progress(
            TextColumn("[bold]replay"), BarColumn(), TextColumn("{task.completed:,} events"), console=err,
            disable=not show) as progress:
        task = progress.add_task("replay", total=None)
        stats = replay(src, out if ocsf is None else None, engine, on_batch=lambda n: progress.advance(task, n),
                       on_error=report, collect=ocsf)
        if ocsf is not None:
            from streams.cli.backtest import write_ocsf

            write_ocsf(out, ocsf, engine.tuning)
    for e in stats.errors[: 0 if args.verbose_errors else 20]:
        err.print(f"{args.input}:{e.line}: {e.field}: {e.reason}", style="yellow", markup=False, highlight=False)
    err.print(f"replayed {stats.events:,} events ({stats.invalid:,} invalid lines skipped) in {stats.seconds:.1f}s, "
              f"{stats.rate:,.0f} events/s: {stats.alerts:,} alerts" + (f" -> {args.output}" if args.output != "-"
                                                                      else ""))
    return 1 if args.strict and stats.invalid else 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from streams.ingest import Ingestor
    from streams.sinks.clickhouse import EventsSink, apply_ddl, open_store

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    store = open_store(settings.store())
    apply_ddl(store)
    ingest = Ingestor(settings, EventsSink(store), group_id=args.group)
    total = dead = 0
    try:
        while args.max_events <= 0 or total + dead < args.max_events:
            batch = ingest.poll(timeout_ms=500)
            total += len(batch.events)
            dead += len(batch.dead)
    finally:
        ingest.close()
        store.close()
    print(f"ingested {total:,} events, {dead:,} dead letters")
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker import run_worker

    return run_worker(settings, migrate=not args.no_migrate, loglevel=args.log_level, worker_name=args.name)


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.kafka import ensure_topics

    for name in ensure_topics(settings):
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spyglass",
        description="Spyglass: real-time anomaly detection for AI-integration security "
        "(API keys, data access, agent execution).",
        epilog=EPILOG,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "simulate",
        help="generate labelled, realistic traffic with injected attacks (JSONL file or Kafka)",
        description="Generate realistic traffic for several tenants (seasonal, heavy-tailed, working hours, "
        "normal agent tool sequences) with attack scenarios injected; ground truth goes to a labels file. "
        "Deterministic for a given --seed.",
        epilog=EPILOG,
    )
    s.add_argument("--seed", type=int, default=7, help="random seed; the same seed gives the same run (default 7)")
    s.add_argument("--events", type=int, default=200_000, help="total events, attacks included (default 200000)")
    s.add_argument("--days", type=int, default=7, help="simulated days of event time (default 7)")
    s.add_argument("--start", help="event time of the run's start, RFC 3339 with offset (default "
                   "2026-11-02T00:00:00Z), or relative to the clock: now, now-7d, now-6h")
    s.add_argument("--instances", type=int, default=2, help="instances of each attack scenario (default 2)")
    s.add_argument("--scenario", action="append", help="only this scenario (repeatable); default all")
    s.add_argument("--world-seed", type=int, help="draw a different organisation (size, time zones, habits) and "
                   "attack variants from this seed; without it, the default organisation")
    s.add_argument("--world-out", help="write the run's metadata (seeds, size, the world's traits) here as JSON "
                   "(- for stdout)")
    s.add_argument("--out", help="JSONL output path, or - for stdout")
    s.add_argument("--labels", help="where to write the ground truth (JSONL, one attack instance a line; - for stdout)")
    s.add_argument("--kafka", action="store_true", help="produce to the Kafka topics instead of a file")
    s.add_argument("--rate", type=float, default=0.0, help="with --kafka: target events/s (0 = as fast as possible)")
    s.set_defaults(func=_simulate)

    sc = sub.add_parser("schemas", help="the event contract: export the JSON Schemas, check a JSONL file",
                        description="Work with the published event contract v1.")
    scs = sc.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    e = scs.add_parser("export", help="write the JSON Schema of each event kind (default: schemas/json)",
                       description="Regenerate the published JSON Schemas from the typed contract.")
    e.add_argument("--dir", help="output directory (default: the package's schemas/json)")
    e.set_defaults(func=_schemas_export)
    c = scs.add_parser("check", help="validate every line of a JSONL file against the contract",
                       description="Decode every line with the contract's decoder; report line, field and reason "
                       "of every error of each invalid line (an enum's allowed values too). Exit 1 if any line is "
                       "invalid.")
    c.add_argument("file", help="JSONL file of events, or - for stdin")
    c.add_argument("--max-errors", type=int, default=20,
                   help="print the errors of at most this many lines (default 20)")
    c.set_defaults(func=_schemas_check)

    d = sub.add_parser(
        "demo",
        help="the main job end to end: local Kafka, simulated traffic, consumer, embedded store, live view",
        description="Start the local Kafka broker, stream simulated traffic through it, consume and validate "
        "every event, store them in the ClickHouse store (embedded chDB in SPYGLASS_STACK_DIR by default), with a "
        "live terminal view of what flows; at the end (or on Ctrl-C) a summary and a self-contained HTML report.",
        epilog=EPILOG,
    )
    d.add_argument("--events", type=int, default=60_000, help="events to stream (default 60000)")
    d.add_argument("--rate", type=float, default=20_000, help="target produce rate, events/s (default 20000)")
    d.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    d.add_argument("--keep-stack", action="store_true", help="leave the local Kafka running afterwards")
    d.add_argument("--report", help="where to write the HTML report (default SPYGLASS_STACK_DIR/demo-report.html)")
    d.set_defaults(func=_demo)

    r = sub.add_parser(
        "replay",
        help="run the detection engine offline over a JSONL file of events and write the alerts",
        description="The same engine as the worker, offline and deterministic: events JSONL in, alerts JSONL out "
        "('-' for stdin/stdout). Invalid lines are reported with line number and field, and skipped.",
        epilog=EPILOG,
    )
    r.add_argument("--input", help="events JSONL, or - for stdin")
    r.add_argument("--output", default="-", help="alerts JSONL, or - for stdout (the default)")
    r.add_argument("--verbose-errors", action="store_true", help="report every invalid line (default: first 20)")
    r.add_argument("--strict", action="store_true", help="exit 1 if any line is invalid (they are still skipped)")
    from streams.cli.backtest import add_replay_arguments

    add_replay_arguments(r)
    r.set_defaults(func=_replay)

    i = sub.add_parser(
        "ingest",
        help="consume the event topics, validate, store events in ClickHouse, dead-letter bad records",
        description="Consume the three event topics in a consumer group; store valid events in the store's "
        "events table; send every record that fails decoding to the dead-letter topic with headers naming "
        "source topic, partition, offset and reason; commit offsets only after both are acknowledged.",
        epilog=EPILOG,
    )
    i.add_argument("--group", default="spyglass-ingest", help="consumer group id (default spyglass-ingest)")
    i.add_argument("--max-events", type=int, default=0, help="stop after this many records (default: run forever)")
    i.set_defaults(func=_ingest)

    w = sub.add_parser(
        "worker",
        help="the detection service: score the event topics, publish alerts, store events and alerts",
        description="Start a Faust worker in the consumer group SPYGLASS_WORKER_GROUP. It consumes the three "
        "event topics, scores them with the engine (one per topic partition, state checkpointed to the store), "
        "publishes alerts and dead letters to Kafka, writes events and alerts to the store, and commits offsets "
        "only after all of that is acknowledged. Start more workers to share the partitions. Serves /health and "
        "/metrics on 127.0.0.1:SPYGLASS_WORKER_WEB_PORT; logs JSON lines; stops cleanly on SIGTERM.",
        epilog=EPILOG,
    )
    w.add_argument("--name", default=None, help="worker name in logs, metrics and checkpoints (default host-pid)")
    w.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    w.add_argument("--no-migrate", action="store_true",
                   help="do not create or upgrade the store's tables at start (a schema that lacks a migration "
                   "is refused)")
    w.set_defaults(func=_worker)

    t = sub.add_parser("topics", help="create the event, alerts, dead-letter and risk-evidence topics (idempotent)",
                       description="Create the Kafka topics Spyglass uses, if missing.", epilog=EPILOG)
    ts = t.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    tc = ts.add_parser("create", help="create missing topics with SPYGLASS_TOPIC_PARTITIONS partitions",
                       description="Create the three event topics, the alerts and the dead-letter topic if missing.")
    tc.set_defaults(func=_topics_create)

    from streams.bench import register as register_bench
    from streams.cli.db import register as register_db
    from streams.cli.evaluate import register as register_eval
    from streams.cli.grafana import register as register_grafana
    from streams.cli.report import register as register_report
    from streams.cli.stack import register as register_stack

    register_eval(sub)
    register_report(sub)
    register_bench(sub)
    register_grafana(sub)
    register_db(sub)

    register_stack(sub)

    from streams.cli.produce import register as register_produce

    register_produce(sub)
    from streams.cli.notify import register as register_notify

    register_notify(sub)
    from streams.cli.suppress import register as register_suppress

    register_suppress(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except SpyglassError as exc:
        print(f"spyglass: configuration error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        print(f"spyglass: configuration error: SPYGLASS_{field.upper()}: {first['msg']}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings) or 0)
    except SpyglassError as exc:
        print(f"spyglass: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.filename is None:
            raise
        print(f"spyglass: cannot open {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

