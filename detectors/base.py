"""What the worker drives: the interface of :class:`~detectors.engine.Engine` and
:class:`~detectors.correlation.Correlator` as the scorer (:mod:`streams.scoring`) uses it.

One object scores one topic partition. The worker restores it from a checkpoint, feeds it the
partition's records in offset order, snapshots its state with the offset it reflects, and reports
its size; it never reaches past these members, so an implementation that has them can be driven.
``tests/unit/test_protocols.py`` checks that the engine and the correlator do, signatures included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from typing import Self

    from detectors.correlation import RiskEvidence
    from schemas.alerts import Alert
    from schemas.block import EventBlock
    from schemas.events import Event
    from schemas.feedback import FeedbackMark


@runtime_checkable
class PartitionEngine(Protocol):
    """The part of a partition's scoring state the worker checkpoints and reports on."""

    evicted: dict[str, int]  # entities forgotten so far, by reason (counted into a metric)

    def state(self) -> bytes:
        """The whole state as bytes: ``from_state`` of them scores the next records identically."""
        ...

    @classmethod
    def from_state(cls, blob: bytes) -> Self:
        """The object ``state()`` gave these bytes of."""
        ...

    def entities(self) -> int:
        """Entities tracked (health and checkpoint rows)."""
        ...

    def memory_bytes(self) -> int:
        """Bytes the state holds, cheap enough for every batch (a gauge)."""
        ...


@runtime_checkable
class EventEngine(PartitionEngine, Protocol):
    """Scores an event topic's partition (:class:`~detectors.engine.Engine`)."""

    scores: dict[str, float]  # event id -> its score, for the events of the last ``process`` call
    alert_principals: dict[str, str]  # alert id -> principal, for the alerts of the last ``process`` call

    def process(self, events: Sequence[Event] | EventBlock) -> list[Alert]:
        """Score a batch, learn it, and return the alerts it raised, in arrival order."""
        ...

    def apply_feedback(self, mark: FeedbackMark) -> bool:
        """Learn from an analyst's mark on one of its alerts; False when it teaches nothing."""
        ...


@runtime_checkable
class EvidenceEngine(PartitionEngine, Protocol):
    """Correlates the risk-evidence topic's partition (:class:`~detectors.correlation.Correlator`)."""

    def add(self, e: RiskEvidence) -> Alert | None:
        """Take one evidence record; the alert it completes, if any. Raises ValueError or OverflowError
        for a record it refuses (the worker dead-letters it)."""
        ...
