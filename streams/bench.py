"""``spyglass bench replay``: the engine's throughput and memory beside a per-event River baseline."""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc
from typing import Any

import msgspec


def _events(n: int, seed: int) -> list:
    from schemas.events import decode
    from streams.simulator.run import Simulation

    enc = msgspec.json.Encoder()
    sim = Simulation(seed=seed, events=n, days=max(1, min(7, n // 25_000)))
    return [decode(enc.encode(r)) for c in sim.chunks() for r in c.rows]


def _numeric(ev: Any) -> dict[str, float]:
    """The per-event feature dict a per-event model would see (numeric fields of the event)."""
    out = {}
    for k in ("latency_ms", "request_bytes", "response_bytes", "tokens_in", "tokens_out", "rows", "bytes",
              "duration_ms", "status"):
        v = getattr(ev, k, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from river import anomaly, preprocessing

    from detectors.engine import Engine

    console = Console(width=max(Console().width, 130))
    console.print(f"simulating {args.events:,} events (seed {args.seed}) ...")
    events = _events(args.events, args.seed)
    raw = [msgspec.json.encode(e) for e in events]

    # the engine: decode + score + learn, in batches, as replay and the worker drive it
    from schemas.events import decode

    engine = Engine()
    t0 = time.perf_counter()
    alerts = 0
    for i in range(0, len(raw), args.batch):
        batch = [decode(r) for r in raw[i: i + args.batch]]
        alerts += len(engine.process(batch))
    engine_s = time.perf_counter() - t0
    engine_rate = len(raw) / engine_s
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # state size per tracked entity, and Python-heap peak of a second engine over the same input
    state_bytes = len(engine.state())
    entities = engine.entities()
    tracemalloc.start()
    probe = Engine()
    for i in range(0, len(raw), args.batch):
        probe.process([decode(r) for r in raw[i: i + args.batch]])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    # the baseline: River MinMaxScaler | HalfSpaceTrees scoring then learning each event
    n_base = min(len(raw), args.baseline_events)
    model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
    t0 = time.perf_counter()
    for r in raw[:n_base]:
        x = _numeric(decode(r))
        model.score_one(x)
        model.learn_one(x)
    base_s = time.perf_counter() - t0
    base_rate = n_base / base_s

    t = Table("", "events", "events/s", "ratio to baseline", title="spyglass bench replay (same run, same input)")
    t.add_row(f"engine (decode + 16 detectors, batches of {args.batch})", f"{len(raw):,}", f"{engine_rate:,.0f}",
              f"{engine_rate / base_rate:.1f}x")
    t.add_row("River MinMaxScaler|HalfSpaceTrees per event (decode + score + learn)", f"{n_base:,}",
              f"{base_rate:,.0f}", "1.0x")
    console.print(t)
    console.print(f"alerts: {alerts}; tracked entities: {entities:,}; checkpoint {state_bytes / 1e6:.2f} MB = "
                  f"{state_bytes / max(entities, 1):,.0f} bytes per tracked entity; Python-heap peak during a replay "
                  f"{peak / 1e6:.1f} MB; process max RSS {rss_mb:,.0f} MB")
    return 0


def register(subparsers: Any) -> None:
    b = subparsers.add_parser("bench", help="benchmarks (throughput and memory, each beside its baseline)",
                              description="Benchmarks print the baseline measured in the same run, as a ratio.")
    sub = b.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    r = sub.add_parser("replay", help="engine events/s and memory on simulated traffic vs a per-event River model",
                       description="Simulate events, replay them through the full engine, and run River's "
                       "MinMaxScaler|HalfSpaceTrees per event on the same input; print both rates and the ratio.")
    r.add_argument("--events", type=int, default=200_000, help="simulated events (default 200000)")
    r.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    r.add_argument("--batch", type=int, default=20_000, help="engine batch size (default 20000)")
    r.add_argument("--baseline-events", type=int, default=50_000,
                   help="events the River baseline scores (default 50000; its rate is per event)")
    r.set_defaults(func=lambda args, settings: run(args))

    from streams.panelbench import register as register_panels
    from streams.streambench import register as register_stream

    register_stream(sub)

    register_panels(sub)
