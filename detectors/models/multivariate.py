"""Online multivariate anomaly model: Loda-style random projections with hashed streaming histograms.

Each feature vector (e.g. per API key per minute: request count, distinct endpoints, token volume,
error rate) goes through a fixed front end — signed ``log1p`` (these features are heavy-tailed
counts and bytes), then centring and scaling by the median and IQR of a short warm-up sample — and
is projected onto ``n_projections`` sparse random directions (Pevny, *Loda: Lightweight on-line
detector of anomalies*, 2016). Each projection keeps a one-dimensional histogram with bins of
``bin_width`` robust standard deviations of that projection; bins live in a fixed-size hashed count
table, so memory is bounded (``n_projections * 2**table_bits`` floats) whatever the range of the
data. The score is the mean over projections of ``-log`` of the bin's smoothed relative frequency:
higher means rarer. Counts are cumulative by default; ``half_life`` > 0 forgets old observations
exponentially (for drifting streams). Per-vector cost is ``O(n_projections * sqrt(d))``.

The protocol is River's: ``score_one`` before ``learn_one``; ``score_learn_many`` does the same row
by row inside a Numba kernel and returns exactly the scores the per-row path would.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

__all__ = ["Loda"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_RENORM = 1e150  # rescale the count tables before the growing increment overflows


@njit(cache=True, inline="always")
def _mix64(a: np.uint64) -> np.uint64:
    """SplitMix64 finaliser: a cheap, well-mixed 64-bit hash."""
    a = (a ^ (a >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    a = (a ^ (a >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return a ^ (a >> np.uint64(31))


@njit(cache=True)
def _front(x: np.ndarray, center: np.ndarray, scale: np.ndarray, log_transform: bool, one_sided: bool,
           z: np.ndarray) -> None:
    """Signed log1p (optional), then robust standardisation, into ``z``.

    ``one_sided``: standardised values below 0 (the warm-up median) become 0, so only excess is rare.
    """
    for f in range(x.shape[0]):
        v = x[f]
        if log_transform:
            v = math.copysign(math.log1p(abs(v)), v)
        z[f] = (v - center[f]) / scale[f]
        if one_sided and z[f] < 0.0:
            z[f] = 0.0


@njit(cache=True)
def _row_buffers(X: np.ndarray, w: np.ndarray, counts: np.ndarray) -> tuple[np.uint64, np.ndarray, np.ndarray]:
    """The slot mask of the count tables, and the buffers :func:`_front` and :func:`_bins` fill for each row."""
    return np.uint64(counts.shape[1] - 1), np.empty(X.shape[1]), np.empty(w.shape[0], dtype=np.int64)


@njit(cache=True)
def _bins(z: np.ndarray, w: np.ndarray, width: np.ndarray, shift: np.ndarray, mask: np.uint64,
          slots: np.ndarray) -> None:
    """Hashed histogram slot of ``z`` in every projection."""
    k, d = w.shape
    for j in range(k):
        p = 0.0
        for f in range(d):
            p += w[j, f] * z[f]
        b = math.floor(p / width[j] + shift[j])
        if b > 4.0e18:  # keep the int64 cast defined for absurd inputs
            b = 4.0e18
        elif b < -4.0e18:
            b = -4.0e18
        key = np.uint64(np.int64(b)) * _GOLDEN + np.uint64(j + 1)
        slots[j] = np.int64(_mix64(key) & mask)


@njit(cache=True)
def _score_slots(slots: np.ndarray, counts: np.ndarray, total: float, g: float, alpha: float) -> float:
    """Mean over projections of -log smoothed relative frequency of the row's bins."""
    k = slots.shape[0]
    t = total / g + alpha
    s = 0.0
    for j in range(k):
        s -= math.log((counts[j, slots[j]] / g + alpha) / t)
    return s / k


@njit(cache=True)
def _learn_slots(slots: np.ndarray, counts: np.ndarray, total: float, g: float, growth: float) -> tuple[float, float]:
    """Add one row (its bin in every projection) to the count tables; returns the new ``(total, g)``."""
    for j in range(slots.shape[0]):
        counts[j, slots[j]] += g
    total += g
    g *= growth
    if g > _RENORM:
        counts /= g
        total /= g
        g = 1.0
    return total, g


@njit(cache=True)
def _score_learn_kernel(X: np.ndarray, center: np.ndarray, scale: np.ndarray, log_transform: bool,
                        w: np.ndarray, width: np.ndarray, shift: np.ndarray, counts: np.ndarray,
                        acc: np.ndarray, alpha: float, growth: float, learn: bool, out: np.ndarray) -> None:
    """Score each row of ``X`` into ``out``, then (if ``learn``) add it to the histograms.

    ``acc`` holds ``[total, g]``: the count tables store weights inflated by ``g`` (which grows by
    ``growth`` per learned row), so exponential forgetting costs O(1) per row instead of a sweep.
    """
    n = X.shape[0]
    mask, z, slots = _row_buffers(X, w, counts)
    total = acc[0]
    g = acc[1]
    for i in range(n):
        _front(X[i], center, scale, log_transform, False, z)
        _bins(z, w, width, shift, mask, slots)
        out[i] = _score_slots(slots, counts, total, g, alpha)
        if learn:
            total, g = _learn_slots(slots, counts, total, g, growth)
    acc[0] = total
    acc[1] = g


def _robust_scale(a: np.ndarray) -> np.ndarray:
    """Per-column IQR/1.349, falling back to the standard deviation, then to 1, where that is zero."""
    q1, q3 = np.percentile(a, [25.0, 75.0], axis=0)
    iqr = (q3 - q1) / 1.349
    sd = a.std(axis=0)
    return np.where(iqr > 1e-9, iqr, np.where(sd > 1e-9, sd, 1.0))


class Loda:
    """Streaming Loda with a log/robust front end and hashed, bounded-memory histograms.

    Parameters
    ----------
    n_projections: number of sparse random projections (each on ``ceil(sqrt(d))`` features).
    bin_width: histogram bin width, in robust standard deviations of each projection.
    warmup: rows buffered to fit the front end and bin widths; they score 0, then are learned.
    table_bits: each projection's hashed count table has ``2**table_bits`` slots.
    alpha: additive smoothing of bin counts (an empty bin scores ``log(total/alpha + 1)``).
    half_life: forget old rows with this half-life, in learned rows; 0 keeps cumulative counts.
    log_transform: apply ``sign(x) * log1p(|x|)`` before scaling (for counts, bytes, durations).
    seed: the only source of randomness (projections and bin offsets).
    """

    name = "loda"

    def __init__(self, n_projections: int = 100, bin_width: float = 1.0, warmup: int = 256, table_bits: int = 12,
                 alpha: float = 1.0, half_life: float = 0.0, log_transform: bool = True, seed: int = 42) -> None:
        if n_projections < 1 or warmup < 2 or not 4 <= table_bits <= 24:
            raise ValueError("need n_projections >= 1, warmup >= 2 and 4 <= table_bits <= 24")
        if bin_width <= 0 or alpha <= 0 or half_life < 0:
            raise ValueError("bin_width and alpha must be > 0, half_life >= 0")
        self.n_projections = n_projections
        self.bin_width = bin_width
        self.warmup = warmup
        self.table_bits = table_bits
        self.alpha = alpha
        self.half_life = half_life
        self.log_transform = log_transform
        self.seed = seed
        self._keys: list[str] | None = None
        self._buffer: list[np.ndarray] = []
        self._fitted = False
        self._center = np.empty(0)
        self._scale = np.empty(0)
        self._w = np.empty((0, 0))
        self._width = np.empty(0)
        self._shift = np.empty(0)
        self._counts = np.empty((0, 0))
        self._acc = np.array([0.0, 1.0])  # [total weight, inflation factor g]

    # -- River protocol -------------------------------------------------------------------------------

    def learn_one(self, x: dict[str, float]) -> None:
        """Learn one observation."""
        self._learn_row(self._vector(x))

    def score_one(self, x: dict[str, float]) -> float:
        """Anomaly score of one observation (higher is rarer); does not learn."""
        return self._score_row(self._vector(x))

    # -- batch path -----------------------------------------------------------------------------------

    def score_learn_many(self, X: np.ndarray) -> np.ndarray:
        """Score each row of ``X`` before learning it, in order; identical to score_one + learn_one per row."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError("X must be 2-D (rows x features)")
        self._check_width(X.shape[1])
        out = np.zeros(X.shape[0])
        i = 0
        while i < X.shape[0] and not self._fitted:
            out[i] = self._provisional_score(X[i])
            self._learn_row(X[i])
            i += 1
        if i < X.shape[0]:
            _score_learn_kernel(X[i:], self._center, self._scale, self.log_transform, self._w, self._width,
                                self._shift, self._counts, self._acc, self.alpha, self._growth(), True, out[i:])
        return out

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``X`` against the current model, without learning."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        self._check_width(X.shape[1])
        out = np.zeros(X.shape[0])
        if self._fitted:
            _score_learn_kernel(X, self._center, self._scale, self.log_transform, self._w, self._width,
                                self._shift, self._counts, self._acc, self.alpha, 1.0, False, out)
        return out

    def score_learn_gated(self, X: np.ndarray, hist: np.ndarray, hist_width: float, q: float, floor: float,
                          min_learned: int, hist_cap: float = 50_000.0,
                          one_sided: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Score each row before learning it, in order, but learn only the rows that do not exceed an adaptive
        threshold (poisoning resistance): ``max(floor, q-quantile of the learned rows' scores)``, the scores kept
        in the caller's histogram ``hist`` (bins of ``hist_width``, updated in place). No row is flagged before
        ``min_learned`` scores are in ``hist``; warm-up rows are learned and score 0 (not flagged, not in ``hist``).
        ``one_sided``: only values above the warm-up median make a row rare (features below it count as at it).

        Returns (scores, thresholds, flagged). The result does not depend on how rows are split across calls.
        """
        X = np.ascontiguousarray(X, dtype=np.float64)
        self._check_width(X.shape[1])
        n = X.shape[0]
        out, thr, flag = np.zeros(n), np.full(n, np.inf), np.zeros(n, dtype=np.bool_)
        i = 0
        while i < n and not self._fitted:
            self._learn_row(X[i])
            i += 1
        if i < n:
            _gated_kernel(X[i:], self._center, self._scale, self.log_transform, self._w, self._width, self._shift,
                          self._counts, self._acc, self.alpha, self._growth(), hist, hist_width, q, floor,
                          float(min_learned), hist_cap, one_sided, out[i:], thr[i:], flag[i:])
        return out, thr, flag

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per feature: robust z-score of ``x`` against the warm-up sample, and that sample's median (raw units)."""
        v = np.asarray(x, dtype=np.float64)
        if not self._fitted:
            return np.zeros(v.size), np.zeros(v.size)
        t = np.sign(v) * np.log1p(np.abs(v)) if self.log_transform else v
        typical = np.sign(self._center) * np.expm1(np.abs(self._center)) if self.log_transform else self._center
        return (t - self._center) / self._scale, typical

    # -- checkpointing --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Hyper-parameters and a copy of every array: enough to restore identical scores."""
        return {
            "params": self._params(),
            "keys": None if self._keys is None else list(self._keys),
            "buffer": [b.copy() for b in self._buffer],
            "fitted": self._fitted,
            "center": self._center.copy(),
            "scale": self._scale.copy(),
            "w": self._w.copy(),
            "width": self._width.copy(),
            "shift": self._shift.copy(),
            "counts": self._counts.copy(),
            "acc": self._acc.copy(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Loda:
        """Rebuild a model from :meth:`state`."""
        m = cls(**state["params"])
        m._keys = None if state["keys"] is None else list(state["keys"])
        m._buffer = [np.array(b, dtype=np.float64) for b in state["buffer"]]
        m._fitted = bool(state["fitted"])
        for attr in ("center", "scale", "width", "shift", "acc"):
            setattr(m, f"_{attr}", np.array(state[attr], dtype=np.float64))
        m._w = np.array(state["w"], dtype=np.float64).reshape(np.shape(state["w"]))
        m._counts = np.array(state["counts"], dtype=np.float64).reshape(np.shape(state["counts"]))
        return m

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"Loda({args})"

    # -- internals ------------------------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        return {"n_projections": self.n_projections, "bin_width": self.bin_width, "warmup": self.warmup,
                "table_bits": self.table_bits, "alpha": self.alpha, "half_life": self.half_life,
                "log_transform": self.log_transform, "seed": self.seed}

    def _growth(self) -> float:
        return 1.0 if self.half_life <= 0 else 2.0 ** (1.0 / self.half_life)

    def _vector(self, x: dict[str, float]) -> np.ndarray:
        """Dict to vector in the feature order fixed by the first observation (missing keys are 0)."""
        if self._keys is None:
            self._keys = list(x)
        return np.array([float(x.get(k, 0.0)) for k in self._keys], dtype=np.float64)

    def _check_width(self, d: int) -> None:
        if self._keys is None:
            self._keys = [str(j) for j in range(d)]
        elif len(self._keys) != d:
            raise ValueError(f"model has {len(self._keys)} features, got {d}")

    def _score_row(self, v: np.ndarray) -> float:
        if not self._fitted:
            return self._provisional_score(v)
        out = np.zeros(1)
        _score_learn_kernel(v.reshape(1, -1), self._center, self._scale, self.log_transform, self._w, self._width,
                            self._shift, self._counts, self._acc, self.alpha, 1.0, False, out)
        return float(out[0])

    def _learn_row(self, v: np.ndarray) -> None:
        if not self._fitted:
            self._buffer.append(v.copy())
            if len(self._buffer) >= self.warmup:
                self._fit()
            return
        out = np.zeros(1)
        _score_learn_kernel(v.reshape(1, -1), self._center, self._scale, self.log_transform, self._w, self._width,
                            self._shift, self._counts, self._acc, self.alpha, self._growth(), True, out)

    def _draw_projections(self, d: int) -> None:
        """Sparse Gaussian directions on ceil(sqrt(d)) features each, and random bin offsets; from ``seed`` only."""
        rng = np.random.default_rng(self.seed)
        k = self.n_projections
        nnz = max(1, math.ceil(math.sqrt(d)))
        w = np.zeros((k, d))
        for j in range(k):
            idx = rng.choice(d, size=nnz, replace=False)
            w[j, idx] = rng.standard_normal(nnz)
        self._w = w
        self._shift = rng.random(k)

    def _front_fit(self, B: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Front end and bin widths fitted on the rows ``B``: (transformed rows, centre, scale, widths)."""
        if self._w.shape != (self.n_projections, B.shape[1]):
            self._draw_projections(B.shape[1])
        T = np.sign(B) * np.log1p(np.abs(B)) if self.log_transform else B
        center = np.median(T, axis=0)
        scale = _robust_scale(T)
        width = self.bin_width * _robust_scale(((T - center) / scale) @ self._w.T)
        return T, center, scale, width

    def _provisional_score(self, v: np.ndarray) -> float:
        """Warm-up score: the same rule, with the front end and bins fitted on the rows buffered so far."""
        if not self._buffer:
            return 0.0
        B = np.array(self._buffer, dtype=np.float64)
        T, center, scale, width = self._front_fit(B)
        t = np.sign(v) * np.log1p(np.abs(v)) if self.log_transform else v
        bins_b = np.floor((((T - center) / scale) @ self._w.T) / width + self._shift)
        bins_v = np.floor((((t - center) / scale) @ self._w.T) / width + self._shift)
        c = (bins_b == bins_v).sum(axis=0)
        return float(np.mean(-np.log((c + self.alpha) / (B.shape[0] + self.alpha))))

    def _fit(self) -> None:
        """End of warm-up: fit the front end and bin widths on the buffer, then learn the buffered rows."""
        B = np.array(self._buffer, dtype=np.float64)
        _, self._center, self._scale, self._width = self._front_fit(B)
        k = self.n_projections
        self._counts = np.zeros((k, 1 << self.table_bits))
        self._acc = np.array([0.0, 1.0])
        self._fitted = True
        self._buffer = []
        out = np.zeros(B.shape[0])
        _score_learn_kernel(B, self._center, self._scale, self.log_transform, self._w, self._width, self._shift,
                            self._counts, self._acc, self.alpha, self._growth(), True, out)


@njit(cache=True)
def _hist_quantile(hist: np.ndarray, width: float, q: float) -> float:
    """Upper edge of the bin holding the ``q`` quantile of a histogram of scores (bins of ``width`` from 0)."""
    total = 0.0
    for b in range(hist.shape[0]):
        total += hist[b]
    need = q * total
    run = 0.0
    for b in range(hist.shape[0]):
        run += hist[b]
        if run >= need:
            return (b + 1) * width
    return hist.shape[0] * width


@njit(cache=True)
def _gated_kernel(X: np.ndarray, center: np.ndarray, scale: np.ndarray, log_transform: bool, w: np.ndarray,
                  width: np.ndarray, shift: np.ndarray, counts: np.ndarray, acc: np.ndarray, alpha: float,
                  growth: float, hist: np.ndarray, hist_width: float, q: float, floor: float, min_learned: float,
                  hist_cap: float, one_sided: bool, out: np.ndarray, thr: np.ndarray, flag: np.ndarray) -> None:
    """Row by row: score, compare with the adaptive threshold, and learn the row only if it did not exceed it.

    The threshold is ``max(floor, q-quantile of the scores of the rows learned so far)`` (``hist``), and
    nothing is flagged before ``min_learned`` rows are in it. ``hist`` is halved when it holds ``hist_cap``.
    ``one_sided``: standardised features below 0 (the warm-up median) count as 0, so only excess is rare.
    """
    n = X.shape[0]
    mask, z, slots = _row_buffers(X, w, counts)
    total = acc[0]
    g = acc[1]
    nb = hist.shape[0]
    for i in range(n):
        _front(X[i], center, scale, log_transform, one_sided, z)
        _bins(z, w, width, shift, mask, slots)
        s = _score_slots(slots, counts, total, g, alpha)
        out[i] = s
        seen = 0.0
        for b in range(nb):
            seen += hist[b]
        t = max(floor, _hist_quantile(hist, hist_width, q))
        thr[i] = t
        if seen >= min_learned and s > t:
            flag[i] = True
            continue
        flag[i] = False
        b = int(s / hist_width)
        hist[min(max(b, 0), nb - 1)] += 1.0
        if seen + 1.0 >= hist_cap:
            for bb in range(nb):
                hist[bb] *= 0.5
        total, g = _learn_slots(slots, counts, total, g, growth)
    acc[0] = total
    acc[1] = g
