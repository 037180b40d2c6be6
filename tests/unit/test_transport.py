"""The worker's Faust consumer: its commit bookkeeping gives what Faust's own gives."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import defaultdict

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.transport import BatchConsumer, one_run

TP0 = TP("spyglass.api-usage", 0)


def _consumer(acked: list[int], committed: int | None, gap: tuple[int, int] | None = None) -> BatchConsumer:
    c = BatchConsumer.__new__(BatchConsumer)  # only the commit bookkeeping: no app, no broker
    c._acked = defaultdict(list, {TP0: list(acked)})
    c._acked_index = defaultdict(set, {TP0: set(acked)})
    c._committed_offset = defaultdict(lambda: None, {TP0: committed})
    c._gap = defaultdict(IntervalTree)
    if gap:
        c._gap[TP0].addi(*gap)
    return c


def _state(c: BatchConsumer) -> tuple[list[int], set[int]]:
    return sorted(c._acked[TP0]), set(c._acked_index[TP0])


def test_new_offset_matches_faust_on_runs_holes_duplicates_and_gaps():
    rng = random.Random(4)
    cases = [([5, 6, 7, 8], 4), ([8, 5, 7, 6], 4), ([5, 6, 8, 9], 4), ([7, 8], 4), ([7, 8], None), ([], 4),
             ([3], 2), ([10, 11, 12], 0)]
    for _ in range(300):  # shuffled runs with holes, and heads that are not next after the committed offset
        start = rng.randrange(0, 50)
        offs = [o for o in range(start, start + rng.randrange(1, 40)) if rng.random() > 0.1]
        rng.shuffle(offs)
        cases.append((offs, rng.choice([None, start - 1, start - 2, start])))
    for acked, committed in cases:
        gaps: list[tuple[int, int] | None] = [None]
        if acked:  # a registered gap past the acked offsets, and one filling the first hole (if any)
            lo, hi = min(acked), max(acked)
            holes = sorted(set(range(lo, hi)) - set(acked))
            gaps += [(hi + 5, hi + 8)] + ([(holes[0], holes[0] + 1)] if holes else [])
        for gap in gaps:
            ours, faust = _consumer(acked, committed, gap), _consumer(acked, committed, gap)
            assert BatchConsumer._new_offset(ours, TP0) == Consumer._new_offset(faust, TP0), (acked, committed)
            assert _state(ours) == _state(faust), (acked, committed)


def test_a_duplicate_ack_is_never_mistaken_for_a_run():
    c = _consumer([1, 3], 0)
    c._acked[TP0] = [1, 1, 3]  # as if acked twice: 3 offsets spanning 1..3, offset 2 missing
    assert BatchConsumer._new_offset(c, TP0) == 2  # Faust's walk: only 1 is committable
    assert not one_run([1, 3]) and one_run([4, 5, 6]) and not one_run([])


_CREATE = """
import asyncio, sys
from streams.transport import BatchApp, BatchConsumerThread

async def created():
    app = BatchApp("spyglass-test-fetch-wait", broker="kafka://127.0.0.1:9", store="memory://", web_enabled=False)
    app.fetch_max_wait_ms = None if sys.argv[1] == "-" else int(sys.argv[1])
    thread = app.consumer._thread
    assert isinstance(thread, BatchConsumerThread), type(thread)
    consumer = thread._create_worker_consumer(app.transport)
    print(consumer._fetch_max_wait_ms)
    await consumer.stop()

asyncio.run(created())
"""


@pytest.mark.parametrize("wait_ms", [None, 100])
def test_the_worker_consumer_asks_the_broker_to_hold_a_fetch_only_as_long_as_the_app_says(wait_ms: int | None) -> None:
    """The aiokafka consumer Faust's consumer thread creates (not started: no broker needed) carries the
    app's fetch_max_wait_ms, which its fetcher puts in every fetch request; without one, Faust's 1500. In a
    child process: Faust's consumer thread makes an event loop of its own, which it closes only when run."""
    out = subprocess.run([sys.executable, "-c", _CREATE, "-" if wait_ms is None else str(wait_ms)],  # noqa: S603
                         capture_output=True, text=True, timeout=60, check=True)
    assert int(out.stdout.split()[-1]) == (1500 if wait_ms is None else wait_ms)
