"""Univariate streaming anomaly detector (one metric per entity), River's protocol plus a Numba batch path.

``UnivariateDetector`` scores each value from the past and the current value only (score, then learn).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

# Layout of the scalar state vector ``_s``; per-view sums live in ``_v`` (rows: sum, sum of squares).
_T, _VMIN, _VMAX, _DN, _LAST, _EMA, _ZMAX, _PEAK, _LO, _HI, _REB, _QH, _QT, _LAG, _PSUM, _PCNT = range(16)
_NS = 16
# views: nearest window, nearest coarse window, level vs. recent mean, step, value novelty, shift, shift/range, season
_NV = 8
_W_AT = (10, 11, 12, 13, 18, 19, 20, 28)  # index of each view's weight in the configuration vector


@njit(cache=True)
def _nearest(buf: np.ndarray, t: int, dim: int, stride: int, gmin: int, gmax: int) -> float:
    """Smallest L1 distance between the window ending at ``t`` and any earlier one ending ``gmin..gmax`` rows back."""
    bsz = buf.shape[0]
    best = 1e300
    for g in range(gmin, gmax + 1):
        acc = 0.0
        for j in range(dim):
            acc += abs(buf[(t - j * stride) % bsz] - buf[(t - g - j * stride) % bsz])
            if acc >= best:
                break
        if acc < best:
            best = acc
    return best / dim


@njit(cache=True)
def _level(x: float, lo: float, hi: float, levels: int, offset: float) -> int:
    """Bin of ``x`` among ``levels`` equal bins over ``[lo, hi]`` shifted by ``offset`` of a bin (clipped)."""
    if hi <= lo:
        return 0
    q = int((x - lo) / (hi - lo) * levels + offset)
    return min(max(q, 0), levels - 1)


@njit(cache=True)
def _context_visit(qbuf: np.ndarray, t: int, first: int, bits: int, order: int, ctab: np.ndarray) -> float:
    """Novelty of row ``t``'s bin after its contexts, then learn it (CAD-style).

    The contexts are the previous 1..``order`` bins (not before row ``first``), each an exact integer key; the
    facts are the ``bits`` active cells of the bin's binary code (cell ``2i + bit_i``). Novelty is the share of the
    facts that each context has not been followed by before (1 for an unseen context), averaged over the contexts.
    ``ctab`` is an open-addressing table (keys, fact masks) that the caller keeps at most half full.
    """
    m = qbuf.shape[0]
    h = ctab.shape[1]
    q = qbuf[t % m]
    facts = 0
    for i in range(bits):
        facts |= 1 << (2 * i + ((q >> i) & 1))
    base = (1 << bits) + 1
    key = 0
    mult = 1
    tot = 0.0
    cnt = 0
    for k in range(1, order + 1):
        if t - k < first:
            break
        key += (qbuf[(t - k) % m] + 1) * mult  # digits 1..2^bits in base 2^bits + 1: one key per context
        mult *= base
        slot = (key ^ (key >> 13) ^ (key >> 27)) & (h - 1)
        while ctab[0, slot] != 0 and ctab[0, slot] != key:
            slot = (slot + 1) & (h - 1)
        if ctab[0, slot] == key:
            seen = ctab[1, slot]
            hit = 0
            for i in range(2 * bits):
                hit += ((seen & facts) >> i) & 1
            tot += 1.0 - hit / bits
            ctab[1, slot] = seen | facts
        else:
            tot += 1.0
            ctab[0, slot] = key
            ctab[1, slot] = facts
        cnt += 1
    return tot / cnt if cnt > 0 else 0.0


@njit(cache=True)
def _context_step(x: float, t: int, s: np.ndarray, xbuf: np.ndarray, qbuf: np.ndarray, ctab: np.ndarray,
                  bits: int, order: int) -> float:
    """Context novelty of ``x`` (row ``t``): the smallest over the tilings (bins shifted by ``1/tilings`` of a bin),
    so a value jittering across one tiling's bin edge is not a new context. The contexts are rebuilt from the last
    ``mem`` rows whenever the range seen so far grows or ``mem`` rows have passed, so a table holds at most
    ``2 * mem`` rows' contexts (the tables are sized for that)."""
    m = xbuf.shape[0]
    mem = m - 1
    levels = 1 << bits
    tilings = qbuf.shape[0]
    xbuf[t % m] = x
    if t == 0:
        s[_LO] = x
        s[_HI] = x
    if s[_VMIN] < s[_LO] or s[_VMAX] > s[_HI] or s[_REB] >= mem:
        # bins follow the range seen so far: replay the last `mem` rows with the new bins (the past only)
        s[_LO] = s[_VMIN]
        s[_HI] = s[_VMAX]
        ctab[:, :, :] = 0
        first = max(0, t - mem)
        for j in range(tilings):
            for u in range(first, t):
                qbuf[j, u % m] = _level(xbuf[u % m], s[_LO], s[_HI], levels, j / tilings)
                _context_visit(qbuf[j], u, first, bits, order, ctab[j])
        s[_REB] = 0
    nov = 1.0
    for j in range(tilings):
        qbuf[j, t % m] = _level(x, s[_LO], s[_HI], levels, j / tilings)
        nov = min(nov, _context_visit(qbuf[j], t, max(0, t - mem), bits, order, ctab[j]))
    s[_REB] += 1
    return nov


@njit(cache=True)
def _gate(z: float, t: int, s: np.ndarray, zq: np.ndarray) -> bool:
    """True if ``z`` is larger than every value pushed in the last ``zq.shape[1] - 2`` rows, then push it.

    ``zq`` is a ring (values, row numbers) holding the decreasing running maxima of that window (a monotone
    deque); ``s[_QH]`` and ``s[_QT]`` count the rows taken from its front and put at its back.
    """
    m = zq.shape[1]
    span = m - 2
    h = int(s[_QH])
    e = int(s[_QT])
    while e > h and zq[1, h % m] < t - span:
        h += 1
    new = e == h or z > zq[0, h % m]
    while e > h and zq[0, (e - 1) % m] <= z:
        e -= 1
    zq[0, e % m] = z
    zq[1, e % m] = t
    s[_QH] = h
    s[_QT] = e + 1
    return new


@njit(cache=True)
def _kernel(values: np.ndarray, cfg: np.ndarray, s: np.ndarray, v: np.ndarray, buf: np.ndarray, cbuf: np.ndarray,
            dhist: np.ndarray, xbuf: np.ndarray, qbuf: np.ndarray, ctab: np.ndarray, zq: np.ndarray,
            out: np.ndarray, ext: np.ndarray) -> None:
    """Score then learn every value in order, updating the state arrays in place.

    ``ext`` is a third part per row (the half-rate view's, already weighted; 0 where it has none). With ``cfg[30]``
    set, ``out`` is the combined part before the probation and rest rules (what a parent detector takes as ``ext``).
    """
    p = int(cfg[0])
    dim = int(cfg[1])
    mem = int(cfg[2])
    hist = int(cfg[3])
    short = int(cfg[4])
    rest = int(cfg[5])
    z_det = cfg[6]
    std_floor = cfg[7]
    coarse = int(cfg[8])
    alpha = cfg[9]
    log_eps = cfg[14]
    decay = cfg[15]
    z_floor = cfg[16]
    margin = cfg[17]
    ns = int(cfg[21])
    nl = int(cfg[22])
    w_ctx = cfg[23]
    bits = int(cfg[24])
    order = int(cfg[25])
    gate = cfg[26] > 0.0
    repeat = cfg[27]
    tol = int(cfg[29])
    raw_out = cfg[30] > 0.0
    s_det = z_det / (1.0 + z_det)
    w = np.empty(_NV)
    for i in range(_NV):
        w[i] = cfg[_W_AT[i]]
    bsz = buf.shape[0]
    hs = dhist.shape[1]
    raw = np.zeros(_NV)
    for k in range(values.shape[0]):
        x = values[k]
        t = int(s[_T])
        buf[t % bsz] = x
        if t == 0:
            s[_VMIN] = x
            s[_VMAX] = x
            s[_EMA] = x
        else:
            s[_VMIN] = min(s[_VMIN], x)
            s[_VMAX] = max(s[_VMAX], x)
        nov = _context_step(x, t, s, xbuf, qbuf, ctab, bits, order) if w_ctx > 0.0 else 0.0
        rng = s[_VMAX] - s[_VMIN]
        if rng <= 0.0:
            rng = 1.0
        # coarse buffer: mean of the last `coarse` values
        acc = 0.0
        cnt = 0
        for j in range(min(coarse, t + 1)):
            acc += buf[(t - j) % bsz]
            cnt += 1
        cbuf[t % bsz] = acc / cnt
        n_have = t + 1
        raw[:] = 0.0
        if n_have >= 2 * dim and w[0] > 0.0:
            raw[0] = _nearest(buf, t, dim, 1, dim, min(mem, n_have - dim)) / rng
        span = dim * coarse
        if n_have >= 2 * span and w[1] > 0.0:
            raw[1] = _nearest(cbuf, t, dim, coarse, span, min(mem, n_have - span)) / rng
        raw[2] = abs(x - s[_EMA]) / rng
        if t > 0:
            raw[3] = abs(x - buf[(t - 1) % bsz]) / rng
            if w[4] > 0.0:
                raw[4] = _nearest(buf, t, 1, 1, 1, min(mem, n_have - 1)) / rng
        if n_have >= ns + nl and (w[5] > 0.0 or w[6] > 0.0):
            # mean of the last ns values against the mean and sd of the nl before them
            sa = 0.0
            for j in range(ns):
                sa += buf[(t - j) % bsz]
            sb = 0.0
            sb2 = 0.0
            for j in range(ns, ns + nl):
                y = buf[(t - j) % bsz]
                sb += y
                sb2 += y * y
            ma = sa / ns
            mb = sb / nl
            sdb = math.sqrt(max(sb2 / nl - mb * mb, 0.0))
            raw[5] = abs(ma - mb) / (sdb + 0.01 * rng)
            raw[6] = abs(ma - mb) / rng
        lag = int(s[_LAG])
        if lag > 0 and w[7] > 0.0 and n_have >= lag + tol + dim:
            raw[7] = _nearest(buf, t, dim, 1, lag - tol, lag + tol) / rng
        s[_EMA] += alpha * (x - s[_EMA])
        if log_eps > 0.0:
            for i in range(_NV):
                raw[i] = math.log(raw[i] + log_eps)
        n_d = int(s[_DN])
        m = min(n_d, hist)
        z = 0.0
        for i in range(_NV):
            if w[i] <= 0.0:
                continue
            a = raw[i]
            c = 1
            for j in range(1, short):
                if n_d - j >= 0:
                    a += dhist[i, (n_d - j) % hs]
                    c += 1
            a /= c
            if m >= 2 * dim:
                mean = v[0, i] / m
                var = v[1, i] / m - mean * mean
                sd = max(math.sqrt(max(var, 0.0)), std_floor)
                zi = w[i] * (a - mean) / sd
                if zi > z:
                    z = zi
        for i in range(_NV):
            d = raw[i]
            if n_d >= hist:
                old = dhist[i, n_d % hs]
                v[0, i] -= old
                v[1, i] -= old * old
            dhist[i, n_d % hs] = d
            v[0, i] += d
            v[1, i] += d * d
        s[_DN] = n_d + 1
        score = 0.0
        zeff = z
        if decay > 0.0:
            zeff = z / max(s[_ZMAX], z_floor) * z_floor
            s[_ZMAX] = max(z, s[_ZMAX] * decay)
        zs = zeff / (1.0 + zeff) if zeff > 0.0 else 0.0
        if gate and not _gate(z, t, s, zq):
            zs *= repeat  # not the largest in the gate's window: a repeat of something already seen
        c = max(zs, w_ctx * nov, ext[k])
        if raw_out:
            out[k] = c
            s[_T] = t + 1
            continue
        if t >= p and c > 0.0:
            score = c
            if t - s[_LAST] < rest:
                # inside an event: only a clearly higher peak is reported again
                if c > s[_PEAK] * (1.0 + margin):
                    s[_PEAK] = c
                else:
                    score = 0.0
            elif c >= s_det:
                s[_LAST] = t
                s[_PEAK] = c
        out[k] = score
        s[_T] = t + 1


class UnivariateDetector:
    """Several cheap novelty views, each turned into an anomaly likelihood, and a context novelty, with a rest period.

    Views (each a raw statistic scaled by the running value range): distance of the last ``dim`` values to the
    nearest earlier window within ``memory`` rows (``w_window``), the same over ``coarse``-row means (``w_coarse``),
    distance of the value to its EWMA with rate ``alpha`` (``w_level``), the step from the previous value
    (``w_step``), distance of the value to the nearest earlier value within ``memory`` rows (``w_value``), and the
    shift of the mean of the last ``shift_short`` values from the mean of the ``shift_long`` before them, in units
    of their sd (plus 1% of the range; ``w_shift``) and of the range (``w_shift_range``); a view with weight 0 is
    not computed or not used. Each raw statistic (or its log, if ``log_eps`` > 0), averaged
    over ``short`` rows, becomes a z-score against its own last ``history`` values (sd at least ``std_floor``); the
    combined z is the largest weighted one. With ``decay`` > 0, z is divided by a slowly decaying maximum of past z
    (at least ``z_floor``) and rescaled by ``z_floor``, so a stream that is always surprising needs more to alert.

    The context novelty follows the Contextual Anomaly Detector (CAD OSE, Smirnov, NAB 2016): the value's bin among
    ``2 ** context_bits`` equal bins over the range seen so far is coded as ``context_bits`` active cells, each of
    the previous 1..``context_order`` bins is a context, and the novelty is the share of the current cells that the
    contexts have not been followed by before, averaged over the contexts (an unseen context counts 1), and the
    smallest over ``context_tilings`` binnings shifted by a fraction of a bin. The bins follow the range seen so
    far: when it grows (or every ``context_memory`` rows) the contexts are rebuilt from the last
    ``context_memory`` rows with the new bins, so old contexts are never judged in stale bins.

    The z part ``z / (1 + z)`` is a repeat unless its combined z (before the decaying-maximum scaling) is larger than
    every one of the previous ``z_gate`` times the ``probationary_period`` rows (0 turns the gate off); a repeat is
    scaled by ``z_repeat``, so a deviation that recurs (a daily step, a burst as large as the last one) must grow to
    be reported again.

    With ``timestamps``, an eighth view, the seasonal one (``w_season``): distance of the last ``dim`` values to the
    nearest window ending ``season`` seconds earlier (as rows at the median sampling step, at most ``season_max``),
    give or take ``season_tol`` rows, so a day that misses its usual rise or fall is new even if the shape was seen
    at another hour.

    With ``w_pairs`` > 0, a third part, the half-rate view: a second detector of the same configuration (context
    novelty off, half the probationary period) reads the means of consecutive row pairs, and its z part (gate
    included), times ``w_pairs``, counts on the row that ends each pair, so a shift hidden in row-to-row noise (an
    alternation whose mean moves) is seen at the coarser rate.

    The score is the largest of the z part, ``w_context`` times the context novelty and the half-rate part, in
    [0, 1). Once a row
    reaches ``z_detect / (1 + z_detect)``, scores are zero for ``rest_fraction`` of the ``probationary_period`` (NAB
    tells a detector that period; no score is emitted inside it), except a peak ``margin`` times higher than the
    event's first (off by default).
    """

    name = "spyglass"

    def __init__(self, probationary_period: int = 750, dim: int = 8, memory: int = 750, history: int = 4000,
                 short: int = 5, rest_fraction: float = 0.2, z_detect: float = 3.0, std_floor: float = 0.004,
                 coarse: int = 4, alpha: float = 0.05, w_window: float = 1.0, w_coarse: float = 0.0,
                 w_level: float = 0.0, w_step: float = 1.0, log_eps: float = 0.0, decay: float = 0.999,
                 z_floor: float = 10.0, margin: float = 1e9, w_value: float = 0.5, w_shift: float = 0.5,
                 w_shift_range: float = 0.7, shift_short: int = 8, shift_long: int = 128, w_context: float = 0.8,
                 context_bits: int = 4, context_order: int = 7, context_memory: int = 4096,
                 context_tilings: int = 2, z_gate: float = 1.0, z_repeat: float = 0.85, season: float = 86400.0,
                 w_season: float = 0.4, season_tol: int = 2, season_max: int = 2048, w_pairs: float = 0.95) -> None:
        if not 1 <= context_bits <= 6 or min(context_order, context_memory, context_tilings) < 1:
            raise ValueError("context_bits must be 1..6, context_order, context_memory and context_tilings at least 1")
        if ((1 << context_bits) + 1) ** context_order >= 2**62:
            raise ValueError("context_bits and context_order too large: a context's key must fit in 62 bits")
        if z_gate < 0.0 or not 0.0 <= z_repeat <= 1.0:
            raise ValueError("z_gate must be at least 0 and z_repeat in [0, 1]")
        if season < 0.0 or season_tol < 0 or season_max < 1:
            raise ValueError("season and season_tol must be at least 0, season_max at least 1")
        if not 0.0 <= w_pairs <= 1.0:
            raise ValueError("w_pairs must be in [0, 1]")
        self.probationary_period = probationary_period
        self.dim = dim
        self.memory = memory
        self.history = history
        self.short = short
        self.rest_fraction = rest_fraction
        self.z_detect = z_detect
        self.std_floor = std_floor
        self.coarse = coarse
        self.alpha = alpha
        self.w_window = w_window
        self.w_coarse = w_coarse
        self.w_level = w_level
        self.w_step = w_step
        self.log_eps = log_eps
        self.decay = decay
        self.z_floor = z_floor
        self.margin = margin
        self.w_value = w_value
        self.w_shift = w_shift
        self.w_shift_range = w_shift_range
        self.shift_short = shift_short
        self.shift_long = shift_long
        self.w_context = w_context
        self.context_bits = context_bits
        self.context_order = context_order
        self.context_memory = context_memory
        self.context_tilings = context_tilings
        self.z_gate = z_gate
        self.z_repeat = z_repeat
        self.season = season
        self.w_season = w_season
        self.season_tol = season_tol
        self.season_max = season_max
        self.w_pairs = w_pairs
        gate_rows = int(z_gate * probationary_period)
        self._cfg = np.array([probationary_period, dim, memory, history, short,
                              max(1, int(rest_fraction * probationary_period)), z_detect, std_floor, coarse, alpha,
                              w_window, w_coarse, w_level, w_step, log_eps, decay, z_floor, margin, w_value, w_shift,
                              w_shift_range, shift_short, shift_long, w_context, context_bits, context_order, gate_rows,
                              z_repeat, w_season, season_tol, 0.0],
                             dtype=np.float64)
        self._s = np.zeros(_NS, dtype=np.float64)
        self._s[_LAST] = -1e18
        self._v = np.zeros((2, _NV), dtype=np.float64)
        bsz = max(memory + 2 * dim * max(coarse, 1) + 1, shift_short + shift_long + 1,
                  season_max + season_tol + dim + 1 if season > 0.0 and w_season > 0.0 else 0)
        self._buf = np.zeros(bsz, dtype=np.float64)
        self._cbuf = np.zeros(bsz, dtype=np.float64)
        self._dhist = np.zeros((_NV, max(history, short) + 1), dtype=np.float64)
        ring = context_memory + 1 if w_context > 0.0 else 1  # the context novelty's rows (unused when it is off)
        self._xbuf = np.zeros(ring, dtype=np.float64)
        self._qbuf = np.zeros((context_tilings, ring), dtype=np.int64)
        # at most 2 * context_memory rows' contexts are stored between rebuilds: keep the table at most half full
        slots = 1 << int(math.ceil(math.log2(4 * context_order * context_memory))) if w_context > 0.0 else 1
        self._ctab = np.zeros((context_tilings, 2, slots), dtype=np.int64)
        self._zq = np.zeros((2, gate_rows + 2), dtype=np.float64)
        self._pairs: UnivariateDetector | None = None
        if w_pairs > 0.0:
            # the half-rate view: the same z part over the means of row pairs, in a detector of its own
            half = {"probationary_period": max(1, probationary_period // 2), "w_context": 0.0, "w_pairs": 0.0}
            self._pairs = UnivariateDetector(**{**self._params(), **half})
            self._pairs._cfg[30] = 1.0

    def _step(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        out = np.empty(values.shape[0], dtype=np.float64)
        _kernel(values, self._cfg, self._s, self._v, self._buf, self._cbuf, self._dhist, self._xbuf, self._qbuf,
                self._ctab, self._zq, out, self._half_rate(values, timestamps))
        return out

    def _half_rate(self, values: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
        """The half-rate view's part (weighted) on each row that ends a pair of rows, 0 on the others.

        Rows pair up in arrival order across calls (an unpaired last row waits in the state); each pair's mean goes
        to the pairs detector, which scores it from the past pairs only, so a row's part uses no later row.
        """
        ext = np.zeros(values.shape[0], dtype=np.float64)
        if self._pairs is None or values.shape[0] == 0:
            return ext
        first = int(self._s[_PCNT])
        seq = np.concatenate((self._s[_PSUM : _PSUM + 1], values)) if first else values
        m = seq.shape[0] // 2
        if seq.shape[0] % 2:
            self._s[_PSUM] = seq[-1]
            self._s[_PCNT] = 1.0
        else:
            self._s[_PCNT] = 0.0
        if m == 0:
            return ext
        ends = np.arange(1, 2 * m, 2) - first
        if self._pairs._s[_LAG] == 0 and timestamps is not None and len(timestamps) == values.shape[0] and m > 2:
            self._pairs._s[_LAG] = self._pairs._season_lag(_datetimes(np.asarray(timestamps)[ends[:200]]))
        ext[ends] = self.w_pairs * self._pairs._step(np.ascontiguousarray(seq[: 2 * m].reshape(m, 2).mean(axis=1)))
        return ext

    def score_learn_many(self, values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
        """Score each value from the past and itself, then learn it; the whole series in one compiled pass.

        ``timestamps`` (datetime64, or anything NumPy turns into it) are read once, from the first call that has at
        least 3, to set the seasonal view's lag in rows; without them that view stays off.
        """
        if self._s[_LAG] == 0 and timestamps is not None and len(timestamps) > 2:
            self._s[_LAG] = self._season_lag(_datetimes(timestamps[:200]))
        return self._step(np.ascontiguousarray(values, dtype=np.float64), timestamps)

    def _season_lag(self, ts: np.ndarray) -> int:
        """``season`` in rows at the median positive sampling step of ``ts``; -1 (view off) if it does not fit."""
        steps = np.diff(ts[~np.isnat(ts)].astype(np.int64))
        steps = steps[steps > 0]
        if self.season <= 0.0 or self.w_season <= 0.0 or steps.size == 0:
            return -1
        lag = round(self.season * 1e6 / float(np.median(steps)))
        return lag if 2 * self.season_tol < lag <= self.season_max else -1

    def learn_one(self, x: dict[str, float]) -> None:
        """Learn one observation (``{"value": v}`` or any single-key dict)."""
        self._step(np.array([_value(x)], dtype=np.float64))

    def score_one(self, x: dict[str, float]) -> float:
        """Anomaly score in [0, 1] of one observation given the past; does not learn."""
        saved = self.state()
        out = float(self._step(np.array([_value(x)], dtype=np.float64))[0])
        self._restore(saved)
        return out

    def state(self) -> dict[str, Any]:
        """Hyper-parameters and a copy of every state array, the pairs detector's included (restores identical
        scores)."""
        pairs = None if self._pairs is None else {k: getattr(self._pairs, f"_{k}").copy() for k in _ARRAYS}
        return {"params": self._params(), **{k: getattr(self, f"_{k}").copy() for k in _ARRAYS}, "pairs": pairs}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> UnivariateDetector:
        """A detector that continues exactly where the one that produced ``state`` stopped."""
        det = cls(**state["params"])
        det._restore(state)
        return det

    def _restore(self, state: dict[str, Any]) -> None:
        for k in _ARRAYS:
            setattr(self, f"_{k}", np.array(state[k], dtype=getattr(self, f"_{k}").dtype))
        if self._pairs is not None:
            if state.get("pairs") is None:
                raise ValueError("state: no 'pairs' arrays for a detector with w_pairs > 0")
            self._pairs._restore({**state["pairs"], "pairs": None})

    def _params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _PARAMS}


_ARRAYS = ("s", "v", "buf", "cbuf", "dhist", "xbuf", "qbuf", "ctab", "zq")
_PARAMS = ("probationary_period", "dim", "memory", "history", "short", "rest_fraction", "z_detect", "std_floor",
           "coarse", "alpha", "w_window", "w_coarse", "w_level", "w_step", "log_eps", "decay",
           "z_floor", "margin", "w_value", "w_shift", "w_shift_range", "shift_short", "shift_long", "w_context",
           "context_bits", "context_order", "context_memory", "context_tilings", "z_gate", "z_repeat", "season",
           "w_season", "season_tol", "season_max", "w_pairs")


def _datetimes(ts: Any) -> np.ndarray:
    """``ts`` as datetime64[us], or a ValueError naming the field."""
    try:
        return np.asarray(ts, dtype="datetime64[us]")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"timestamps: not datetimes ({exc})") from None


def _value(x: dict[str, float]) -> float:
    if "value" in x:
        return float(x["value"])
    if len(x) != 1:
        raise ValueError("a univariate detector takes {'value': v} or a single-key dict")
    return float(next(iter(x.values())))
