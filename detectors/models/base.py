"""The online anomaly model protocol, after River's: score before learn, higher is more anomalous.

River's anomaly detectors (``river.anomaly.HalfSpaceTrees``, ...) satisfy :class:`AnomalyModel`, so one
can stand in for a model of this package. The project's models add the batch variants
(:class:`BatchAnomalyModel`) that run the same score-then-learn loop inside a Numba kernel, with
the scores the per-row path gives.

Hyper-parameters are ``__init__`` arguments stored under the same names; randomness only
through ``seed``; mutable state in private attributes, so a model pickles whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class AnomalyModel(Protocol):
    """A model learned one observation at a time (River's ``AnomalyDetector``)."""

    def learn_one(self, x: dict[str, float]) -> None:
        """Update the model with one observation."""
        ...

    def score_one(self, x: dict[str, float]) -> float:
        """Anomaly score of one observation; higher is more anomalous. Does not learn."""
        ...


@runtime_checkable
class BatchAnomalyModel(AnomalyModel, Protocol):
    """An :class:`AnomalyModel` that also takes rows of a matrix (columns in a fixed feature order)."""

    def score_learn_many(self, X: np.ndarray) -> np.ndarray:
        """Score each row before learning it, in order: what ``score_one`` then ``learn_one`` per row give."""
        ...

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Scores of the rows against the current model, without learning."""
        ...
