"""Ranking metrics for labelled anomaly scores, computed with NumPy (no scikit-learn).

Both follow scikit-learn's definitions, so numbers are comparable with published results:
``roc_auc`` is the Mann-Whitney statistic with tied scores given their average rank, and
``average_precision`` is sum over distinct thresholds of ``(R_n - R_{n-1}) * P_n``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _check(y: ArrayLike, s: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels (0/1) and scores to flat arrays of equal length."""
    yy = np.asarray(y).ravel()
    ss = np.asarray(s, dtype=np.float64).ravel()
    if yy.shape != ss.shape:
        raise ValueError(f"y and s differ in length: {yy.shape[0]} != {ss.shape[0]}")
    if not np.all((yy == 0) | (yy == 1)):
        raise ValueError("y must be binary (0 = normal, 1 = anomaly)")
    if np.isnan(ss).any():
        raise ValueError("scores contain NaN")
    return yy.astype(bool), ss


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks of ``s``, ties sharing the average of the ranks they span."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    run = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = avg[run]
    return ranks


def roc_auc(y: ArrayLike, s: ArrayLike) -> float:
    """Area under the ROC curve: P(score of a random anomaly > score of a random normal), ties count 1/2."""
    yy, ss = _check(y, s)
    n_pos = int(yy.sum())
    n_neg = yy.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC-AUC needs both classes")
    ranks = _average_ranks(ss)
    return float((ranks[yy].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(y: ArrayLike, s: ArrayLike) -> float:
    """Average precision, sum_n (R_n - R_{n-1}) * P_n over distinct score thresholds (scikit-learn's definition)."""
    yy, ss = _check(y, s)
    n_pos = int(yy.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one anomaly")
    order = np.argsort(-ss, kind="mergesort")
    s_desc = ss[order]
    y_desc = yy[order].astype(np.float64)
    # Last index of each group of tied scores: one threshold per distinct score.
    last = np.r_[np.flatnonzero(s_desc[1:] != s_desc[:-1]), s_desc.size - 1]
    tp = np.cumsum(y_desc)[last]
    predicted = last + 1.0
    precision = tp / predicted
    recall = tp / n_pos
    d_recall = np.diff(np.r_[0.0, recall])
    return float(np.sum(d_recall * precision))


def human_duration(seconds: float | None) -> str:
    """A time to detect as a person reads it: seconds under two minutes, then minutes, hours, days.

    Examples:
        >>> [human_duration(s) for s in (None, 0, 42.4, 119, 600, 5400, 9000, 86_400 * 3.25)]
        ['-', '0 s', '42 s', '119 s', '10 min', '90 min', '2.5 h', '3.2 d']
    """
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.1f} d"
