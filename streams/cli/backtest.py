"""``spyglass replay --config NEW --from-store --since 7d``: backtest a detector configuration on stored events;
and the ``--format ocsf`` output of ``replay``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO

from detectors.tuning import Tuning
from schemas.alerts import Alert
from schemas.errors import SpyglassError
from streams.settings import Settings


def add_replay_arguments(r: argparse.ArgumentParser) -> None:
    """The options ``replay`` gets for detector configurations, backtests and OCSF output."""
    r.add_argument("--config", help="detector configuration to run (YAML; default SPYGLASS_DETECTORS_FILE); with "
                   "--from-store, the new configuration compared with SPYGLASS_DETECTORS_FILE")
    r.add_argument("--from-store", action="store_true", help="read the events back from the store's events table "
                   "(SPYGLASS_CLICKHOUSE_URL) and print, per detector and tenant, the alerts --config adds and "
                   "removes compared with the current configuration")
    r.add_argument("--since", default="7d", help="with --from-store: a span back from the newest stored event "
                   "(12h, 7d, 2w) or an ISO 8601 time (default 7d)")
    r.add_argument("--format", choices=("json", "ocsf"), default="json", help="alerts as the alert contract "
                   "(json) or as OCSF 1.7.0 Detection Findings (ocsf); with --from-store, the new configuration's "
                   "alerts go to --output in this format")


def write_ocsf(out: IO[bytes], alerts: list[Alert], tuning: Tuning) -> None:
    """Alerts as OCSF Detection Findings, one a line (shadow alerts say so)."""
    from schemas.ocsf import detection_finding

    for a in alerts:
        mode = tuning.mode(a.detector, a.tenant)
        out.write(json.dumps(detection_finding(a, mode=mode)).encode() + b"\n")


def run_backtest(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass replay --from-store``."""
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from schemas.alerts import encode_alert
    from schemas.jsonl import open_out
    from streams.backtest import backtest, newest_event_s, stored_events
    from streams.cli.alerts import since_epoch
    from streams.detector_config import load as load_tuning
    from streams.sinks.clickhouse import open_store

    if not args.config:
        raise SpyglassError("replay --from-store: give --config NEW (the configuration to compare with "
                            f"{settings.detectors_file})")
    current, new = load_tuning(settings.detectors_file), load_tuning(Path(args.config))
    store = open_store(settings.store())
    keep: list[Alert] | None = [] if args.output else None
    try:
        newest = newest_event_s(store)
        if newest is None:
            raise SpyglassError(f"replay --from-store: no events in {store.database}.events")
        span = args.since
        if span[-1:] in "smhdw" and span[:-1].isdigit():
            from datetime import UTC, datetime

            since = since_epoch(span, datetime.fromtimestamp(newest, UTC))  # back from the newest event
        else:
            since = since_epoch(span)
        rows, n = backtest(stored_events(store, since, newest), settings.engine_config(), current, new,
                           new_alerts=keep)
    finally:
        store.close()
    table = Table(title=f"{n:,} stored events replayed: {args.config} against {settings.detectors_file} "
                  "(alerts above info that reach on-call)", title_justify="left")
    for col in ("detector", "tenant", "current", "new", "added", "removed", "shadow now", "shadow new"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.detector, r.tenant, str(r.current), str(r.new), f"+{len(r.added)}", f"-{len(r.removed)}",
                      str(r.shadow_current), str(r.shadow_new))
    Console(width=160).print(table)
    added, removed = sum(len(r.added) for r in rows), sum(len(r.removed) for r in rows)
    print(f"total: +{added} -{removed} alert(s)")
    if keep is not None:
        with open_out(args.output) as out:
            if args.format == "ocsf":
                write_ocsf(out, keep, new)
            else:
                out.write(b"".join(encode_alert(a) + b"\n" for a in keep))
        print(f"the new configuration's {len(keep):,} alert(s) -> {args.output}", file=sys.stderr)
    return 0
