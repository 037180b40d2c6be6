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

Messages are acknowledged with :meth:`Consumer.ack`, as Faust's streams do, so Faust commits
an offset only once the handler has said every record up to it is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode import Service

BatchHandler = Callable[[list[Message]], Awaitable[None]]


class BatchConsumer(faust_aiokafka.Consumer):
    """The aiokafka consumer of Faust, with one handler call per fetch."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs inside Faust's fetcher
        handler: BatchHandler | None = getattr(self.app, "batch_handler", None)
        if handler is None:  # nothing registered: Faust's own per-message delivery
            await super()._drain_messages(fetcher)
            return
        getmany = self.getmany
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        read_offset = self._read_offset
        commit_every = self._commit_every
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batch: list[Message] = []
                async for tp, message in getmany(timeout=1.0):
                    r_offset = read_offset.get(tp)
                    if r_offset is None or message.offset >= r_offset:
                        if r_offset and message.offset - r_offset > 1 and self.app.topics.acks_enabled_for(tp.topic):
                            # offsets that will never come (compaction, retention, aborted transactions):
                            # Faust's commit skips the gap instead of waiting for acks of them forever
                            await self._add_gap(tp, r_offset + 1, message.offset)
                        batch.append(message)
                        read_offset[tp] = message.offset
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

    def owns(self, tp: TP) -> bool:
        """Whether ``tp`` is still assigned to this consumer (a fetch may outlive a rebalance)."""
        return tp in self.assignment()


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose consumer delivers whole fetches to ``app.batch_handler``."""

    batch_handler: BatchHandler | None = None

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)
