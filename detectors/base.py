"""The detector protocol, after River's: score before learn, higher is more anomalous."""

from __future__ import annotations

from typing import Any, Protocol


class Detector(Protocol):
    """A per-entity anomaly detector with a stable ``name`` (it appears in alerts, logs and metrics).

    Hyper-parameters are ``__init__`` arguments stored under the same names; randomness only
    through ``seed``; mutable state in private attributes, so the whole state pickles.
    """

    name: str

    def learn_one(self, x: dict[str, float]) -> None:
        """Update the model with one observation (never one that raised an alert)."""

    def score_one(self, x: dict[str, float]) -> float:
        """Anomaly score of one observation; higher is more anomalous. Does not learn."""

    def state(self) -> dict[str, Any]:
        """Everything needed to restore identical scores (checkpointing)."""
