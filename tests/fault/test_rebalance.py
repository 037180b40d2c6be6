"""The broker restarts in the middle of a rebalance (a second worker joins; the broker stops as the partitions are
handed over, while the new owners restore them), on the real broker and ClickHouse server."""

from __future__ import annotations

import time

from streams.settings import Settings
from streams.simulator.run import Simulation
from streams.stack import Stack
from tests.fault.harness import (
    Run,
    WorkerProc,
    check_accounting_and_alerts,
    owns_partitions,
    produce_in_background,
    reference_alert_ids,
    wait_checkpointed,
    wait_committed,
)

N = 12_000


def test_a_broker_restart_during_a_rebalance_loses_nothing_and_duplicates_nothing(run: Run, stack_settings: Settings):
    stack = Stack(stack_settings)
    producer = produce_in_background(run, Simulation(seed=43, events=N, days=2, instances=1), rate=1_500)  # 8 s
    a = WorkerProc(run, "first").start()
    b = WorkerProc(run, "joiner")
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not owns_partitions(a, run.scored_partitions):
            time.sleep(0.5)
        assert owns_partitions(a, run.scored_partitions), a.tail()
        time.sleep(3)  # a scores and checkpoints
        wait_checkpointed(run, a)  # a busy machine scores the first batches late
        b.start()  # the group rebalances once b has warmed up and joins
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and owns_partitions(a, run.scored_partitions) and not owns_partitions(b):
            time.sleep(0.2)
        assert not owns_partitions(a, run.scored_partitions) or owns_partitions(b), "no rebalance"
        producer.wait(120)  # done by now (a producer's retries would not outlast the restart, nor keep order)
        stack.down(("kafka",))  # the partitions were just handed over: the new owners are restoring them
        try:
            time.sleep(5)
        finally:
            stack.up(("kafka",))
        wait_committed(run, N, [a, b], timeout_s=300)
        assert a.alive() and b.alive(), (a.tail(), b.tail())
    finally:
        a.terminate()
        b.terminate()
    check_accounting_and_alerts(run, N, reference_alert_ids(run))
