"""A paused worker (SIGSTOP past the session timeout) whose partitions another worker took over, then SIGCONT:
none of its writes lands after the new owner's, on the real broker and ClickHouse server."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import msgspec

from streams.simulator.run import Simulation
from tests.fault.harness import (
    Run,
    WorkerProc,
    check_accounting_and_alerts,
    checkpoints_of,
    end_offsets,
    owns_partitions,
    produce_in_background,
    read_topic,
    reference_alert_ids,
    wait_checkpointed,
    wait_committed,
)

N = 12_000


def test_a_paused_worker_writes_nothing_after_the_new_owner_took_over(run: Run):
    """Before: on SIGCONT the paused worker went on with the writes it had queued (events, alerts, publishes)
    and, revoked, checkpointed its partitions, all after the new owner had restored and re-scored them."""
    # 24 s of production: still going when a is paused, so a has writes queued
    producer = produce_in_background(run, Simulation(seed=41, events=N, days=2, instances=1), rate=500)
    a = WorkerProc(run, "paused").start()
    b = WorkerProc(run, "taker").start()
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(owns_partitions(w) for w in (a, b)):
            time.sleep(0.5)
        assert all(owns_partitions(w) for w in (a, b)), (a.tail(), b.tail())
        time.sleep(3)  # a scores, queues writes and checkpoints its share
        wait_checkpointed(run, a)  # a busy machine scores the first batches late
        a.pause()
        deadline = time.monotonic() + 90  # past a's session timeout (6 s) the group gives b every partition
        while time.monotonic() < deadline and not owns_partitions(b, run.scored_partitions):
            time.sleep(1)
        assert owns_partitions(b, run.scored_partitions), b.tail()
        producer.wait(120)
        wait_committed(run, N, [b])
        alerts_before = end_offsets(run, [run.settings.topic_alerts])
        # a, stopped for seconds now, wrote nothing in this second: whatever it writes from here on counts
        resumed = datetime.now(UTC).replace(microsecond=0)
        a.resume()
        time.sleep(10)  # a wakes up, finds it lost its partitions; whatever it still writes, it writes now
        assert a.alive(), a.tail()
        wait_committed(run, N, [a, b])
    finally:
        a.terminate()
        b.terminate()
    assert checkpoints_of(run, "paused", since=resumed) == 0, "the paused worker checkpointed after the takeover"
    later = [m for m in read_topic(run, run.settings.topic_alerts)
             if m.offset >= alerts_before.get((m.topic, m.partition), 0)]
    earlier = {msgspec.json.decode(m.value)["alert_id"] for m in read_topic(run, run.settings.topic_alerts)
               if m.offset < alerts_before.get((m.topic, m.partition), 0)}
    assert not [m for m in later if msgspec.json.decode(m.value)["alert_id"] in earlier], \
        "the paused worker published alerts again after the takeover"
    check_accounting_and_alerts(run, N, reference_alert_ids(run))
    assert "fenced" in a.log.read_text(errors="replace"), a.tail()
