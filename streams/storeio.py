"""The worker's blocking calls (store, and the broker's alert scan) off the event loop, retried while
the service is away, and the one failure that ends the worker's writes.

The store's clients block: each call runs on an I/O thread, the writer's, or the events lane's
when the worker has a connection of its own for the events (a server's; the embedded store is
one session per process, so both share one thread). A call failing with a transient error (the
service away, slow or behind) is retried with backoff while consumption waits (no unbounded
buffer, no drop); the store is reported up only when both connections are. An error of the data
(:class:`~streams.sinks.base.StoreDataError`) is never retried: the writer isolates the rows at
fault (:mod:`streams.quarantine`) and goes on.

A failure (an error not retried, a revoke that could not wait) is for good: nothing more is
stored, checkpointed or acked by this worker, which is crashed so the group moves its partitions
on. Records are acked only by stored checkpoints, so their next owners re-score everything after
the last one: nothing is lost, at the price of re-scoring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streams import metrics as m
from streams.sinks.base import StoreError

log = logging.getLogger("spyglass.worker")


class StoreIO:
    """The I/O threads, their retries, the store's health, and the worker's failure."""

    def __init__(self, health: m.Health, *, events_thread: bool = False,
                 on_failure: Callable[[BaseException], Any] | None = None) -> None:
        self.health = health
        self.stopping = False  # shutting down: a failing call is given up, not retried
        self.failed: BaseException | None = None
        self._on_failure = on_failure
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spyglass-store")
        self._events_io = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="spyglass-store-events")
                           if events_thread else self._io)
        self._store_errors: dict[bool, str] = {}  # by connection (True: the events lane's): the last error

    async def call(self, fn: Callable[[], Any], what: str, where: dict[str, Any] | None = None,
                   retry: tuple[type[Exception], ...] = (StoreError,), *, events: bool = False) -> Any:
        """``fn()`` on the I/O thread (``events``: the events lane's), retried with backoff on ``retry`` errors
        (consumption waits meanwhile)."""
        loop = asyncio.get_running_loop()
        store = StoreError in retry
        delay = 0.2
        while True:
            try:
                out = await loop.run_in_executor(self._events_io if events else self._io, fn)
            except retry as exc:
                if self.stopping or self.failed is not None:  # give up: the next owner re-scores
                    raise
                if isinstance(exc, StoreError) and not exc.transient:  # the data's: retrying cannot help
                    raise
                if isinstance(exc, StoreError):
                    self._store_errors[events] = f"{what}: {exc}"
                    self._store_health()
                log.error(("store write" if isinstance(exc, StoreError) else what) + " failed; retrying "
                          "(consumption paused)",
                          extra={"stage": what, "error": str(exc), "retry_in_s": delay, **(where or {})})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if store:
                if self._store_errors.pop(events, None) is not None:
                    log.info("store is back", extra={"stage": what})
                self._store_health()
            return out

    async def once(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the writer's I/O thread, not retried (best-effort writes)."""
        return await asyncio.get_running_loop().run_in_executor(self._io, fn)

    def _store_health(self) -> None:
        """The store is up once both connections are (the writer's and the events lane's)."""
        self.health.store_error = "; ".join(self._store_errors.values()) or None
        m.STORE_UP.set(0 if self._store_errors else 1)

    def fail(self, exc: BaseException, where: dict[str, Any] | None = None) -> None:
        """Stop storing, checkpointing and acking for good; the worker is crashed (if it said how) and restarts."""
        if self.failed is not None:
            return
        if isinstance(exc, asyncio.CancelledError):  # raised again by flush() and enqueue: not a cancel there
            exc = RuntimeError("the writer was cancelled (shutdown) with writes pending")
        self.failed = exc
        self.health.failed = repr(exc)
        log.error("the writer failed; nothing more is stored or checkpointed by this worker",
                  extra={"error": repr(exc), **(where or {})})
        if self._on_failure is not None:
            self._on_failure(exc)

    def check(self) -> None:
        """Raise the failure, if there was one: nothing that depends on earlier writes may go on."""
        if self.failed is not None:
            raise self.failed

    def close(self) -> None:
        self._io.shutdown(wait=True)
        self._events_io.shutdown(wait=True)
