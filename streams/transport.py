"""Faust's Kafka consumer, delivering whole fetches to the worker instead of one message at a time.

Faust hands each fetched message to its agents on its own: per message it starts two tasks
(``wait_first(callback(message), suspend_flow.wait())``), routes it through the conductor
and queues it on a stream, which ``spyglass bench stream`` profiled at about half of the
worker's main thread, more than decoding and scoring together. The scorer works on batches
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
monitor call for every record: about a fifth of the worker's main thread in py-spy), and
without aiokafka's last per-record step either: :class:`RawPartitionRecords` hands on the
records its C parser made (offset, key, value, timestamp, headers; the partition is the
fetch's key), not a ``ConsumerRecord`` copied from each.
Records are acknowledged in bulk with :meth:`BatchConsumer.ack_offsets`, which keeps the
same bookkeeping as Faust's ``Consumer.ack`` (under the same lock), so Faust commits an
offset only once the handler has said every record up to it is safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from aiokafka.consumer import fetcher as aiokafka_fetcher
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ack_lock
from mode import Service
from mode.utils.futures import notify

from streams import metrics as m

# one fetch: each partition's records (as aiokafka parsed them: offset, key, value, timestamp in ms,
# headers; no topic or partition, that is the key), in offset order
Fetch = dict[TP, list[Any]]
BatchHandler = Callable[[Fetch], Awaitable[None]]


def raw_values(value: bytes | None) -> bytes | None:
    """The value as fetched. As an aiokafka consumer's ``value_deserializer`` it also asks for
    :class:`RawPartitionRecords` (once :func:`install_raw_records` ran); without that, it is what no
    deserializer does."""
    return value


class RawPartitionRecords(aiokafka_fetcher.PartitionRecords):
    """One partition's share of a fetch, yielding the records aiokafka's C parser made.

    aiokafka copies each parsed record into a ``ConsumerRecord`` (a dataclass of 11 fields, built in
    Python), and its iterator adds a Python ``__next__`` per record. Both cost the consumer thread, which
    holds the GIL while it parses a fetch: iterating a 5,000-record fetch in memory took 2.4 µs a record
    with them, 0.5 µs without; a consumer reading ``bench stream``'s topics used 3.8-4.3 µs of CPU a
    record with them, 2.9-3.4 µs without (README, Results). ``tests/unit/test_transport.py`` shows both
    yield the same records. Batches, control batches, aborted transactions and the next fetch offset are
    aiokafka's own code.
    """

    def __iter__(self) -> Any:
        return self._records_iterator or iter(())  # the generator itself: no Python __next__ per record

    def _consumer_record(self, tp: Any, record: Any) -> Any:
        return record


_PartitionRecords = aiokafka_fetcher.PartitionRecords


def _partition_records(tp: Any, records: Any, aborted: Any, fetch_offset: int, key_deserializer: Any,
                       value_deserializer: Any, *rest: Any) -> Any:
    cls = RawPartitionRecords if value_deserializer is raw_values else _PartitionRecords
    return cls(tp, records, aborted, fetch_offset, key_deserializer, value_deserializer, *rest)


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
    partitions that are at their end blocked every other partition until it timed out:
    ``spyglass bench stream`` saw waits of 0.45-1.64 s for the next fetch where parsing a fetch
    took its thread 12-16 ms. A short wait bounds that; an idle worker sends a few more empty
    fetches a second.
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
