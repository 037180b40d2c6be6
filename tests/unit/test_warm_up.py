"""The worker's warm-up: built from the contract's samples (no simulator), it loads every compiled kernel that
real traffic needs, so the first real batch compiles nothing."""

from __future__ import annotations

import subprocess
import sys

import msgspec

from schemas.errors import EventError
from schemas.events import decode
from schemas.samples import sample_stream

_KERNELS_AFTER = """
import sys

import msgspec
from numba.core.registry import CPUDispatcher


def loaded() -> set[str]:
    return {f"{m.__name__}.{k}{sig}" for m in list(sys.modules.values()) if m.__name__.startswith("detectors")
            for k, v in vars(m).items() if isinstance(v, CPUDispatcher) for sig in v.signatures}


from streams.worker import warm_up

warm_up()
warmed = loaded()
from detectors.engine import Engine
from schemas.events import decode
from streams.simulator.run import Simulation

enc = msgspec.json.Encoder()
events = [decode(enc.encode(r)) for c in Simulation(seed=11, events=30_000, days=3).chunks() for r in c.rows]
engine = Engine()
for i in range(0, len(events), 5_000):
    engine.process(events[i: i + 5_000])
from schemas.block import decode_block  # and as the worker takes a topic's records: decoded into columns

engine = Engine()
for i in range(0, len(events), 5_000):
    by_kind = {}
    for ev in events[i: i + 5_000]:
        by_kind.setdefault(type(ev).__struct_config__.tag, []).append(enc.encode(ev))
    for kind, values in by_kind.items():
        engine.process(decode_block(values, kind)[0])
print(len(warmed))
print(" ".join(sorted(loaded() - warmed)) or "-")
"""


def test_the_sample_stream_is_valid_events_of_every_kind():
    rows = sample_stream(per_kind=50)
    decoded = [decode(msgspec.json.encode(r)) for r in rows]
    assert not [e for e in decoded if isinstance(e, EventError)]
    assert sorted({type(e).__struct_config__.tag for e in decoded}) == ["agent_execution", "api_usage", "data_access"]
    assert len({e.event_id for e in decoded}) == len(rows) == 150


def test_after_the_warm_up_simulated_traffic_loads_no_other_kernel():
    """In a child process, so the kernels this test process already loaded do not count."""
    out = subprocess.run([sys.executable, "-c", _KERNELS_AFTER], capture_output=True, text=True, timeout=600,
                         check=True)
    warmed, missed = out.stdout.split("\n")[:2]
    assert int(warmed) > 0
    assert missed == "-", f"kernels real traffic loads that the warm-up did not: {missed}"
