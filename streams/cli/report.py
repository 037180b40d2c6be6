"""``spyglass report``: governance findings (not alerts) from the engine run offline over events."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from streams.settings import Settings


def _scopes(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from detectors.engine import Engine
    from schemas.jsonl import open_in
    from streams.replay import replay

    err = Console(stderr=True)
    engine = Engine(settings.engine_config())
    with open_in(args.input) as src:
        stats = replay(src, None, engine)
    for e in stats.errors[:20]:
        err.print(f"{args.input}:{e.line}: {e.field}: {e.reason}", style="yellow", markup=False, highlight=False)
    rows = engine.unused_scopes()
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    if fmt == "json":
        enc = msgspec.json.Encoder()
        sys.stdout.buffer.write(b"".join(enc.encode(r) + b"\n" for r in rows))
        sys.stdout.flush()
    else:
        t = Table("tenant", "API key", "unused scopes", "used / granted", "requests", "first seen", "last seen",
                  title="API keys granted scopes they never used")
        for r in rows:
            t.add_row(r.tenant, r.api_key_id, ", ".join(r.unused), f"{r.used_count} / {r.granted_count}",
                      f"{r.requests:,}", r.first_seen[:16].replace("T", " "), r.last_seen[:16].replace("T", " "))
        Console(width=max(Console().width, 140)).print(t)
    granted = engine.tables.scopes.get("granted")
    keys = 0 if granted is None else len(set((granted >> 31).tolist()))
    err.print(f"{stats.events:,} events ({stats.invalid:,} invalid lines skipped): {len(rows):,} of {keys:,} keys "
              f"with granted scopes hold {sum(len(r.unused) for r in rows):,} scopes they never used")
    return 0


def register(subparsers: Any) -> None:
    r = subparsers.add_parser("report", help="governance findings from events (not alerts)",
                              description="Governance findings: standing facts an owner should act on, computed "
                              "by the detection engine over an events file.")
    sub = r.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    s = sub.add_parser("scopes", help="API keys granted scopes they never used over the observed period",
                       description="Replay events through the engine and list every (tenant, API key) with scopes "
                       "granted (scopes_granted) but never used (scope_used of an authenticated request), with "
                       "granted and used counts and first/last seen. A table on a terminal, JSON lines otherwise.")
    s.add_argument("--input", required=True, help="events JSONL, or - for stdin")
    s.add_argument("--format", choices=["table", "json"], default=None,
                   help="table or json (JSON lines); default table on a terminal, json otherwise")
    s.set_defaults(func=_scopes)
