"""Numba kernels over one batch: per-event features from per-entity streaming state.

Each kernel walks the batch's events in event-time order once, reading and updating
per-entity state arrays in place (indexed by interned entity id). Scores are computed
from the state *before* the event is learned, and an event whose score crosses the
``gate`` is not learned into the slow baseline (poisoning resistance). Pure-Python
references of these kernels live in ``tests/property`` and must agree with them.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True)
def decayed_count(ent, ts, weight, count, last, tau_ms):  # pragma: no cover - compiled
    """Exponentially decayed event count per entity (time constant ``tau_ms``), after each event."""
    n = ent.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        dt = ts[i] - last[e]
        if dt > 0:
            count[e] *= math.exp(-dt / tau_ms)
            last[e] = ts[i]
        count[e] += weight[i]
        out[i] = count[e]
    return out


@njit(cache=True)
def burst_vs_baseline(ent, ts, fast, fast_last, slow, slow_last, seen_since, tau_fast, tau_slow, gate, floor,
                      min_count):
    """Fast decayed count against the expected count from a slow decayed baseline.

    Returns (fast count after the event, expected fast count from the baseline). The slow
    baseline (an event rate, via a decayed count over ``tau_slow``) learns every event
    except those of a burst (fast count at least ``min_count`` and ``gate`` x expected), so
    a burst cannot teach itself in while normal growth still can. ``floor`` is the least
    expected count, so an entity with a thin history is not judged against zero.
    """
    n = ent.shape[0]
    f_out = np.empty(n, dtype=np.float64)
    x_out = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        t = ts[i]
        dt = t - fast_last[e]
        if dt > 0:
            fast[e] *= math.exp(-dt / tau_fast)
            fast_last[e] = t
        fast[e] += 1.0
        ds = t - slow_last[e]
        if ds > 0:
            slow[e] *= math.exp(-ds / tau_slow)
            slow_last[e] = t
        if seen_since[e] == 0:
            seen_since[e] = t
        # expected events within tau_fast at the baseline rate; a decayed count over an age a
        # holds rate * tau * (1 - exp(-a / tau)) events, so young entities are not under-estimated
        age = max(t - seen_since[e], tau_fast)
        expected = max(slow[e] / (tau_slow * (1.0 - math.exp(-age / tau_slow))) * tau_fast, floor)
        f_out[i] = fast[e]
        x_out[i] = expected
        if fast[e] < min_count or fast[e] < gate * expected:
            slow[e] += 1.0
    return f_out, x_out


@njit(cache=True)
def log_zscore(ent, x, mean, var, n_seen, alpha, gate, min_var, warm):
    """z-score of log1p(x) against an exponentially weighted mean/variance per entity.

    Scored before learning; an entity with fewer than ``warm`` observations is not scored
    (z = 0, and everything is learned); after that an event with z above ``gate`` is not learned.
    """
    n = ent.shape[0]
    z = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        v = math.log1p(x[i])
        sd = math.sqrt(max(var[e], min_var))
        z[i] = (v - mean[e]) / sd if n_seen[e] >= warm else 0.0  # no baseline yet: not scored
        if z[i] < gate:
            a = max(alpha, 1.0 / (n_seen[e] + 1.0))
            d = v - mean[e]
            mean[e] += a * d
            var[e] = (1.0 - a) * (var[e] + a * d * d)
            n_seen[e] += 1.0
    return z


@njit(cache=True)
def cusum(ent, z, s, k, gate_learn):
    """One-sided CUSUM of z-scores per entity: s = max(0, s + z - k). Returns s after each event."""
    n = ent.shape[0]
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        s[e] = max(0.0, s[e] + min(z[i], gate_learn) - k)
        out[i] = s[e]
    return out


@njit(cache=True)
def distinct_recent(ent, ts, val, at, window, prior_ent, prior_val, prior_last):  # pragma: no cover - compiled
    """For each event index ``i`` in ``at``: how many distinct values ``val`` (``>= 0``; -1 is none) its entity
    had in the ``window`` up to it. That is, over the batch's events ``j <= i`` of entity ``ent[i]`` with
    ``ts[j] >= ts[i] - window``, and the earlier batches' (entity, value, last time) rows ``prior_*`` whose
    last time is in the window."""
    n_vals = 0
    for x in val:
        n_vals = max(n_vals, x + 1)
    for x in prior_val:
        n_vals = max(n_vals, x + 1)
    stamp = np.full(n_vals, -1, dtype=np.int64)  # stamp[v] == c: v already counted for the c-th index
    out = np.zeros(at.shape[0], dtype=np.int64)
    for c in range(at.shape[0]):
        i = at[c]
        e = ent[i]
        lo = ts[i] - window
        k = 0
        for r in range(prior_ent.shape[0]):
            v = prior_val[r]
            if prior_ent[r] == e and prior_last[r] >= lo and v >= 0 and stamp[v] != c:
                stamp[v] = c
                k += 1
        for j in range(i + 1):
            v = val[j]
            if ent[j] == e and ts[j] >= lo and v >= 0 and stamp[v] != c:
                stamp[v] = c
                k += 1
        out[c] = k
    return out


@njit(cache=True)
def after_mark(ent, ts, mark, last, has, window):  # pragma: no cover - compiled
    """Whether each event comes at most ``window`` after its entity's latest marked event (``mark``), earlier
    batches included (``last``/``has`` per entity, updated in place). An event's own mark counts from the next."""
    n = ent.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        e = ent[i]
        if has[e] and ts[i] - last[e] <= window:
            out[i] = True
        if mark[i]:
            last[e] = ts[i]
            has[e] = True
    return out


@njit(cache=True)
def session_runaway(session, kind, warm, steps, flagged, hist, longest, min_steps):  # pragma: no cover - compiled
    """Steps per session, and which steps make a session a runaway for its kind (agent type).

    ``steps``/``flagged`` per session and ``hist`` (sessions of each kind that reached each length, capped at
    1023) / ``longest`` (the longest length two sessions of the kind reached) per kind are updated in place.
    A step is a runaway's when the session is longer than 1.5x its kind's longest and than ``min_steps``, and the
    kind is ``warm``. A session flagged so is not learned: the lengths it was counted at before are taken
    back, and none of its later steps count, so one runaway cannot make the next look normal.
    Returns (each event's session length, whether it is a runaway's step).
    """
    n = session.shape[0]
    long_step = np.zeros(n, dtype=np.bool_)
    step_n = np.zeros(n, dtype=np.int64)
    for i in range(n):
        k = session[i]
        t = kind[i]
        m = steps[k] + 1
        steps[k] = m
        step_n[i] = m
        top = longest[t]
        if m > max(1.5 * top, min_steps) and warm[i]:
            long_step[i] = True
            if not flagged[k]:
                flagged[k] = True
                for x in range(1, min(m, 1024)):
                    hist[t, x] = max(hist[t, x] - 1, 0)
                top = 0
                for x in range(1023, 0, -1):
                    if hist[t, x] >= 2:
                        top = x
                        break
                longest[t] = top
            continue
        x = min(m, 1023)
        hist[t, x] += 1
        if m > top and hist[t, x] >= 2:
            longest[t] = m
    return step_n, long_step


def first_seen(keys: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which events carry a key never seen before (first occurrence in the batch only).

    ``seen`` is a sorted int64 array; returns (mask, the updated sorted array).
    """
    mask = np.zeros(keys.size, dtype=np.bool_)
    if keys.size == 0:
        return mask, seen
    # most keys are known: look each up in ``seen`` first, and sort only the new ones
    unknown = np.flatnonzero(seen[np.minimum(np.searchsorted(seen, keys), seen.size - 1)] != keys) if seen.size else (
        np.arange(keys.size))
    if unknown.size:
        uniq, first_ix = np.unique(keys[unknown], return_index=True)
        mask[unknown[first_ix]] = True
        seen = np.insert(seen, np.searchsorted(seen, uniq), uniq)
    return mask, seen


def pair(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two non-negative int ids as one int64 key (each id < 2**31)."""
    return (a.astype(np.int64) << 31) | (b.astype(np.int64) & 0x7FFFFFFF)


@njit(cache=True)
def habit_surprise(key, group, learn, scored, novel_only, counts, group_n, group_once, totals, prior_weight,
                   threshold):  # pragma: no cover - compiled
    """How surprising each scored event's key is for its group (an agent type's action, or transition), as of
    the event, and which scored events reach ``threshold``; learns the other ``learn`` events in place.

    A key seen ``c`` times among the group's ``m`` observations has probability ``c / (m + 1 + w)`` plus the
    group's novelty mass: Good-Turing's share of keys seen once, ``(once + 1) / (m + 1)``, shrunk toward every
    group's (``totals``: observations, keys seen once) with weight ``w`` (``prior_weight``) so a young group
    takes its peers' rate. The surprise is ``-log10`` of that probability; a group that keeps showing new keys
    is not surprised by one more. ``novel_only``: only keys the group never showed are scored. A hit is not
    learned (poisoning resistance). ``counts`` per dense key, ``group_n``/``group_once`` per group.
    """
    n = key.shape[0]
    out = np.zeros(n, dtype=np.float64)
    hit = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if not (learn[i] or scored[i]):
            continue
        k = key[i]
        g = group[i]
        c = counts[k]
        m = group_n[g]
        if scored[i] and (c == 0 or not novel_only):
            q_all = (totals[1] + 1.0) / (totals[0] + 1.0)
            q = (group_once[g] + 1.0 + prior_weight * q_all) / (m + 1.0 + prior_weight)
            p = min(c / (m + 1.0 + prior_weight) + q, 1.0)
            out[i] = -math.log10(p)
            hit[i] = out[i] >= threshold
        if learn[i] and not hit[i]:
            if c == 0:
                group_once[g] += 1.0
                totals[1] += 1.0
            elif c == 1:
                group_once[g] -= 1.0
                totals[1] -= 1.0
            counts[k] = c + 1.0
            group_n[g] = m + 1.0
            totals[0] += 1.0
    return out, hit


@njit(cache=True)
def session_chain(session, action, failed, last_action, fail_run):  # pragma: no cover - compiled
    """Each step's previous action in its session (-1: the first) and the run of consecutive failures of the
    same action the step ends (0 when it succeeded); ``last_action``/``fail_run`` per session, in place."""
    n = session.shape[0]
    prev = np.empty(n, dtype=np.int64)
    run = np.zeros(n, dtype=np.int64)
    for i in range(n):
        k = session[i]
        prev[i] = last_action[k]
        if failed[i]:
            run[i] = fail_run[k] + 1 if last_action[k] == action[i] and fail_run[k] > 0 else 1
        fail_run[k] = run[i]
        last_action[k] = action[i]
    return prev, run


@njit(cache=True)
def failure_run_surprise(key, failed, run, calls, fails, totals, prior_weight, rate_floor,
                         threshold):  # pragma: no cover - compiled
    """Surprise of each failure run (``run`` consecutive failures of one tool in a session) under the tool's
    failure rate for its agent type, as of the event; which reach ``threshold``; learns the rest in place.

    The rate is the key's failures over its calls, shrunk toward every key's (``totals``: calls, failures)
    with weight ``prior_weight`` and never below ``rate_floor``. A first failure is expected somewhere; each
    further consecutive failure multiplies the chance by the rate, so the surprise is
    ``(run - 1) * -log10(rate)``. A hit is not learned.
    """
    n = key.shape[0]
    out = np.zeros(n, dtype=np.float64)
    hit = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        k = key[i]
        if run[i] >= 2:
            p_all = (totals[1] + 1.0) / (totals[0] + 2.0)
            p = max((fails[k] + prior_weight * p_all) / (calls[k] + prior_weight), rate_floor)
            out[i] = (run[i] - 1) * -math.log10(min(p, 1.0))
            hit[i] = out[i] >= threshold
        if not hit[i]:
            calls[k] += 1.0
            totals[0] += 1.0
            if failed[i]:
                fails[k] += 1.0
                totals[1] += 1.0
    return out, hit
