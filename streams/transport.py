"""Faust's Kafka consumer, delivering whole fetches to the worker instead of one message at a time; and the
one module where Spyglass touches Faust's and aiokafka's private names.

Faust hands each fetched message to its agents on its own: per message it starts two tasks
(``wait_first(callback(message), suspend_flow.wait())``), routes it through the conductor
and queues it on a stream. The scorer works on batches
anyway, so :class:`BatchConsumer` keeps everything else Faust's consumer does (group
membership, rebalancing and its callbacks, flow control, read offsets, the ack bookkeeping
that decides what is committed) and changes only that last step: each fetch (up to
``max_poll_records`` messages) goes to one batch handler, awaited to completion before the
next fetch, so a slow store stops fetching (backpressure) rather than filling a buffer. A
cancel (shutdown) can only land before a batch changes any state or while its writes wait
for room in the writer's queue; the scorer then stores no later checkpoint (see
``Scorer.handle``), so the batch is re-scored by the next owner, never skipped.

The fetch is handed over as aiokafka's own records, grouped by partition, without Faust's
per-record steps (a ``Message`` object, a high-water lookup through the consumer thread and a
monitor call for every record), and without aiokafka's last per-record step either:
:class:`RawPartitionRecords` hands on the records its C parser made (offset, key, value, timestamp,
headers; the partition is the fetch's key), not a ``ConsumerRecord`` copied from each.
Records are acknowledged in bulk with :meth:`BatchConsumer.ack_offsets`, which keeps the
same bookkeeping as Faust's ``Consumer.ack`` (under the same lock), so Faust commits an
offset only once the handler has said every record up to it is safe.

None of that has a public seam, so this module overrides and reads private names of faust-streaming,
aiokafka and mode-streaming. :data:`PRIVATE_NAMES` lists every one; at import :func:`check_private_names`
verifies that each exists (with the parameter names expected, for a method) in the installed versions and
raises :class:`AdapterError` naming what changed otherwise. :data:`SUPPORTED` holds the versions it was
written and tested against (the bounds in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple, cast

import faust
from faust.types import TP

from schemas.errors import SpyglassError
from streams import metrics as m

# the versions this adapter was written and tested against; pyproject.toml bounds its dependencies the same
SUPPORTED = {"faust-streaming": ">=0.15.3,<0.16", "aiokafka": ">=0.14.0,<0.15", "mode-streaming": ">=0.7.1,<0.8"}


class AdapterError(SpyglassError):
    """An installed faust-streaming, aiokafka or mode-streaming lacks a private name the adapter relies on."""


class PrivateName(NamedTuple):
    """A private name of a library: a method (with the parameter names it must have) or an attribute."""

    distribution: str  # the package that ships it, as pip names it
    owner: str  # dotted path of the module or class that has it
    name: str
    parameters: tuple[str, ...] | None = None  # None: an attribute (of the module or class, or set by its __init__)


_MISSING = object()


def _resolve(path: str) -> Any:
    """The module or class at a dotted path (its longest importable module, then attributes), or _MISSING."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:  # through a stand-in of ours to what it stands in for (install_raw_records)
            found = inspect.unwrap(getattr(found, attr, _MISSING))
        return found
    return _MISSING


def _sets(owner: type, name: str) -> bool:
    """Whether ``__init__`` of ``owner`` or of a class it derives from assigns (or reads) ``self.<name>``."""
    for cls in owner.__mro__:
        code = getattr(cls.__dict__.get("__init__"), "__code__", None)
        if code is not None and name in code.co_names:
            return True
    return False


def _problem(p: PrivateName) -> str | None:
    owner = _resolve(p.owner)
    if owner is _MISSING:
        return f"{p.owner} missing"
    found = getattr(owner, p.name, _MISSING)
    if found is _MISSING and not (isinstance(owner, type) and _sets(owner, p.name)):
        return f"{p.owner}.{p.name} missing"
    if p.parameters is not None:
        have = tuple(inspect.signature(found).parameters)
        if have != p.parameters:
            return f"{p.owner}.{p.name}({', '.join(have)}) changed, expected ({', '.join(p.parameters)})"
    return None


def check_private_names(names: Iterable[PrivateName]) -> None:
    """Raise :class:`AdapterError` naming every private name that is missing or whose parameters changed."""
    problems = []
    for p in names:
        problem = _problem(p)
        if problem is None:
            continue
        try:
            installed = version(p.distribution)
        except PackageNotFoundError:
            installed = "(not installed)"
        problems.append(f"{p.distribution} {installed}: {problem}; Spyglass's adapter (streams/transport.py) "
                        f"supports {p.distribution} {SUPPORTED.get(p.distribution, '(not listed)')}")
    if problems:
        raise AdapterError("\n".join(problems))


_FETCHED = "aiokafka.consumer.fetcher.PartitionRecords"
_CONSUMER = "faust.transport.consumer.Consumer"
PRIVATE_NAMES: tuple[PrivateName, ...] = (
    # aiokafka: the fetcher's per-partition records, replaced by RawPartitionRecords for our consumers
    PrivateName("aiokafka", "aiokafka.consumer.fetcher", "PartitionRecords"),
    PrivateName("aiokafka", _FETCHED, "__init__", ("self", "tp", "records", "aborted_transactions", "fetch_offset",
                                                   "key_deserializer", "value_deserializer", "check_crcs",
                                                   "isolation_level")),
    PrivateName("aiokafka", _FETCHED, "_records_iterator"),
    PrivateName("aiokafka", _FETCHED, "_consumer_record", ("self", "tp", "record")),
    PrivateName("aiokafka", "aiokafka.AIOKafkaConsumer", "_value_deserializer"),
    PrivateName("aiokafka", "aiokafka.AIOKafkaConsumer", "_fetch_max_wait_ms"),
    # faust-streaming: the consumer thread and consumer we subclass, and the commit bookkeeping we share
    PrivateName("faust-streaming", "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread",
                "_create_worker_consumer", ("self", "transport")),
    PrivateName("faust-streaming", "faust.transport.drivers.aiokafka.Consumer", "_new_consumer_thread", ("self",)),
    PrivateName("faust-streaming", _CONSUMER, "_drain_messages", ("self", "fetcher")),
    PrivateName("faust-streaming", _CONSUMER, "_wait_next_records", ("self", "timeout")),
    PrivateName("faust-streaming", _CONSUMER, "_add_gap", ("self", "tp", "offset_from", "offset_to")),
    PrivateName("faust-streaming", _CONSUMER, "_new_offset", ("self", "tp")),
    *(PrivateName("faust-streaming", _CONSUMER, name) for name in (
        "_read_offset", "_commit_every", "_n_acked", "_buffered_partitions", "_committed_offset", "_acked",
        "_acked_index", "_gap", "_waiting_for_ack")),
    PrivateName("faust-streaming", "faust.types.tuples", "ack_lock"),
    PrivateName("faust-streaming", "faust.App", "_new_transport", ("self",)),
    # mode-streaming: the services' stopped event, read on every fetch
    PrivateName("mode-streaming", "mode.Service", "_stopped"),
)
check_private_names(PRIVATE_NAMES)

from aiokafka.consumer import fetcher as aiokafka_fetcher  # noqa: E402 - after the check, which names what broke
from faust.transport.consumer import CONSUMER_FETCHING  # noqa: E402
from faust.transport.drivers import aiokafka as faust_aiokafka  # noqa: E402
from faust.types.tuples import ack_lock  # noqa: E402
from mode import Service  # noqa: E402
from mode.utils.futures import notify  # noqa: E402

_Fetched = aiokafka_fetcher.PartitionRecords  # aiokafka's own, kept for every consumer not asking for raw records

# one fetch: each partition's records (as aiokafka parsed them: offset, key, value, timestamp in ms,
# headers; no topic or partition, that is the key), in offset order
Fetch = dict[TP, list[Any]]
BatchHandler = Callable[[Fetch], Awaitable[None]]


def raw_values(value: bytes | None) -> bytes | None:
    """The value as fetched. As an aiokafka consumer's ``value_deserializer`` it also asks for
    :class:`RawPartitionRecords` (once :func:`install_raw_records` ran); without that, it is what no
    deserializer does."""
    return value


class RawPartitionRecords(_Fetched):
    """One partition's share of a fetch, yielding the records aiokafka's C parser made.

    aiokafka copies each parsed record into a ``ConsumerRecord`` (a dataclass of 11 fields, built in
    Python), and its iterator adds a Python ``__next__`` per record. Both cost the consumer thread, which
    holds the GIL while it parses a fetch. ``tests/unit/test_transport.py`` shows both yield the same
    records. Batches, control batches, aborted transactions and the next fetch offset are aiokafka's own code.
    """

    def __iter__(self) -> Any:
        return self._records_iterator or iter(())  # the generator itself: no Python __next__ per record

    def _consumer_record(self, tp: Any, record: Any) -> Any:
        return record


def _partition_records(tp: Any, records: Any, aborted: Any, fetch_offset: int, key_deserializer: Any,
                       value_deserializer: Any, *rest: Any) -> Any:
    cls = RawPartitionRecords if value_deserializer is raw_values else _Fetched
    return cls(tp, records, aborted, fetch_offset, key_deserializer, value_deserializer, *rest)


_partition_records.__wrapped__ = _Fetched  # type: ignore[attr-defined] - it stands in for aiokafka's class


def install_raw_records() -> None:
    """Let consumers whose ``value_deserializer`` is :func:`raw_values` get :class:`RawPartitionRecords`.

    aiokafka's fetcher builds each partition's records with its module's ``PartitionRecords``; this puts a
    function there that picks the class by the consumer's deserializer, so every other consumer in the
    process keeps ``ConsumerRecord``. Idempotent.
    """
    aiokafka_fetcher.PartitionRecords = _partition_records


def one_run(offsets: list[int]) -> bool:
    """Whether sorted, distinct ``offsets`` are one run of consecutive numbers (10, 11, 12, ...)."""
    return bool(offsets) and offsets[-1] - offsets[0] + 1 == len(offsets)


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's thread that runs aiokafka, with the app's ``fetch_max_wait_ms`` and raw records
    (:class:`RawPartitionRecords`).

    aiokafka keeps one fetch in flight per broker. Faust asks the broker to hold a fetch up to
    1.5 s when none of its partitions has anything new, and a fetch holds only the partitions
    whose fetched records are used up. So while a worker catches up, a fetch sent for
    partitions that are at their end blocks every other partition until it times out, far
    longer than parsing a fetch takes. A short wait bounds that; an idle worker sends a few
    more empty fetches a second.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # both read when the consumer starts its fetcher
        install_raw_records()
        consumer._value_deserializer = raw_values
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = int(wait_ms)
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """The aiokafka consumer of Faust, with one handler call per fetch."""

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs inside Faust's fetcher
        handler: BatchHandler | None = getattr(self.app, "batch_handler", None)
        if handler is None:  # nothing registered: Faust's own per-message delivery
            await super()._drain_messages(fetcher)
            return
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        commit_every = self._commit_every
        waited = m.STAGE_SECONDS.labels("fetch.wait")
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                t0 = time.perf_counter()
                records, active = await self._wait_next_records(1.0)
                waited.inc(time.perf_counter() - t0)
                batch: Fetch = {}
                if records and not self.should_stop:
                    if self.flow_active:
                        batch = await self._take(records, active, read_offset)
                    else:  # what Faust's getmany does when flow stopped during the fetch (a rebalance),
                        try:  # and as it does, a failed seek (partitions gone mid-rebalance) is only logged
                            await self.perform_seek()
                        except Exception as exc:
                            self.log.warning(f"exception performing seek when flow not active {exc}")
                self.diag.unset_flag(CONSUMER_FETCHING)
                await asyncio.sleep(0)  # let the loop breathe between fetches (health, timers, rebalances)
                if not batch or self.should_stop:
                    continue
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await handler(batch)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def _take(self, records: Any, active: set[TP] | None, read_offset: Any) -> Fetch:
        """The records of a fetch not read before, per partition; advances the read offsets."""
        batch: Fetch = {}
        for tp, recs in records.items():
            if not recs or not (active is None or tp in active or tp in self._buffered_partitions):
                continue
            r_offset = read_offset.get(tp)
            if r_offset is not None and recs[0].offset < r_offset:  # records come in offset order
                recs = [r for r in recs if r.offset >= r_offset]
                if not recs:
                    continue
            contiguous = recs[-1].offset - recs[0].offset == len(recs) - 1 and not (
                r_offset and recs[0].offset - r_offset > 1)
            if not contiguous and self.app.topics.acks_enabled_for(tp.topic):
                # offsets that will never come (compaction, retention, aborted transactions): Faust's
                # commit skips a registered gap instead of waiting for acks of them forever
                prev = r_offset
                for r in recs:
                    if prev and r.offset - prev > 1:
                        await self._add_gap(tp, prev + 1, r.offset)
                    prev = r.offset
            read_offset[tp] = recs[-1].offset
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            batch[tp] = recs
        return batch

    def ack_offsets(self, tp: TP, offsets: list[int]) -> int:
        """Acknowledge records of ``tp`` by offset, as :meth:`Consumer.ack` does one message; returns how
        many were new. Faust commits up to the highest offset below which every record is acked."""
        if not offsets or not self.app.topics.acks_enabled_for(tp.topic):
            return 0
        with ack_lock:
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            new = [o for o in offsets if (committed is None or o >= committed) and o not in index]
            index.update(new)
            self._acked[tp].extend(new)
            self._n_acked += len(new)
            notify(self._waiting_for_ack)
            return len(new)

    def _new_offset(self, tp: TP) -> int | None:
        """Faust's, with a fast path for the usual case: at every commit Faust walks each acked offset in
        Python to find the first run of consecutive ones, and here they are almost always one run."""
        acked, index = self._acked[tp], self._acked_index[tp]
        if acked and not self._gap[tp] and len(index) == len(acked):  # no gap registered, no duplicates
            acked.sort()
            if one_run(acked):
                committed = self._committed_offset[tp]
                if committed and acked[0] - committed > 1:  # what Faust does: wait for the head of the queue
                    return None
                last = acked[-1]
                index.difference_update(acked)
                acked.clear()
                return last + 1
        return super()._new_offset(tp)

    def owns(self, tp: TP) -> bool:
        """Whether ``tp`` is still assigned to this consumer (a fetch may outlive a rebalance)."""
        return tp in self.assignment()


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose consumer delivers whole fetches to ``app.batch_handler``."""

    batch_handler: BatchHandler | None = None
    fetch_max_wait_ms: int | None = None  # None: Faust's 1500

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)
