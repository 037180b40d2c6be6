"""An insert that isolates the rows the store refuses for their data, so one poison row never blocks the rest.

The store says whether an error is the data's (:class:`~streams.sinks.base.StoreDataError`: a value out of
its type's range, an insert spanning too many partitions) or transient (the store away or behind). A piece
refused for its data is split in halves, and the halves inserted, until every refused row is alone: those
rows are *quarantined* (the writer dead-letters them with the reason) and every other row is stored. An
insert spanning too many partitions is stored the same way, in pieces.

A transient error ends :meth:`Isolating.run` with the pieces not yet stored kept, so the writer's retry
(:meth:`streams.storeio.StoreIO.call`) calls it again and it goes on from there; the piece that failed is
first passed through ``before_retry`` (the failed try may have landed: the events writer drops the rows
the store holds already).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from schemas.block import EventBlock
from streams.sinks.base import StoreDataError

T = TypeVar("T")


class Isolating(Generic[T]):
    """Insert ``whole`` (a list of rows or of blocks) with ``insert``; the rows refused alone end in ``refused``."""

    def __init__(self, whole: T, insert: Callable[[T], object], size: Callable[[T], int],
                 halves: Callable[[T], tuple[T, T]], before_retry: Callable[[T], T] | None = None) -> None:
        self._insert = insert
        self._size = size
        self._halves = halves
        self._before_retry = before_retry
        self._pending: list[T] = [whole] if size(whole) else []  # a stack: the next piece is the last
        self._retrying = False
        self.refused: list[tuple[T, StoreDataError]] = []  # each refused row (a piece of one), and why
        self.pieces = 0  # inserts that stored rows

    def run(self) -> None:
        """Insert every pending piece; raises a transient store error, leaving the rest pending for a retry."""
        while self._pending:
            piece = self._pending[-1]
            if self._retrying and self._before_retry is not None:
                piece = self._pending[-1] = self._before_retry(piece)
            self._retrying = True  # until this piece is done: an error below may follow a write that landed
            if not self._size(piece):
                self._pending.pop()
                continue
            try:
                self._insert(piece)
            except StoreDataError as exc:
                self._pending.pop()
                self._retrying = False  # refused whole: nothing of it landed
                if self._size(piece) <= 1:
                    self.refused.append((piece, exc))
                else:
                    first, second = self._halves(piece)
                    self._pending += [second, first]
                continue
            self._pending.pop()
            self._retrying = False
            self.pieces += 1


def halves_of_list(rows: Sequence[T]) -> tuple[list[T], list[T]]:
    """A list in two halves (for :class:`Isolating`)."""
    mid = len(rows) // 2
    return list(rows[:mid]), list(rows[mid:])


def halves_of_blocks(blocks: list[EventBlock]) -> tuple[list[EventBlock], list[EventBlock]]:
    """Blocks in two halves by rows: the list cut at a block, or the one block cut in two (for :class:`Isolating`)."""
    blocks = [b for b in blocks if len(b)]
    if len(blocks) > 1:
        return halves_of_list(blocks)
    (b,) = blocks
    mid = len(b) // 2
    return [b.slice(0, mid)], [b.slice(mid, len(b))]


def rows_of_blocks(blocks: list[EventBlock]) -> int:
    return sum(map(len, blocks))
