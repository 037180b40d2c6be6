"""Calibrated surprise: how unusual an observation is for its entity, on one scale for every detector.

A detector that models what is normal for an entity reports a finding's ``surprise``: minus the
base-10 logarithm of the tail probability of what it saw under that entity's learned model (shrunk
toward its peer group while the entity is young). A surprise of 4 means "about 1 in 10,000 for this
entity"; it means the same for a key's request rate, a principal's read volume or an agent's tool,
so alerts of different detectors can be ranked against each other, and a threshold on it is a
false-alarm budget: an entity observed N times a day crosses a surprise of s by chance about
N * 10**-s times a day.

Examples:
    >>> round(poisson_surprise(30, 2.0), 1)
    24.2
    >>> poisson_surprise(2, 2.0) < 1
    True
    >>> one_in(4.3)
    '1 in 20,000'
    >>> score_of(6.0, asset=3) > score_of(3.0, asset=0)
    True
"""

from __future__ import annotations

import math

import numpy as np

from detectors.kernels import lgamma_many

LN10 = math.log(10.0)


def poisson_surprise(k: float, mu: float) -> float:
    """-log10 P(X >= k) for X ~ Poisson(mu): how surprising ``k`` events are where ``mu`` were expected."""
    if k <= 0 or k <= mu:
        return 0.0
    mu = max(mu, 1e-9)
    # log P(X >= k) ~ log P(X = k) + log(1 / (1 - mu / (k + 1))), the tail's geometric bound (tight for k >> mu)
    log_pk = k * math.log(mu) - mu - math.lgamma(k + 1)
    log_tail = log_pk - math.log1p(-min(mu / (k + 1), 0.999))
    return max(0.0, -log_tail / LN10)


def poisson_surprise_many(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``poisson_surprise`` over arrays (element-wise)."""
    k = np.asarray(k, dtype=np.float64)
    mu = np.maximum(np.asarray(mu, dtype=np.float64), 1e-9)
    lg = lgamma_many(k.ravel() + 1.0).reshape(k.shape)  # math.lgamma's bits, compiled (no per-element Python)
    log_pk = k * np.log(mu) - mu - lg
    log_tail = log_pk - np.log1p(-np.minimum(mu / (k + 1), 0.999))
    out = np.maximum(0.0, -log_tail / LN10)
    return np.where((k <= 0) | (k <= mu), 0.0, out)


def normal_surprise(z: float) -> float:
    """-log10 of the upper tail of a standard normal beyond ``z`` (0 for z <= 0)."""
    if z <= 0:
        return 0.0
    return -math.log10(max(0.5 * math.erfc(z / math.sqrt(2.0)), 1e-300))


def rate_surprise(new: float, total: float, prior_rate: float, prior_weight: float = 20.0) -> float:
    """Surprise of one more novelty (a new IP, tool, dataset...) for an entity that showed ``new`` novelties
    in ``total`` observations, its own rate shrunk toward its peers' ``prior_rate`` (worth ``prior_weight``
    observations). An entity whose every request brings a new IP (a NAT pool, a proxy) is not surprised."""
    p = (new + prior_rate * prior_weight) / (total + prior_weight)
    return -math.log10(min(max(p, 1e-12), 1.0))


def one_in(surprise: float) -> str:
    """A surprise as an analyst reads it: '1 in 20,000'."""
    n = 10 ** min(surprise, 12.0)
    digits = max(0, int(math.floor(math.log10(max(n, 1)))) - 1)
    return f"1 in {round(n, -digits):,.0f}"


def score_of(surprise: float, asset: int = 0) -> float:
    """An alert score in [0, 1) from a surprise and the asset's weight (0: ordinary .. 3: restricted/admin).

    3 (1 in a thousand) on an ordinary asset is about 0.55 (medium); 8 (1 in 10**8) about 0.8 (high);
    a sensitive asset adds up to 0.15, so severity follows both how unusual and what was touched.
    """
    base = 1.0 - math.exp(-max(surprise, 0.0) / 3.0)
    return min(0.999, base * 0.85 + 0.05 * max(0, min(asset, 3)))


def rate_surprise_many(new: np.ndarray, total: np.ndarray, prior_rate: np.ndarray,
                       prior_weight: float = 20.0) -> np.ndarray:
    """``rate_surprise`` over arrays (element-wise)."""
    p = (np.asarray(new, dtype=np.float64) + np.asarray(prior_rate, dtype=np.float64) * prior_weight) / (
        np.asarray(total, dtype=np.float64) + prior_weight)
    return -np.log10(np.clip(p, 1e-12, 1.0))


def surprise_from_score(score: float, cap: float = 5.0) -> float:
    """A conservative surprise for a finding that reports only a score: ``score_of`` inverted as if the asset
    weighed the most (an asset's weight says what was touched, not how unusual it was), at most ``cap``.

    A detector that does not model its entity gives no tail probability; reading its score this way never
    makes its finding look more unusual than the score allows.

    Examples:
        >>> surprise_from_score(0.15)
        0.0
        >>> round(surprise_from_score(score_of(3.0, asset=3)), 2)
        3.0
        >>> surprise_from_score(1.0)
        5.0
    """
    base = (score - 0.15) / 0.85
    if base <= 0.0:
        return 0.0
    return min(cap, -3.0 * math.log1p(-min(base, 1.0 - 1e-12)))
