"""The worker's Faust consumer: its commit bookkeeping gives what Faust's own gives, and the guard over the
private names of faust-streaming and aiokafka it relies on."""

from __future__ import annotations

import random
import subprocess
import sys
from collections import defaultdict
from importlib.metadata import version

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree
from packaging.specifiers import SpecifierSet

from streams.transport import (
    PRIVATE_NAMES,
    SUPPORTED,
    AdapterError,
    BatchConsumer,
    PrivateName,
    RawPartitionRecords,
    check_private_names,
    install_raw_records,
    one_run,
    raw_values,
)

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
from aiokafka.consumer import fetcher
from streams.transport import BatchApp, BatchConsumerThread, raw_values

async def created():
    app = BatchApp("spyglass-test-fetch-wait", broker="kafka://127.0.0.1:9", store="memory://", web_enabled=False)
    app.fetch_max_wait_ms = None if sys.argv[1] == "-" else int(sys.argv[1])
    thread = app.consumer._thread
    assert isinstance(thread, BatchConsumerThread), type(thread)
    consumer = thread._create_worker_consumer(app.transport)
    print(consumer._value_deserializer is raw_values, fetcher.PartitionRecords.__name__)
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
    assert out.stdout.split()[:2] == ["True", "_partition_records"]  # and it asks for the records as parsed


def _memory_records(batches: list[list[tuple[int, bytes | None, bytes | None, list]]]):
    """aiokafka's MemoryRecords of these record batches (offset, key, value, headers), as a fetch holds them."""
    import struct

    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from aiokafka.record.memory_records import MemoryRecords

    data = b""
    for batch in batches:
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                            producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
        base = batch[0][0]
        for offset, key, value, headers in batch:  # a gap inside a batch: what compaction leaves
            builder.append(offset - base, timestamp=1_700_000_000_000 + offset, key=key, value=value,
                           headers=headers)
        buf = builder.build()
        buf[0:8] = struct.pack(">q", base)
        data += bytes(buf)
    return MemoryRecords(data)


def test_raw_records_are_the_records_aiokafka_would_copy_into_consumer_records():
    """The fetcher's records of a partition, read as Faust's consumer thread reads them (aiokafka's
    ``FetchResult.getall``: up to max_records at a time, iterating again where it stopped), raw and as
    ``ConsumerRecord``: the same offsets, keys, values, timestamps and headers, and the same next fetch
    offset (what the consumer's position moves to) after every read."""
    from aiokafka.consumer import fetcher
    from aiokafka.structs import ConsumerRecord, TopicPartition

    rng = random.Random(3)
    batches, offset = [], 40
    for _ in range(4):
        batch = []
        for _ in range(rng.randrange(1, 30)):
            offset += rng.choice([1, 1, 1, 3])
            batch.append((offset, rng.choice([None, b"k%d" % offset]), rng.choice([None, b"", b"v" * offset]),
                          rng.choice([[], [("h", b"x"), ("e", None)]])))
        batches.append(batch)
    tp = TopicPartition("spyglass.api-usage", 2)
    fetch_from = batches[0][2][0]  # a fetch from inside the first batch: the records before it are skipped
    install_raw_records()
    install_raw_records()  # idempotent

    def read(deserializer) -> tuple[list, list[int], type]:
        records = fetcher.PartitionRecords(tp, _memory_records(batches), None, fetch_from, None, deserializer,
                                           True, 0)
        got, positions = [], []
        while True:
            n = len(got)
            for r in records:  # what getall does, max_records 7; it drops the records once they end
                got.append(r)
                if len(got) - n >= 7:
                    break
            else:
                return got, positions + [records.next_fetch_offset], type(records)
            positions.append(records.next_fetch_offset)

    copied, copied_at, copied_cls = read(None)
    raw, raw_at, raw_cls = read(raw_values)
    assert copied_cls is not RawPartitionRecords and isinstance(copied[0], ConsumerRecord)
    assert raw_cls is RawPartitionRecords and not isinstance(raw[0], ConsumerRecord)
    fields = ("offset", "key", "value", "timestamp", "timestamp_type")
    assert [[getattr(r, f) for f in fields] + [list(r.headers)] for r in raw] == [
        [getattr(r, f) for f in fields] + [list(r.headers)] for r in copied]
    want = [o for b in batches for o, *_ in b if o >= fetch_from]
    assert [r.offset for r in raw] == want and [r.value for r in raw][-1] == batches[-1][-1][2]
    assert raw_at == copied_at and raw_at[-1] == batches[-1][-1][0] + 1


class StandInConsumer:
    """A faust-streaming consumer of another version, as the guard would find it."""

    _n_acked = 0

    def __init__(self) -> None:
        self._acked: dict = {}

    def _new_offset(self, tp, committed):  # a parameter more than the adapter's override takes
        return None


def _guard_message(name: str, parameters: tuple[str, ...] | None = None) -> str:
    with pytest.raises(AdapterError) as err:
        check_private_names([PrivateName("faust-streaming", f"{__name__}.StandInConsumer", name, parameters)])
    return str(err.value)


def test_the_guard_names_a_missing_private_name_the_installed_version_and_the_supported_ones():
    installed = version("faust-streaming")
    assert _guard_message("_drain_messages", ("self", "fetcher")) == (
        f"faust-streaming {installed}: {__name__}.StandInConsumer._drain_messages missing; Spyglass's adapter "
        f"(streams/transport.py) supports faust-streaming {SUPPORTED['faust-streaming']}")
    assert f"{__name__}.StandInConsumer._gap missing" in _guard_message("_gap")
    with pytest.raises(AdapterError, match=r"tests\.unit\.test_transport\.Gone missing"):
        check_private_names([PrivateName("aiokafka", f"{__name__}.Gone", "_records_iterator")])


def test_the_guard_names_a_changed_signature():
    assert _guard_message("_new_offset", ("self", "tp")).split("; ")[0].endswith(
        "StandInConsumer._new_offset(self, tp, committed) changed, expected (self, tp)")


def test_the_guard_accepts_attributes_set_in_init_or_on_the_class_and_matching_methods():
    check_private_names([PrivateName("faust-streaming", f"{__name__}.StandInConsumer", name, params) for name, params
                         in (("_acked", None), ("_n_acked", None), ("_new_offset", ("self", "tp", "committed")))])


def test_the_installed_libraries_have_every_private_name_the_adapter_uses():
    check_private_names(PRIVATE_NAMES)
    assert {p.distribution for p in PRIVATE_NAMES} == set(SUPPORTED)
    for dist, spec in SUPPORTED.items():
        assert SpecifierSet(spec).contains(version(dist)), (dist, version(dist), spec)


def test_pyproject_bounds_the_adapted_libraries_as_the_adapter_says():
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {r.name: str(r.specifier) for r in map(Requirement, pyproject["project"]["dependencies"])}
    assert {name: SpecifierSet(declared.get(name, "")) for name in SUPPORTED} == {
        name: SpecifierSet(spec) for name, spec in SUPPORTED.items()}
