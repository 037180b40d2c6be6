"""``spyglass bench decode``: Kafka record values into the engine's columns and the ``events`` rows, with the
native decoder (schemas/native) beside the msgspec fallback, on the same records in the same run."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from streams.bench import add_traffic_args


def _records(n: int, seed: int) -> dict[str, list[bytes]]:
    import msgspec

    from streams.simulator.run import Simulation

    enc = msgspec.json.Encoder()
    by: dict[str, list[bytes]] = {}
    for chunk in Simulation(seed=seed, events=n, days=max(1, min(7, n // 25_000))).chunks():
        for r in chunk.rows:
            by.setdefault(r["kind"], []).append(enc.encode(r))
    return by


def _path(values: list[bytes], kind: str, batch: int, native: bool) -> tuple[float, float]:
    """Seconds to decode ``values`` in batches (the worker's decode stage), and to turn the blocks into engine
    columns and ``events`` rows (what the engine and the events lane then read)."""
    from detectors.columns import Vocabs, parts_of, to_batch, ts_ms
    from schemas.block import decode_block
    from schemas.rows import block_columns

    vocabs, now = Vocabs(), datetime.now(UTC)
    t0 = time.perf_counter()
    blocks = [decode_block(values[i:i + batch], kind, native=native)[0] for i in range(0, len(values), batch)]
    t1 = time.perf_counter()
    for b in blocks:
        parts = parts_of(b)
        to_batch(parts, vocabs, ts_ms(parts, len(b)))
        block_columns([b], now)
    return t1 - t0, time.perf_counter() - t1


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from schemas.block import native_available

    console = Console(width=max(Console().width, 120))
    if not native_available():
        console.print("[red]the native decoder is not built (make deps builds it; it needs cargo)[/red]")
        return 1
    console.print(f"simulating {args.events:,} events (seed {args.seed}) ...")
    by = _records(args.events, args.seed)
    t = Table("kind", "events", "bytes/event", "native decode µs/event", "msgspec decode µs/event",
              "columns + rows µs/event (native / msgspec)", "decode + columns + rows: msgspec / native",
              title=f"spyglass bench decode (same records, same run; best of {args.rounds} alternating rounds, "
              f"batches of {args.batch:,})")
    total = {True: 0.0, False: 0.0}
    n_all = 0
    for kind, values in by.items():
        best: dict[bool, tuple[float, float]] = {}
        for _ in range(args.rounds):  # alternating, so a slow spell of the machine hits both
            for native in (True, False):
                d, c = _path(values, kind, args.batch, native)
                if native not in best or d + c < sum(best[native]):
                    best[native] = (d, c)
        n = len(values)
        n_all += n
        us = {k: (v[0] / n * 1e6, v[1] / n * 1e6) for k, v in best.items()}
        for k in total:
            total[k] += sum(best[k])
        t.add_row(kind, f"{n:,}", f"{sum(map(len, values)) / n:,.0f}", f"{us[True][0]:.2f}", f"{us[False][0]:.2f}",
                  f"{us[True][1]:.2f} / {us[False][1]:.2f}", f"{sum(us[False]) / sum(us[True]):.2f}x")
    t.add_row("all", f"{n_all:,}", "", "", "", "", f"{total[False] / total[True]:.2f}x")
    console.print(t)
    console.print(f"native: {n_all / total[True]:,.0f} events/s on one core for decode + columns + rows; "
                  f"msgspec fallback: {n_all / total[False]:,.0f}")
    return 0


def register(sub: Any) -> None:
    d = sub.add_parser("decode", help="record values into engine columns and rows: native decoder vs msgspec",
                       description="Decode simulated Kafka record values into blocks, engine columns and events "
                       "rows with the native decoder and with the msgspec fallback, alternating, on the same "
                       "records; print both and the ratio.")
    add_traffic_args(d, events=200_000)
    d.add_argument("--batch", type=int, default=5_000, help="records per decode call (default 5000)")
    d.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each is shown (default 3)")
    d.set_defaults(func=lambda args, settings: run(args))
