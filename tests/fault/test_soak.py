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

from streams.simulator.run import Simulation
from tests.fault.harness import (
    Run,
    WorkerProc,
    check_accounting_and_alerts,
    owns_partitions,
    produce_rows,
    reference_alert_ids,
    wait_committed,
)

CYCLES = int(os.environ.get("SPYGLASS_TEST_SOAK_CYCLES", "3"))
SEED = int(os.environ.get("SPYGLASS_TEST_SOAK_SEED", "2026"))
# each kill falls this long after the worker got its partitions: from the restore itself (the checkpoint load,
# the alerts-topic scan, the first re-scored batch) to steady scoring past a few checkpoints (every 2 s here)
KILL_AFTER_S = (0.2, 8.0)


def test_soak_kill_9_at_random_times_loses_nothing_and_duplicates_nothing(run: Run):
    rng = random.Random(SEED)
    delays = [rng.uniform(*KILL_AFTER_S) for _ in range(CYCLES)]
    events = max(6_000, 1_200 * CYCLES)
    rows = [r for ch in Simulation(seed=SEED, events=events, days=max(1, events // 8_000), instances=1).chunks()
            for r in ch.rows]
    share = len(rows) // (CYCLES + 1)  # a share of the run is produced during each cycle, the rest after the last
    t0 = time.monotonic()
    w = WorkerProc(run, "soaked").start()
    try:
        for i, delay in enumerate(delays):
            deadline = time.monotonic() + 120
            while not owns_partitions(w) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert owns_partitions(w), w.tail()
            producer = produce_rows(run, rows[i * share:(i + 1) * share], rate=share / delay)
            time.sleep(delay)
            w.kill9()  # while its share is still being produced
            producer.wait(120)
            w.start()
        produce_rows(run, rows[CYCLES * share:], rate=100_000).wait(120)
        wait_committed(run, len(rows), [w], timeout_s=600)
    finally:
        w.terminate()
    seconds = time.monotonic() - t0
    assert w.starts == CYCLES + 1
    restored = w.log.read_text(errors="replace").count("state restored")
    assert restored, "no start restored a checkpoint: the kills came too early to test anything"
    check_accounting_and_alerts(run, len(rows), reference_alert_ids(run))
    print(f"\nsoak: {CYCLES} kill -9 cycles (seed {SEED}), {len(rows)} events, {restored} partitions restored "  # noqa: T201
          f"from checkpoints, {seconds:.0f} s to everything committed: passed")
