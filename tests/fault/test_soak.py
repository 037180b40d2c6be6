"""The soak: a worker killed with ``kill -9`` at random times, many times over, while the simulator produces; the
same accounting as the other fault tests at the end (every event stored or dead-lettered, no alert id twice
counted without FINAL, the alerts of a fault-free run).

CI runs a short version (``SPYGLASS_TEST_SOAK_CYCLES``, 3 by default); ``make soak`` runs 50 cycles
(``SOAK_CYCLES=N make soak`` for another count, ``SPYGLASS_TEST_SOAK_SEED`` for another draw of kill times).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from streams.settings import Settings
from streams.simulator.run import Simulation
from tests.fault.harness import (
    Run,
    WorkerProc,
    check_accounting_and_alerts,
    produce_in_background,
    reference_alert_ids,
    wait_committed,
)

CYCLES = int(os.environ.get("SPYGLASS_TEST_SOAK_CYCLES", "3"))
SEED = int(os.environ.get("SPYGLASS_TEST_SOAK_SEED", "2026"))
KILL_AFTER_S = (1.0, 10.0)  # a kill falls anywhere from start-up (restore, alerts scan) to steady scoring


@pytest.fixture
def run(stack_settings: Settings, tmp_path):
    r = Run.create(stack_settings, tmp_path)
    yield r
    r.cleanup()


def test_soak_kill_9_at_random_times_loses_nothing_and_duplicates_nothing(run: Run):
    rng = random.Random(SEED)
    delays = [rng.uniform(*KILL_AFTER_S) for _ in range(CYCLES)]
    events = max(6_000, 1_200 * CYCLES)
    # paced so that the simulator still produces when the last kill falls
    rate = events / max(sum(delays), 1.0)
    t0 = time.monotonic()
    producer = produce_in_background(run, Simulation(seed=SEED, events=events, days=max(1, events // 8_000),
                                                     instances=1), rate=rate)
    w = WorkerProc(run, "soaked").start()
    try:
        for delay in delays:
            time.sleep(delay)
            w.kill9()
            w.start()
        producer.join(600)
        assert not producer.is_alive(), "the simulator did not finish producing"
        wait_committed(run, events, [w], timeout_s=600)
    finally:
        w.terminate()
    seconds = time.monotonic() - t0
    assert w.starts == CYCLES + 1
    check_accounting_and_alerts(run, events, reference_alert_ids(run))
    print(f"\nsoak: {CYCLES} kill -9 cycles (seed {SEED}), {events} events at {rate:.0f}/s, "  # noqa: T201 - the figures
          f"{seconds:.0f} s to everything committed: passed")
