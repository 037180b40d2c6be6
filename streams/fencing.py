"""Owner epochs: a worker that lost a partition (paused past its session timeout, say) writes nothing more for it.

Kafka's group moves a partition to another worker once its owner stops heartbeating, but a paused owner does
not know that until it runs again, and then goes on with the writes it had queued. ClickHouse has no
transactions and no conditional insert, so the store cannot refuse them by itself; instead every owner of a
partition *claims* it in ``partition_owners`` when it takes it on, with the next epoch (the highest so far plus
one) and a random claim id, and the claim with the highest ``(epoch, claim_id)`` is the owner (claim, then read
back at the first check, before any write: of two racing claims of one epoch exactly one wins, and both see
which).

Before each write for a partition (a publish, an alerts or events insert, a checkpoint) the worker checks, on
the connection and thread that writes, that its claim is still the owner's. A check holds for a *lease* shorter
than the part of the session timeout a live worker's heartbeat leaves (:data:`LEASE_FRACTION`): a worker that
was paused between a check and a write finds the lease run out (the monotonic clock runs on while a process is
stopped) and checks again, so it sees the newer claim. A worker that finds a partition claimed by another
marks it *fenced*: nothing more is published, stored, checkpointed or acked for it until it is revoked (the
group's rebalance follows) and, if ever assigned again, claimed anew. Checkpoints record the epoch they were
written under and a restore takes the highest epoch first.

What remains (stated in ``docs/operations.md``): a pause that falls between the check and the moment the
write's bytes reach the server (or the producer's send of an already queued publish) lets that one write land
late; rows are keyed by id, so it is a duplicate row until a merge, never a wrong one.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from schemas.errors import SpyglassError
from streams import metrics as m
from streams.records import TP
from streams.sinks.base import Store
from streams.sinks.clickhouse import sql_string

log = logging.getLogger("spyglass.worker")

LEASE_FRACTION = 0.25  # of the session timeout: a check is trusted this long (a heartbeat every quarter of it)


class Fenced(SpyglassError):
    """Another worker claimed these partitions since this one did: it must write nothing more for them."""

    def __init__(self, tps: Iterable[TP]) -> None:
        self.tps = frozenset(tps)
        super().__init__("fenced: another worker claimed " + ", ".join(f"{t}[{p}]" for t, p in sorted(self.tps)))


class OwnerEpochs:
    """This worker's claims, by partition, and the partitions it found fenced. Thread-safe: the writer's and the
    events lane's I/O threads check it, each on its own connection."""

    def __init__(self, store: Store, group_id: str, worker: str, lease_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.group_id = group_id
        self.worker = worker
        self.lease_s = lease_s
        self.clock = clock
        self.claims: dict[TP, tuple[int, str]] = {}  # partition -> (epoch, claim id) this worker holds
        self.fenced: dict[TP, int] = {}  # partition -> the epoch that fenced it
        self._checked_at = float("-inf")  # monotonic time the last check *started*
        self._lock = threading.Lock()

    def epoch(self, tp: TP) -> int:
        """The epoch this worker holds ``tp`` under (0: no claim)."""
        claim = self.claims.get(tp)
        return claim[0] if claim is not None else 0

    def _owners(self, store: Store, tps: Iterable[TP]) -> dict[TP, tuple[int, str]]:
        tps = sorted(set(tps))
        if not tps:
            return {}
        where = " OR ".join(f"(topic = {sql_string(t)} AND partition = {int(p)})" for t, p in tps)
        rows = store.query(
            "SELECT topic, partition, max(epoch), argMax(claim_id, (epoch, claim_id)) "  # noqa: S608 - quoted
            f"FROM {store.database}.partition_owners WHERE group_id = {sql_string(self.group_id)} AND ({where}) "
            "GROUP BY topic, partition")
        return {(str(t), int(p)): (int(e), str(c)) for t, p, e, c in rows}

    def claim(self, tp: TP, store: Store | None = None) -> int:
        """Claim ``tp`` with the next epoch and return it (blocking: on an I/O thread). Two round trips: the
        highest epoch, then the insert; the read back that tells a racing claim of the same epoch is the next
        check's, which asks the store whatever its lease (before any write for ``tp``)."""
        store = store if store is not None else self.store
        current = self._owners(store, [tp]).get(tp, (0, ""))
        epoch, claim_id = current[0] + 1, secrets.token_hex(16)
        store.insert("partition_owners", {
            "group_id": [self.group_id], "topic": [tp[0]], "partition": [tp[1]], "epoch": [epoch],
            "claim_id": [claim_id], "worker": [self.worker], "claimed_at": [datetime.now(UTC).replace(microsecond=0)]})
        with self._lock:
            self.claims[tp] = (epoch, claim_id)
            self.fenced.pop(tp, None)
            self._checked_at = float("-inf")  # the next check reads the claims back
        log.info("partition claimed", extra={"topic": tp[0], "partition": tp[1], "epoch": epoch})
        return epoch

    def check(self, tps: Iterable[TP], store: Store | None = None) -> None:
        """Raise :class:`Fenced` for those of ``tps`` another worker claimed since this one did (blocking: call
        it on the thread and connection that writes next, right before the write). The store is asked again
        once the last check's lease ran out; every claim this worker holds is checked at once."""
        tps = set(tps)
        with self._lock:
            lost = tps & self.fenced.keys()
            if lost:
                raise Fenced(lost)
            if self.clock() - self._checked_at < self.lease_s:
                return
            started = self.clock()
            held = dict(self.claims)
            owners = self._owners(store if store is not None else self.store, held)
            self._fence({tp: owners.get(tp, (0, ""))[0] for tp, claim in held.items()
                         if owners.get(tp) != claim})
            self._checked_at = started
            lost = tps & self.fenced.keys()
        if lost:
            raise Fenced(lost)

    def trusted(self) -> bool:
        """Whether the last check's lease still holds (a check now would not ask the store)."""
        return self.clock() - self._checked_at < self.lease_s

    def _fence(self, lost: dict[TP, int]) -> None:
        for tp, by_epoch in lost.items():
            mine = self.claims.pop(tp, (0, ""))[0]
            if tp in self.fenced:
                continue
            self.fenced[tp] = by_epoch
            m.PARTITIONS_FENCED.labels(tp[0]).inc()
            log.error("partition fenced: another worker claimed it since this one did (this worker was paused or "
                      "cut off past its session timeout); nothing more is written or acked for it here",
                      extra={"topic": tp[0], "partition": tp[1], "epoch": mine, "claimed_epoch": by_epoch})

    def release(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: forget their claims and fences (a new assignment claims anew)."""
        with self._lock:
            for tp in tps:
                self.claims.pop(tp, None)
                self.fenced.pop(tp, None)

    def is_fenced(self, tp: TP) -> bool:
        return tp in self.fenced
