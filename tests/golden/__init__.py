"""Behaviour fixtures: what the engine raises on fixed simulated runs, recorded before a refactor.

``python -m tests.golden`` rewrites the fixture. Do that only when a change is meant to alter
detection, and say so in the commit; a refactor must leave it untouched.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

from detectors.engine import Engine, EngineConfig
from schemas.alerts import encode_alert
from schemas.events import decode
from streams.simulator.run import Simulation

FIXTURE = Path(__file__).with_name("alerts.json.gz")
# (seed, events, days, batch size, engine options): several worlds, two batch cuts, the optional detector on once
RUNS = [
    (7, 60_000, 7, 5_000, {}),
    (23, 60_000, 7, 1_370, {}),
    (61, 60_000, 7, 20_000, {"behaviour": True, "behaviour_min_windows": 200}),
    (31, 60_000, 7, 3_000, {"idle_evict_days": 1.0, "session_idle_hours": 6.0, "max_entities": 600,
                            "cap_check_events": 5_000}),
]


def record(seed: int, events: int, days: int, size: int, options: dict) -> dict:
    """The alerts (as published) and a digest of every event's score, for one run."""
    sim = Simulation(seed=seed, events=events, days=days, instances=2)
    evs = [decode(json.dumps(r).encode()) for c in sim.chunks() for r in c.rows]
    eng = Engine(EngineConfig(**options))
    alerts, scores = [], hashlib.sha256()
    for i in range(0, len(evs), size):
        for a in eng.process(evs[i: i + size]):
            alerts.append(json.loads(encode_alert(a)))
        for k in sorted(eng.scores):
            scores.update(f"{k}={eng.scores[k]!r};".encode())
        if options.get("idle_evict_days"):  # the compacting run also goes through a checkpoint every batch
            eng = Engine.from_state(eng.state())
    return {"run": [seed, events, days, size, options], "alerts": alerts, "scores_sha256": scores.hexdigest(),
            "entities": eng.entities(), "events_seen": eng.events_seen, "evicted": eng.evicted}


def load() -> list[dict]:
    with gzip.open(FIXTURE, "rt") as f:
        return json.load(f)


def write() -> None:
    out = [record(*r) for r in RUNS]
    with gzip.open(FIXTURE, "wt") as f:
        json.dump(out, f, sort_keys=True)
    print(f"{FIXTURE}: {[len(r['alerts']) for r in out]} alerts")
