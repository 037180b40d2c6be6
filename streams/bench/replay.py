"""``spyglass bench replay``: the engine's throughput and memory beside a per-event River baseline."""

from __future__ import annotations

import argparse
import gc
import resource
import time
import tracemalloc
from typing import Any

import msgspec

from streams.bench import add_traffic_args


def _events(n: int, seed: int) -> list:
    from schemas.events import decode
    from streams.simulator.run import Simulation

    enc = msgspec.json.Encoder()
    sim = Simulation(seed=seed, events=n, days=max(1, min(7, n // 25_000)))
    return [decode(enc.encode(r)) for c in sim.chunks() for r in c.rows]


def _flood(n: int, start_ms: int) -> list:
    """``n`` API requests, each from a key and a client IP never seen before (10 principals share them)."""
    from datetime import UTC, datetime

    from schemas.events import decode

    enc = msgspec.json.Encoder()
    out = []
    for i in range(n):
        ts = datetime.fromtimestamp((start_ms + i * 100) / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
        out.append(decode(enc.encode({
            "event_id": f"flood-{i}", "kind": "api_usage", "ts": ts, "tenant": "flood", "api_key_id": f"fk-{i:09d}",
            "principal": f"p{i % 10}", "client_ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "method": "POST",
            "endpoint": "/v1/chat/completions", "status": 200, "auth_result": "ok", "user_agent": "flood/1",
            "scopes_granted": ["inference:chat", "files:read"], "scope_used": "inference:chat"})))
    return out


def _state_figures(engine: Any) -> tuple[int, int, int]:
    """(tracked entities, checkpoint bytes, bytes by ``sys.getsizeof`` over every part of the state)."""
    return engine.entities(), len(engine.state()), sum(engine.footprint().values())


def _run_flood(args: argparse.Namespace, console: Any) -> None:
    """The same flood of new entities through an engine with the cap and one without: memory stays bounded."""
    from rich.table import Table

    from detectors.engine import Engine, EngineConfig

    check = max(1_000, args.max_entities // 30)  # the cap may be exceeded by 3 entities per event between checks
    console.print(f"flood: {args.flood:,} requests, each from a new key and a new IP; cap {args.max_entities:,} "
                  f"entities, checked every {check:,} events ...")
    flood = _flood(args.flood, 1_793_577_600_000)  # 2026-11-02
    t = Table("engine", "tracked entities (peak after a batch)", "evicted", "checkpoint", "getsizeof state",
              "Python heap held", "events/s (tracemalloc on)", title="spyglass bench replay --flood (same input)")
    for label, cap in ((f"max_entities={args.max_entities:,}", args.max_entities), ("no cap", 0)):
        gc.collect()
        tracemalloc.start()
        engine = Engine(EngineConfig(max_entities=cap, cap_check_events=check))
        peak = 0
        t0 = time.perf_counter()
        for i in range(0, len(flood), args.batch):
            engine.process(flood[i: i + args.batch])
            peak = max(peak, engine.entities())
        secs = time.perf_counter() - t0
        engine.scores = {}  # the last batch's per-event scores are output, not state
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        n, ckpt, deep = _state_figures(engine)
        t.add_row(label, f"{n:,} ({peak:,})", f"{sum(engine.evicted.values()):,}", f"{ckpt / 1e6:.1f} MB",
                  f"{deep / 1e6:.1f} MB", f"{held / 1e6:.1f} MB", f"{len(flood) / secs:,.0f}")
        del engine
    console.print(t)


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

    from detectors.catalog import CATALOG
    from detectors.engine import Engine

    console = Console(width=max(Console().width, 130))
    console.print(f"simulating {args.events:,} events (seed {args.seed}) ...")
    events = _events(args.events, args.seed)
    raw = [msgspec.json.encode(e) for e in events]

    # the engine: decode + score + learn, in batches. First as the worker drives it: each batch's records split
    # by kind (as the three topics carry them), decoded straight into columns; then as replay and eval drive
    # it: decoded structs. A throwaway engine first loads the compiled kernels, once per process, as a worker
    # does at start.
    from schemas.block import decode_block, native_available
    from schemas.events import decode

    kinds = [type(e).__struct_config__.tag for e in events]

    def by_topic(engine: Engine, stop: int) -> int:
        alerts = 0
        for i in range(0, stop, args.batch):
            by_kind: dict[str, list[bytes]] = {}
            for r, k in zip(raw[i: min(stop, i + args.batch)], kinds[i: min(stop, i + args.batch)], strict=True):
                by_kind.setdefault(k, []).append(r)
            for k, values in by_kind.items():
                block, _ok, _bad = decode_block(values, k)
                alerts += len(engine.process(block))
        return alerts

    warm = min(len(raw), args.batch)
    by_topic(Engine(), warm)
    Engine().process([decode(r) for r in raw[:warm]])

    t0 = time.perf_counter()
    worker_alerts = by_topic(Engine(), len(raw))
    worker_rate = len(raw) / (time.perf_counter() - t0)

    engine = Engine()
    t0 = time.perf_counter()
    alerts = 0
    for i in range(0, len(raw), args.batch):
        batch = [decode(r) for r in raw[i: i + args.batch]]
        alerts += len(engine.process(batch))
    engine_s = time.perf_counter() - t0
    engine_rate = len(raw) / engine_s
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # state size per tracked entity: the checkpoint, sys.getsizeof over every part (strings and dicts
    # included), and the Python heap a second engine still holds after the same replay (tracemalloc)
    entities, state_bytes, deep = _state_figures(engine)
    parts = engine.footprint()
    gc.collect()
    tracemalloc.start()
    probe = Engine()
    for i in range(0, len(raw), args.batch):
        probe.process([decode(r) for r in raw[i: i + args.batch]])
    probe.scores = {}  # the last batch's per-event scores are output, not state
    gc.collect()
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del probe

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
    active = sum(s.engine for s in CATALOG.values()) - (0 if engine.config.behaviour else 1)  # behaviour: off
    decoder = "native decoder" if native_available() else "msgspec"
    t.add_row(f"engine as the worker drives it ({decoder} into columns per topic + {active} detectors, batches of "
              f"{args.batch})", f"{len(raw):,}", f"{worker_rate:,.0f}", f"{worker_rate / base_rate:.1f}x")
    t.add_row(f"engine on decoded structs, as replay and eval drive it (msgspec + {active} detectors)",
              f"{len(raw):,}", f"{engine_rate:,.0f}", f"{engine_rate / base_rate:.1f}x")
    t.add_row("River MinMaxScaler|HalfSpaceTrees per event (decode + score + learn)", f"{n_base:,}",
              f"{base_rate:,.0f}", "1.0x")
    console.print(t)
    per = max(entities, 1)
    console.print(f"alerts: {alerts} (worker's path: {worker_alerts}); tracked entities: {entities:,}; "
                  f"bytes per tracked entity: checkpoint "
                  f"{state_bytes / per:,.0f} ({state_bytes / 1e6:.2f} MB), getsizeof {deep / per:,.0f} "
                  f"({deep / 1e6:.2f} MB), Python heap held after a replay {held / per:,.0f} ({held / 1e6:.2f} MB); "
                  f"Python-heap peak during a replay {peak / 1e6:.1f} MB; process max RSS {rss_mb:,.0f} MB")
    console.print("state by part (getsizeof): " + ", ".join(f"{k} {v / 1e3:,.0f} kB" for k, v in
                                                             sorted(parts.items(), key=lambda kv: -kv[1]) if v))
    if args.flood:
        _run_flood(args, console)
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("replay", help="engine events/s and memory on simulated traffic vs a per-event River model",
                       description="Simulate events, replay them through the full engine, and run River's "
                       "MinMaxScaler|HalfSpaceTrees per event on the same input; print both rates and the ratio.")
    add_traffic_args(r, events=200_000)
    r.add_argument("--batch", type=int, default=20_000, help="engine batch size (default 20000)")
    r.add_argument("--baseline-events", type=int, default=50_000,
                   help="events the River baseline scores (default 50000; its rate is per event)")
    r.add_argument("--flood", type=int, default=0,
                   help="then replay this many requests that each bring a new key and IP, through an engine "
                   "capped at --max-entities and one without a cap (default 0: skip)")
    r.add_argument("--max-entities", type=int, default=100_000, help="the cap for --flood (default 100000)")
    r.set_defaults(func=lambda args, settings: run(args))
