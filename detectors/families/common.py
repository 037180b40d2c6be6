"""Helpers the families share: time units, per-batch ranks and warm-up counts, number formatting."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.state import Arrays

MIN = 60_000  # milliseconds
HOUR = 3_600_000
DAY = 86_400_000


def idle_cutoff(day_start: int, config: Any) -> int:
    """The event time before which an entity unseen since is idle, at the compaction of ``day_start``."""
    return day_start - int(config.idle_evict_days * DAY)


def count_before(arrays: Arrays, ids: np.ndarray, ts: np.ndarray, rank: np.ndarray | None = None) -> np.ndarray:
    """Warm-up bookkeeping: add a batch to the per-entity ``n`` and ``first`` (first-seen time).

    Returns each event's count of earlier events of its entity (in arrival order); ``rank`` is
    ``rank_in_batch(ids)`` when the caller has it already.
    """
    n = arrays["n"]
    uniq, first_ix, counts = np.unique(ids, return_index=True, return_counts=True)
    fresh = n[uniq] == 0
    arrays["first"][uniq[fresh]] = ts[first_ix[fresh]]
    before = n[ids] + (rank_in_batch(ids) if rank is None else rank)
    n[uniq] += counts
    return before


def earlier_flagged(ids: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Each element's count of earlier flagged elements with an equal id in ``ids`` (arrival order)."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    x = flag[order].astype(np.int64)
    cs = np.cumsum(x) - x
    g = ids[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    out = np.empty(ids.size, dtype=np.int64)
    out[order] = cs - np.repeat(cs[starts], np.diff(np.r_[starts, ids.size]))
    return out


def rank_in_batch(ids: np.ndarray) -> np.ndarray:
    """Each element's count of earlier equal elements in ``ids`` (0 for the first occurrence)."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    _, counts = np.unique(ids[order], return_counts=True)
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank


def fmt(v: float) -> str:
    """A number for an explanation: whole above 10, two decimals below."""
    return f"{v:.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2f}"
