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
                      min_count, ten, hours, hours_last, rhythm_tau):  # pragma: no cover - compiled
    """Fast decayed counts against the expected counts from a slow decayed baseline, at this hour of the day.

    ``fast`` has one column per window, of time constant ``tau_fast[w]`` (all decayed from ``fast_last``).
    Returns (fast counts after the event, expected fast counts from the baseline: both one column per window,
    and the hour's level). The slow baseline (an event rate, via a decayed count over ``tau_slow``) learns every
    event except those of a burst (in some window, a fast count at least ``min_count`` and ``gate`` x expected),
    so a burst cannot teach itself in while normal growth still can. ``floor`` is the least expected count in
    the first window (the others' in proportion), so an entity with a thin history is not judged against zero.

    The baseline is a daily rate; the expected counts are scaled by the level of this hour (UTC hours of event
    time, so the group's own rhythm whatever its time zone) in the entity's group ``ten`` (e.g. its tenant):
    the hour's share of the group's events (``hours``: decayed over ``rhythm_tau``; ``hours_last``: when) times
    24, never below 1, so an entity is not judged at its daily average in its group's busiest hours, and never
    above that average in its quiet ones. Bursts are not learned into the rhythm either. ``rhythm_tau`` of 0
    keeps the level at 1 (no rhythm).
    """
    n = ent.shape[0]
    nw = tau_fast.shape[0]
    f_out = np.empty((n, nw), dtype=np.float64)
    x_out = np.empty((n, nw), dtype=np.float64)
    l_out = np.ones(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        t = ts[i]
        g = ten[i]
        hour = (t // 3_600_000) % 24
        level = 1.0
        if rhythm_tau > 0:
            dh = t - hours_last[g]
            if dh > 0:
                f = math.exp(-dh / rhythm_tau)
                for h in range(24):
                    hours[g, h] *= f
                hours_last[g] = t
            tot = 0.0
            for h in range(24):
                tot += hours[g, h]
            level = max(1.0, (hours[g, hour] + 1.0) / (tot + 24.0) * 24.0)
        dt = t - fast_last[e]
        for w in range(nw):
            if dt > 0:
                fast[e, w] *= math.exp(-dt / tau_fast[w])
            fast[e, w] += 1.0
        if dt > 0:
            fast_last[e] = t
        ds = t - slow_last[e]
        if ds > 0:
            slow[e] *= math.exp(-ds / tau_slow)
            slow_last[e] = t
        if seen_since[e] == 0:
            seen_since[e] = t
        # expected events within tau_fast at the baseline rate; a decayed count over an age a
        # holds rate * tau * (1 - exp(-a / tau)) events, so young entities are not under-estimated
        age = max(t - seen_since[e], tau_fast[0])
        rate = max(slow[e] / (tau_slow * (1.0 - math.exp(-age / tau_slow))), floor / tau_fast[0])
        burst = False
        for w in range(nw):
            expected = rate * tau_fast[w] * level
            f_out[i, w] = fast[e, w]
            x_out[i, w] = expected
            if fast[e, w] >= min_count and fast[e, w] >= gate * expected:
                burst = True
        l_out[i] = level
        if not burst:
            slow[e] += 1.0
            if rhythm_tau > 0:
                hours[g, hour] += 1.0
    return f_out, x_out, l_out


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
def habit_probability(c, m, once, totals, prior_weight):  # pragma: no cover - compiled
    """The probability of a key seen ``c`` times among its group's ``m`` observations, ``once`` of its keys seen
    once (see ``habit_surprise``)."""
    q_all = (totals[1] + 1.0) / (totals[0] + 1.0)
    q = (once + 1.0 + prior_weight * q_all) / (m + 1.0 + prior_weight)
    return min(c / (m + 1.0 + prior_weight) + q, 1.0)


@njit(cache=True)
def habit_learn(k, g, counts, group_n, group_once, totals):  # pragma: no cover - compiled
    """Learn one observation of key ``k`` in group ``g``, in place (see ``habit_surprise``)."""
    c = counts[k]
    if c == 0:
        group_once[g] += 1.0
        totals[1] += 1.0
    elif c == 1:
        group_once[g] -= 1.0
        totals[1] -= 1.0
    counts[k] = c + 1.0
    group_n[g] += 1.0
    totals[0] += 1.0


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
    # one session with no step evidence (steps count only at ``threshold``): its alerts are the hits
    out, _, hit = habit_session_surprise(key, group, learn, scored, novel_only, counts, group_n, group_once, totals,
                                         prior_weight, threshold, np.zeros(key.shape[0], dtype=np.int64),
                                         np.zeros(1), np.inf, False, np.zeros(key.shape[0], dtype=np.bool_), np.inf)
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


@njit(cache=True)
def poisson_surprise_nb(k, mu):  # pragma: no cover - compiled
    """``detectors.calibration.poisson_surprise`` for compiled code: -log10 P(X >= k), X ~ Poisson(mu)."""
    if k <= 0.0 or k <= mu:
        return 0.0
    mu = max(mu, 1e-9)
    log_pk = k * math.log(mu) - mu - math.lgamma(k + 1.0)
    log_tail = log_pk - math.log1p(-min(mu / (k + 1.0), 0.999))
    return max(0.0, -log_tail / math.log(10.0))


@njit(cache=True)
def normal_surprise_nb(z):  # pragma: no cover - compiled
    """``detectors.calibration.normal_surprise`` for compiled code."""
    if z <= 0.0:
        return 0.0
    return -math.log10(max(0.5 * math.erfc(z / math.sqrt(2.0)), 1e-300))


# columns of ``key_rate_model``'s output, one row per event
KR_RATE_S, KR_RATE_W, KR_RATE_C, KR_RATE_E, KR_SURGE, KR_TOK_Z, KR_TOK_RUN, KR_TOK_BASE, KR_FAIL_S, KR_FAIL_C, \
    KR_FAIL_E, KR_WAKE_N, KR_P_HOUR, KR_P_NEW, KR_LEVEL, KR_GAP_RATE, KR_GAP_RATE_LONG = range(17)
# columns of the per-tenant rows ``key_rate_model`` keeps
TN_R10, TN_RLAST, TN_BASE, TN_BLAST, TN_SINCE, TN_F10, TN_FLAST, TN_FBASE, TN_FBLAST, TN_HLAST, TN_NK, TN_EV, \
    TN_NLAST, TN_KEYS, TN_R1, TN_R1LAST, TN_PEND, TN_PEND_H, TN_WEEK, TN_WLAST = range(20)
TN_COLS = 20


@njit(cache=True)
def _decay_cell(rows, r, col, last_col, now, tau):  # pragma: no cover - compiled
    """Decay ``rows[r, col]`` (a decayed count, time constant ``tau``) to ``now``; ``last_col`` holds its time."""
    dt = now - rows[r, last_col]
    if dt > 0:
        rows[r, col] *= math.exp(-dt / tau)
        rows[r, last_col] = now


@njit(cache=True)
def gamma_lower_ratio(shape, rate, z):  # pragma: no cover - compiled
    """The lower ``z``-sigma quantile of a Gamma(``shape``, ``rate``) (Wilson-Hilferty's cube-root normal
    approximation, floored at 0): a ratio of counts believed only as far as the counts bear it."""
    c = 1.0 / (9.0 * shape)
    q = 1.0 - c - z * math.sqrt(c)
    return shape * q * q * q / rate if q > 0.0 else 0.0


@njit(cache=True)
def hour_level_exposed(counts, hour, pend, now, since, tau):  # pragma: no cover - compiled
    """The rate at clock hour ``hour`` of the day over the average hour's, from decayed per-hour-of-day ``counts``
    (time constant ``tau``) less ``pend`` (the current clock hour's so far), each hour of the day divided by how
    much of it was seen since ``since`` (its completed occurrences, decayed alike): in a tenant's first days the
    hours seen twice are not twice as busy as those seen once. Shrunk toward 1 with the weight of one request."""
    h_abs = now // 3_600_000
    first = since // 3_600_000
    r = math.exp(-24.0 * 3_600_000 / tau)
    num = 0.0
    den = 0.0
    own_c = 0.0
    own_e = 0.0
    for h in range(24):
        last = h_abs - ((hour - h) % 24) if h != hour else h_abs - 24
        if last < first:
            continue
        m = (last - first) // 24 + 1
        e = math.exp(-(now - (last + 0.5) * 3_600_000) / tau) * (1.0 - r ** m) / (1.0 - r)
        c = max(counts[h] - (pend if h == hour else 0.0), 0.0)
        num += c
        den += e
        if h == hour:
            own_c, own_e = c, e
    if den <= 0.0 or num <= 0.0:
        return 1.0
    avg = num / den
    return (own_c + 1.0) / (own_e + 1.0 / avg) / avg


@njit(cache=True)
def key_rate_model(key, ten, ts, ok, stuff_fail, has_tok, tok_log,  # pragma: no cover - compiled
                   r1, r10, r60, r_last, base, base_last, since, k_last, wake, wake_n,
                   tok_mean, tok_var, tok_n, tok_run, tn, hours,
                   taus, tau_slow, prior_events, nb_size, hist_tau, dormant_ms, young_ms, min_rate, rate_gate,
                   tok_alpha, tok_min_sd, tok_warm, tok_gate, tok_run_z, fail_floor_share, fail_gate,
                   key_hours, rhythm_prior, level_floor, pend, pend_h, x1, x10, x60, report_min, tau_week):
    """A key's request counts against its own expected rate, its tokens per request against its own log-normal,
    its tenant's authentication failures against the tenant's own failure rate, and how often its tenant sees a key
    (re)appear and how quiet the hour is (``KR_P_NEW``, ``KR_P_HOUR``, ``KR_WAKE_N``: what
    ``appearance_model`` judges an appearing key by), as of each event (arrival order).

    Expected requests in a window of time constant ``taus[w]`` are the key's baseline rate (a decayed count over
    ``tau_slow``, shrunk toward its tenant's per-key rate with the weight of ``prior_events`` requests) times the
    key's own hour-of-day level (``key_level``: its rhythm, shrunk toward its tenant's with the weight of
    ``rhythm_prior`` requests, at least ``level_floor``) times the tenant's current surge (the other keys' counts
    over the last 10 minutes and the last minute over their expectation by the tenant's rate and its rhythm as of
    the clock hour's start, ``hour_level_exposed``, each the lower one-sigma bound of ``gamma_lower_ratio``, never
    below 1: the tenant's requests of the hour so far, ``TN_PEND``, are left out of that expectation, as a key's
    are of its own). The surprise is the best window's
    negative-binomial tail of the *other* requests in the window (the Gamma-Poisson predictive of a rate known from
    the events it rests on, at most ``nb_size``), less log10 of the number of windows. Events with a
    surprise of at least ``rate_gate`` are not learned into the key's rate and rhythm nor its tenant's rhythm
    (poisoning resistance). The surprise reported is judged without the requests whose own reported surprise
    reached ``rate_gate`` on at least ``report_min`` requests (``x1``/``x10``/``x60``: their decayed counts,
    explained by the alarm they raised), so the
    requests after an alarming burst are judged by what else is in their windows, not by the burst still decaying
    there; a key's requests join its own baseline and rhythm only once their clock hour is over
    (``pend``/``pend_h``: the count and hour held back): the cluster test's rates (``KR_GAP_RATE``, over at most
    two hours, and ``KR_GAP_RATE_LONG``, at no less than the key's average hour, for longer spans) leave them out,
    so a burst does not raise its own bar (a key whose history began this clock hour is judged by its tenant's
    per-key rate); the windows count them in. A key's history starts with its first successful request (``since``):
    failed guesses at a key id days before its owner starts using it are no quiet history. Tokens with a z-score
    of ``tok_gate`` or more and failures with a surprise of ``fail_gate`` or more are not learned either. Returns
    one row per event with the ``KR_*`` columns.

    A tenant's lull (a weekend): ``TN_WEEK`` holds its requests decayed over ``tau_week``, so its rate of the last
    week is known beside that of the last day (``tau_slow``). While the day's rate is below the week's, every
    expected count is raised by their ratio: a key's day-long baseline forgets its weekday level over a quiet
    weekend as its tenant's does, and the first weekday hours after it are judged by the level the tenant's week
    shows, not by the weekend's (``tau_week`` 0: no lull correction).
    """
    n = key.shape[0]
    nw = taus.shape[0]
    out = np.zeros((n, 17), dtype=np.float64)
    bonf = math.log10(nw)
    tau10 = taus[1]
    for i in range(n):
        k = key[i]
        t = ten[i]
        now = ts[i]
        # the tenant's hour-of-day rhythm (hours of its own event time), decayed over ``hist_tau``
        dh = now - tn[t, TN_HLAST]
        if dh > 0:
            f = math.exp(-dh / hist_tau)
            for h in range(24):
                hours[t, h] *= f
            tn[t, TN_HLAST] = now
        hour = (now // 3_600_000) % 24
        if tn[t, TN_PEND_H] != now // 3_600_000:  # the tenant's learned requests of this clock hour so far
            tn[t, TN_PEND] = 0.0
            tn[t, TN_PEND_H] = now // 3_600_000
        tot = 0.0
        for h in range(24):
            tot += hours[t, h]
        share = (hours[t, hour] + 1.0) / (tot + 24.0)
        level = max(1.0, share * 24.0)
        p_hour = 0.0
        for h in range(24):
            if hours[t, h] <= hours[t, hour]:
                p_hour += (hours[t, h] + 1.0) / (tot + 24.0)
        # the key's windows and the tenant's 10-minute count of successful requests
        dk = now - r_last[k]
        if dk > 0:
            r1[k] *= math.exp(-dk / taus[0])
            r10[k] *= math.exp(-dk / taus[1])
            r60[k] *= math.exp(-dk / taus[2])
            x1[k] *= math.exp(-dk / taus[0])
            x10[k] *= math.exp(-dk / taus[1])
            x60[k] *= math.exp(-dk / taus[2])
            r_last[k] = now
        r1[k] += 1.0
        r10[k] += 1.0
        r60[k] += 1.0
        _decay_cell(tn, t, TN_R10, TN_RLAST, now, tau10)
        _decay_cell(tn, t, TN_R1, TN_R1LAST, now, taus[0])
        if ok[i]:
            tn[t, TN_R10] += 1.0
            tn[t, TN_R1] += 1.0
        # baselines: the key's and the tenant's decayed counts over ``tau_slow``
        db = now - base_last[k]
        if db > 0:
            base[k] *= math.exp(-db / tau_slow)
            base_last[k] = now
            f = math.exp(-db / hist_tau)
            for h in range(24):
                key_hours[k, h] *= f
        # the key's requests of an earlier clock hour join its baseline and rhythm now: a request is judged
        # against a baseline that does not hold the requests of its own hour (a burst does not raise its own bar)
        h_abs = now // 3_600_000
        if pend[k] > 0.0 and pend_h[k] != h_abs:
            age = max(now - (pend_h[k] + 0.5) * 3_600_000, 0.0)
            base[k] += pend[k] * math.exp(-age / tau_slow)
            key_hours[k, int(pend_h[k]) % 24] += pend[k] * math.exp(-age / hist_tau)
            pend[k] = 0.0
        if since[k] == 0 and ok[i]:
            since[k] = now  # a key's history starts with its first successful request, not a failed guess at it
        dbt = now - tn[t, TN_BLAST]
        if dbt > 0:
            decay = math.exp(-dbt / tau_slow)
            tn[t, TN_BASE] *= decay
            tn[t, TN_FBASE] *= decay
            tn[t, TN_NK] *= decay
            tn[t, TN_EV] *= decay
            tn[t, TN_BLAST] = now
        if tn[t, TN_SINCE] == 0:
            tn[t, TN_SINCE] = now
        eff_t = tau_slow * (1.0 - math.exp(-max(now - tn[t, TN_SINCE], tau10) / tau_slow))
        rate_t = tn[t, TN_BASE] / (eff_t + tau10)
        lull = 1.0
        if tau_week > 0:
            _decay_cell(tn, t, TN_WEEK, TN_WLAST, now, tau_week)
            eff_w = tau_week * (1.0 - math.exp(-max(now - tn[t, TN_SINCE], tau10) / tau_week))
            lull = max(1.0, (tn[t, TN_WEEK] / (eff_w + tau10)) / max(rate_t, 1e-12))
        # the key's rate and level as of the start of this clock hour (its requests of the hour held back): the
        # cluster test of a few requests is judged by them, so a burst does not raise its own bar
        start = since[k] if since[k] > 0 else now
        eff_k = tau_slow * (1.0 - math.exp(-max(h_abs * 3_600_000 - start, 0.0) / tau_slow))
        prior = max(rate_t / max(tn[t, TN_KEYS], 1.0), min_rate)
        rate_d = max((base[k] + prior_events) / (eff_k + prior_events / prior), min_rate)
        # the windows (minutes to an hour of counts) by the rate and level with the hour's requests so far in
        eff_k = tau_slow * (1.0 - math.exp(-max(now - start, 0.0) / tau_slow))
        rate_k = max((base[k] + pend[k] + prior_events) / (eff_k + prior_events / prior), min_rate) * lull
        rate_d *= lull
        size = min(base[k] + pend[k] + prior_events, nb_size)
        # the other keys' expected count, by the tenant's rate and rhythm as of this clock hour's start (a surge's
        # own requests, learned as they come, would otherwise raise the expectation they are judged by)
        pend_t = tn[t, TN_PEND]
        level0 = max(1.0, hour_level_exposed(hours[t], hour, pend_t, now, tn[t, TN_SINCE], hist_tau))
        rate_t0 = max(tn[t, TN_BASE] - pend_t, 0.0) / (eff_t + tau10) * lull
        e_other = max(rate_t0 - rate_d, 0.0) * tau10 * level0
        # the surge over the last 10 minutes and the last minute (a release day's start lifts the 10-minute count
        # only slowly), each the lower one-sigma bound of its Gamma posterior: a surge believed only as far as the
        # other keys' counts bear it, so chance in a few requests at a quiet hour is no surge
        surge = max(1.0, gamma_lower_ratio(max(tn[t, TN_R10] - r10[k], 0.0) + 1.0, e_other + 1.0, 1.0),
                    gamma_lower_ratio(max(tn[t, TN_R1] - r1[k], 0.0) + 1.0, e_other * taus[0] / tau10 + 1.0, 1.0))
        # the key's level now and over the span its windows remember (the highest: a quiet evening is not judged
        # by the busy afternoon still in its hour window)
        own60 = key_level(key_hours, hours, k, t, now, rhythm_prior, level_floor)
        for back in (taus[1], taus[2], 2.0 * taus[2]):
            own60 = max(own60, key_level(key_hours, hours, k, t, now - back, rhythm_prior, level_floor))
        out[i, KR_GAP_RATE] = rate_d * own60 * surge
        out[i, KR_GAP_RATE_LONG] = rate_d * max(own60, 1.0) * surge
        key_hours[k, hour] += pend[k]
        own = key_level(key_hours, hours, k, t, now, rhythm_prior, level_floor)
        own10 = max(own, key_level(key_hours, hours, k, t, now - taus[1], rhythm_prior, level_floor))
        own60 = max(own10, key_level(key_hours, hours, k, t, now - taus[2], rhythm_prior, level_floor),
                    key_level(key_hours, hours, k, t, now - 2.0 * taus[2], rhythm_prior, level_floor))
        key_hours[k, hour] -= pend[k]
        best = -1.0
        best_w = 0
        best_l = own
        for w in range(nw):
            c = (r1[k] if w == 0 else (r10[k] if w == 1 else r60[k])) - 1.0
            lw = own if w == 0 else (own10 if w == 1 else own60)
            e = rate_k * taus[w] * lw * surge
            phi = 1.0 + e / size  # a Gamma-Poisson (negative binomial) spread, as a Poisson of scaled counts
            s = poisson_surprise_nb(c / phi, e / phi)
            if s > best:
                best = s
                best_w = w
                best_l = lw
        best = max(0.0, best - bonf)
        learn = best < rate_gate
        # what is reported is judged without the requests that were reported already (``x*``): an alarming burst
        # is explained, and the requests after it are judged by what else is in their windows
        explained = x60[k] > 1e-3
        c_best = r1[k] if best_w == 0 else (r10[k] if best_w == 1 else r60[k])
        if explained:
            best = -1.0
            for w in range(nw):
                c = (r1[k] - x1[k] if w == 0 else (r10[k] - x10[k] if w == 1 else r60[k] - x60[k]))
                lw = own if w == 0 else (own10 if w == 1 else own60)
                e = rate_k * taus[w] * lw * surge
                phi = 1.0 + e / size
                s = poisson_surprise_nb(max(c - 1.0, 0.0) / phi, e / phi)
                if s > best:
                    best = s
                    best_w = w
                    best_l = lw
                    c_best = c
            best = max(0.0, best - bonf)
        out[i, KR_RATE_S] = best
        out[i, KR_RATE_W] = best_w
        out[i, KR_RATE_C] = c_best
        out[i, KR_RATE_E] = rate_k * taus[best_w] * best_l * surge
        out[i, KR_SURGE] = surge
        out[i, KR_LEVEL] = best_l
        if best >= rate_gate and c_best >= report_min:  # reported (a burst of at least ``report_min`` requests)
            x1[k] += 1.0
            x10[k] += 1.0
            x60[k] += 1.0
        if learn:
            pend[k] += 1.0
            pend_h[k] = h_abs
            if ok[i]:
                tn[t, TN_BASE] += 1.0
                if tau_week > 0:
                    tn[t, TN_WEEK] += 1.0
        # tokens per request against the key's own log-normal; a run of large ones adds up
        if has_tok[i]:
            x = tok_log[i]
            z = 0.0
            if tok_n[k] >= tok_warm:
                z = (x - tok_mean[k]) / math.sqrt(max(tok_var[k], tok_min_sd * tok_min_sd))
            out[i, KR_TOK_Z] = z
            out[i, KR_TOK_BASE] = tok_mean[k]
            if z >= tok_run_z:
                tok_run[k] += normal_surprise_nb(z)
            else:
                tok_run[k] *= 0.5  # an ordinary request between large ones weakens the run, not ends it
            out[i, KR_TOK_RUN] = tok_run[k]
            if z < tok_gate:
                a = max(tok_alpha, 1.0 / (tok_n[k] + 1.0))
                d = x - tok_mean[k]
                tok_mean[k] += a * d
                tok_var[k] = (1.0 - a) * (tok_var[k] + a * d * d)
                tok_n[k] += 1.0
        # the tenant's authentication failures (not rate limiting) against its own failure rate
        _decay_cell(tn, t, TN_F10, TN_FLAST, now, tau10)
        if stuff_fail[i]:
            tn[t, TN_F10] += 1.0
            fail_rate = max(tn[t, TN_FBASE] / (eff_t + tau10), fail_floor_share * rate_t)
            e = fail_rate * tau10 * level * surge
            c = tn[t, TN_F10] - 1.0
            s = poisson_surprise_nb(c, e)
            out[i, KR_FAIL_S] = s
            out[i, KR_FAIL_C] = tn[t, TN_F10]
            out[i, KR_FAIL_E] = e
            if s < fail_gate:
                tn[t, TN_FBASE] += 1.0
        # a key that appears (never seen, or silent for ``dormant_ms``): how often its tenant sees one, and how quiet
        # this hour is in its rhythm (``kernels.appearance_model`` judges the appearance)
        p_new = (tn[t, TN_NK] + 1.0) / (tn[t, TN_EV] + 2.0)
        out[i, KR_P_HOUR] = p_hour
        out[i, KR_P_NEW] = p_new
        if ok[i]:
            first = k_last[k] == 0
            if first or now - k_last[k] >= dormant_ms:
                wake[k] = now
                wake_n[k] = 0.0
                tn[t, TN_NK] += 1.0
                if first:
                    tn[t, TN_KEYS] += 1.0
            wake_n[k] += 1.0
            tn[t, TN_EV] += 1.0
            k_last[k] = max(k_last[k], now)
            if learn:
                hours[t, hour] += 1.0
                tn[t, TN_PEND] += 1.0
            if now - wake[k] <= young_ms:
                out[i, KR_WAKE_N] = wake_n[k]
    return out


@njit(cache=True)
def block_log_zscore(ent, block, x, mean, var, seen, alpha, gate, min_var, warm):  # pragma: no cover - compiled
    """z-score of log1p(x) against the entity's baseline of the event's time-of-day block, bimodal-aware.

    ``mean``/``var``/``seen`` have a row per entity and a column per block (updated in place). The z-score is
    the smallest over the event's block and its two neighbours that have ``warm`` observations (a habit that
    straddles a block edge counts), ``inf`` when none has. The event is learned into its own block like
    ``log_zscore``: every event while the block is cold, after that only below ``gate``.
    """
    n = ent.shape[0]
    nb = mean.shape[1]
    z = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        b = block[i]
        v = math.log1p(x[i])
        best = np.inf
        for d in range(-1, 2):
            bb = (b + d) % nb
            if seen[e, bb] >= warm:
                best = min(best, (v - mean[e, bb]) / math.sqrt(max(var[e, bb], min_var)))
        z[i] = best
        own = (v - mean[e, b]) / math.sqrt(max(var[e, b], min_var)) if seen[e, b] >= warm else 0.0
        if own < gate:
            a = max(alpha, 1.0 / (seen[e, b] + 1.0))
            dv = v - mean[e, b]
            mean[e, b] += a * dv
            var[e, b] = (1.0 - a) * (var[e, b] + a * dv * dv)
            seen[e, b] += 1.0
    return z


@njit(cache=True)
def group_log_residual(grp, x, valid, mean, seen, alpha, step):  # pragma: no cover - compiled
    """``x`` less its group's typical value as of each event (arrival order); the groups' rows are updated.

    ``mean``/``seen`` are indexed by ``grp`` (e.g. a (tenant, endpoint) row): a robust exponentially weighted
    location (each update moves it at most ``step`` times its weight, so a run of outliers cannot drag it; weight
    ``max(alpha, 1 / (seen + 1))``). The first value of a group is its own location (residual 0). Invalid events
    give 0 and are not learned.
    """
    n = grp.shape[0]
    out = np.zeros(n, dtype=np.float64)
    for i in range(n):
        if not valid[i]:
            continue
        g = grp[i]
        if seen[g] == 0.0:
            mean[g] = x[i]
        d = x[i] - mean[g]
        out[i] = d
        a = max(alpha, 1.0 / (seen[g] + 1.0))
        mean[g] += a * min(max(d, -step), step)
        seen[g] += 1.0
    return out


@njit(cache=True)
def token_run_model(key, grp, has_tok, resid, tok_mean, tok_var, tok_n, tok_run, g_var, g_n, alpha, min_sd,
                    prior_n, gate, run_z, g_alpha):  # pragma: no cover - compiled
    """Each request's tokens (``resid``: log tokens relative to its endpoint's norm) against its key's own
    log-normal shrunk toward its peers', and the key's run of far-out requests, as of each event.

    A key's mean and spread (exponentially weighted, weight ``max(alpha, 1 / (n + 1))``) are blended with its
    endpoint group's (mean 0: the residual is relative to the group's norm; spread ``g_var``, the spread of every
    key's requests around that norm) with the weight of ``prior_n`` requests, so a young key is judged by its
    peers from its first request and by itself once it has a history. A request ``run_z`` standard deviations or
    more above adds its normal tail surprise to the key's run, an ordinary one halves it; requests at ``gate`` or
    more are not learned (neither into the key nor its group). Returns rows (z, run, the key's blended mean).
    """
    n = key.shape[0]
    out = np.zeros((n, 3), dtype=np.float64)
    floor = min_sd * min_sd
    for i in range(n):
        if not has_tok[i]:
            continue
        k = key[i]
        g = grp[i]
        x = resid[i]
        w = prior_n / (prior_n + tok_n[k])
        pv = max(g_var[g], floor) if g_n[g] > 0 else 1.0
        mean = (1.0 - w) * tok_mean[k]
        var = (1.0 - w) * (tok_var[k] + tok_mean[k] * tok_mean[k] * w) + w * pv
        z = (x - mean) / math.sqrt(max(var, floor))
        out[i, 0] = z
        out[i, 2] = mean
        if z >= run_z:
            tok_run[k] += normal_surprise_nb(z)
        else:
            tok_run[k] *= 0.5
        out[i, 1] = tok_run[k]
        if z < gate:
            a = max(alpha, 1.0 / (tok_n[k] + 1.0))
            d = x - tok_mean[k]
            tok_mean[k] += a * d
            tok_var[k] = (1.0 - a) * (tok_var[k] + a * d * d)
            tok_n[k] += 1.0
            b = max(g_alpha, 1.0 / (g_n[g] + 1.0))
            g_var[g] += b * (x * x - g_var[g])
            g_n[g] += 1.0
    return out


@njit(cache=True)
def daily_peak_zscore(ent, day, x, learn_all, cur_day, cur_max, mean, var, n_seen, alpha, min_var, warm,
                      rise):  # pragma: no cover - compiled
    """z-score of log1p(x) against each entity's distribution of daily peaks (its largest log1p(x) per UTC day).

    Per entity, ``cur_day``/``cur_max`` hold the current day and its peak so far; the first event of a later day
    folds that peak into the exponentially weighted ``mean``/``var``/``n_seen`` (learning rate at least
    ``alpha``). An event is scored against the days before its own (``inf`` while the entity has fewer than
    ``warm`` days). It counts toward its day's peak as it is where ``learn_all`` (the tenant's learning period) or
    the entity is not warm yet, else as at most ``rise`` standard deviations above the usual peak: one bulk
    export moves the peaks by a bounded step, while a peak that recurs every day (a nightly batch) is followed.
    """
    n = ent.shape[0]
    z = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        if day[i] > cur_day[e]:
            if cur_day[e] >= 0.0 and cur_max[e] >= 0.0:
                a = max(alpha, 1.0 / (n_seen[e] + 1.0))
                d = cur_max[e] - mean[e]
                mean[e] += a * d
                var[e] = (1.0 - a) * (var[e] + a * d * d)
                n_seen[e] += 1.0
            cur_day[e] = day[i]
            cur_max[e] = -1.0
        v = math.log1p(x[i])
        sd = math.sqrt(max(var[e], min_var))
        warm_e = n_seen[e] >= warm
        z[i] = (v - mean[e]) / sd if warm_e else np.inf
        counted = v if (learn_all[i] or not warm_e) else min(v, mean[e] + rise * sd)
        cur_max[e] = max(cur_max[e], counted)
    return z


@njit(cache=True)
def key_level(key_hours, hours, k, t, now, prior, floor):  # pragma: no cover - compiled
    """A key's request rate at ``now``'s time of day relative to its 24-hour average (1: an average hour).

    ``key_hours[k]`` / ``hours[t]`` are the key's and its tenant's decayed request counts per hour of the day.
    The key's share of each hour is its own count shrunk toward its tenant's share (itself smoothed by one
    request per hour) with the weight of ``prior`` requests, so a young key starts from its tenant's rhythm and
    a service key in a tenant of office workers keeps its own flat one. The shares are read with a triangular
    kernel 1.5 hours wide around the exact time of day (no step at the top of the hour), times 24; at least
    ``floor``.
    """
    k_tot = 0.0
    t_tot = 0.0
    for h in range(24):
        k_tot += key_hours[k, h]
        t_tot += hours[t, h]
    x = (now % 86_400_000) / 3_600_000.0
    h0 = int(x)
    acc = 0.0
    wsum = 0.0
    for d in range(-2, 3):
        w = 1.5 - abs(h0 + d + 0.5 - x)
        if w <= 0.0:
            continue
        b = (h0 + d) % 24
        g = (hours[t, b] + 1.0) / (t_tot + 24.0)
        acc += w * (key_hours[k, b] + prior * g) / (k_tot + prior)
        wsum += w
    return max(24.0 * acc / wsum, floor)


APPEAR_BINS = 16  # a tenant's past appearances by how quiet their hour was: -log10(hour share) in quarter decades
APPEAR_WIDTH = 0.25


@njit(cache=True)
def appearance_model(key, ten, ts, wake_n, p_hour, p_new, rate, hist, hist_last, tau, prior_w, nb_size, gate,
                     app_min, quiet_max, app_s, app_t, app_rate, app_bin):  # pragma: no cover - compiled
    """How unusual a key that (re)appears in its tenant is, as of each of its first calls (arrival order).

    ``wake_n``: the key's calls since it appeared (``KR_WAKE_N``: 1 on the appearing call, 0 where the key is not
    young); ``p_hour``: the share of the tenant's activity at hours at least as quiet as this one (its rhythm);
    ``p_new``: the tenant's new keys per request; ``rate``: the key's expected requests per ms (for a new key, its
    tenant's per-key rate at this hour and surge). On the appearing call the appearance's surprise is ``-log10(p_new
    * q)``, with ``q`` the share of the tenant's past appearances at hours at least this quiet (``hist``: a
    histogram per tenant of past appearances by ``-log10(p_hour)``, decayed over ``tau``) shrunk toward ``p_hour``
    with the weight of ``prior_w`` appearances, and never below ``p_hour``: a tenant whose new keys appear at night
    is not surprised by one more, while a tenant whose keys all first appeared in its busy hours (as every key does
    on its first day) is not made more surprised than its rhythm says; an appearance whose ``q`` is above
    ``quiet_max`` (not at a quiet hour) has surprise 0. Each later call adds the surprise of the
    key's calls since it appeared under its expected rate then (a Gamma-Poisson tail, the rate known as ``nb_size``
    requests' worth): a burst of calls seconds apart, not a key used now and then. Once the sum reaches ``gate``
    (with the appearance's own surprise at least ``app_min``: what raises ``api.unknown_key``) the appearance is
    taken out of ``hist`` (an attack does not teach its tenant that keys appear at night). Per key: ``app_s``
    (appearance surprise), ``app_t`` (its time), ``app_rate`` (expected rate then), ``app_bin`` (its ``hist`` bin +
    1, 0 once out). Returns rows (appearance surprise, calls surprise, q).
    """

    n = key.shape[0]
    out = np.zeros((n, 3), dtype=np.float64)
    nb = hist.shape[1]
    for i in range(n):
        wn = wake_n[i]
        if wn < 1.0:
            continue
        k = key[i]
        t = ten[i]
        now = ts[i]
        dt = now - hist_last[t]
        if dt > 0:
            f = math.exp(-dt / tau)
            for b in range(nb):
                hist[t, b] *= f
            hist_last[t] = now
        if wn == 1.0:
            ph = min(max(p_hour[i], 1e-12), 1.0)
            b = min(int(-math.log10(ph) / APPEAR_WIDTH), nb - 1)
            tot = 0.0
            le = 0.0
            for j in range(nb):
                tot += hist[t, j]
                if j >= b:
                    le += hist[t, j]
            q = max((le + prior_w * ph) / (tot + prior_w), ph)
            # an appearance at an hour outside the tenant's quiet tail (``q`` above ``quiet_max``) is not judged
            app_s[k] = -math.log10(max(p_new[i], 1e-12)) - math.log10(q) if q <= quiet_max else 0.0
            app_t[k] = now
            app_rate[k] = rate[i]
            hist[t, b] += 1.0
            app_bin[k] = b + 1.0
            out[i, 2] = q
        e = app_rate[k] * max(now - app_t[k], 0.0)
        phi = 1.0 + e / nb_size
        calls = poisson_surprise_nb((wn - 1.0) / phi, e / phi)
        out[i, 0] = app_s[k]
        out[i, 1] = calls
        if app_s[k] + calls >= gate and app_s[k] >= app_min and app_bin[k] > 0.0:
            j = int(app_bin[k]) - 1
            hist[t, j] = max(0.0, hist[t, j] - math.exp(-max(now - app_t[k], 0.0) / tau))
            app_bin[k] = 0.0
    return out


# Lanczos' approximation of the gamma function (g and the 13 terms of its rational sum), the one CPython's
# math.lgamma evaluates: ``lgamma_many`` follows the same operations so that it returns the same bits
_LANCZOS_G = 6.024680040776729583740234375
_LANCZOS_NUM = np.array([
    23531376880.410759688572007674451636754734846804940, 42919803642.649098768957899047001988850926355848959,
    35711959237.355668049440185451547166705960488635843, 17921034426.037209699919755754458931112671403265390,
    6039542586.3520280050642916443072979210699388420708, 1439720407.3117216736632230727949123939715485786772,
    248874557.86205415651146038641322942321632125127801, 31426415.585400194380614231628318205362874684987640,
    2876370.6289353724412254090516208496135991145378768, 186056.26539522349504029498971604569928220784236328,
    8071.6720023658162106380029022722506138218516325024, 210.82427775157934587250973392071336271166969580291,
    2.5066282746310002701649081771338373386264310793408])
_LANCZOS_DEN = np.array([0.0, 39916800.0, 120543840.0, 150917976.0, 105258076.0, 45995730.0, 13339535.0,
                         2637558.0, 357423.0, 32670.0, 1925.0, 66.0, 1.0])


@njit(cache=True)
def lgamma_many(x):  # pragma: no cover - compiled
    """``math.lgamma`` of each positive element of ``x``, bit for bit (inf at x <= 0, nan at nan).

    Numba's own ``math.lgamma`` calls the C library's, which differs from Python's in the last bits; the
    scores of ``calibration.poisson_surprise_many`` must not move, so this evaluates Python's formula: the
    rational Lanczos sum (in powers of 1/x from 5 up, where powers of x would overflow), then
    log(sum) - g + (x - 1/2) (log(x + g - 1/2) - 1).
    """
    out = np.empty(x.shape[0], dtype=np.float64)
    m = _LANCZOS_NUM.shape[0]
    for i in range(x.shape[0]):
        v = x[i]
        if v != v:
            out[i] = v
        elif v <= 0.0 or v == math.inf:
            out[i] = math.inf
        elif v == math.floor(v) and v <= 2.0:
            out[i] = 0.0
        elif v < 1e-20:
            out[i] = -math.log(v)
        else:
            num = 0.0
            den = 0.0
            if v < 5.0:
                for j in range(m - 1, -1, -1):
                    num = num * v + _LANCZOS_NUM[j]
                    den = den * v + _LANCZOS_DEN[j]
            else:
                for j in range(m):
                    num = num / v + _LANCZOS_NUM[j]
                    den = den / v + _LANCZOS_DEN[j]
            r = math.log(num / den) - _LANCZOS_G
            r += (v - 0.5) * (math.log(v + _LANCZOS_G - 0.5) - 1.0)
            out[i] = r
    return out


@njit(cache=True)
def log_zscore_excess(ent, x, mean, var, n_seen, alpha, gate, min_var, warm):  # pragma: no cover - compiled
    """``log_zscore`` that also returns how far each event's log1p(x) lies above its entity's mean as of the event,
    in log units: a z-score of 3 is a large step for an entity whose reads keep to one size and a small one for an
    entity whose baseline spans two modes, and the excess says which.

    Returns ``(z, excess)``; both are 0 for an entity with fewer than ``warm`` observations. Each event goes through
    ``log_zscore`` itself, so the two score and learn alike.
    """
    n = ent.shape[0]
    z = np.empty(n, dtype=np.float64)
    excess = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        before, cold = mean[e], n_seen[e] < warm
        z[i] = log_zscore(ent[i:i + 1], x[i:i + 1], mean, var, n_seen, alpha, gate, min_var, warm)[0]
        excess[i] = 0.0 if cold else math.log1p(x[i]) - before
    return z, excess


@njit(cache=True)
def token_scope_model(key, grp, has_tok, resid, skip, tok_mean, tok_var, tok_n, tok_run, g_var, g_n, peers, alpha,
                      var_alpha, min_sd, prior_n, gate, run_z, g_alpha, norm, norm_n,
                      norm_step):  # pragma: no cover - compiled
    """Each request's tokens (``resid``: log tokens relative to its endpoint's norm) against its key's own
    log-normal, shrunk toward its endpoint peers as a hierarchical normal, and the key's run of far-out requests.

    Two spreads are learned per endpoint group (``peers`` columns: within-key variance and its requests, between-key
    variance and its updates): how much one key's requests vary around its own mean (pooled over its keys), and
    how much keys' means differ (each key weighing about as much as another, not by its request count: a few
    busy keys do not make every key look alike). A key's mean is shrunk toward the norm by the ratio of the
    two (a key with n requests weighs n against it), its spread toward the pooled within-key spread with the
    weight of ``prior_n`` requests, and the uncertainty of its mean widens the spread it is judged with. A young
    key is thus judged as keys differ (its mean is still unknown) and as one key's requests vary (known from its
    peers), not by the total spread of every key's requests, which held keys with a few hundred requests to a
    far wider spread than their own.

    The key's mean weighs each request ``max(alpha, 1/(n+1))``, its spread ``max(var_alpha, 1/(n+1))`` (a long
    memory: a spread estimated from fewer requests is low by chance often enough that ordinary large requests look
    extreme). A request ``run_z`` standard deviations or more above adds its normal tail surprise to the key's
    run, an ordinary one halves it. Not learned (key or group): requests at ``gate`` or more, and those ``skip``
    marks (at a rate the key's baseline finds unusual: a burst's tokens are not the key's habit). Returns rows
    (z, run, the key's blended mean, the request's own tail surprise).

    With ``norm_n`` holding the groups' rows, ``resid`` holds each request's log tokens and is made relative to its
    endpoint's norm here, as of the request (written back in place): the norm (``norm``, a robust running location
    as in ``group_log_residual``: weight ``max(g_alpha, 1 / (seen + 1))``, each move at most ``norm_step`` times it)
    learns each request less its key's own offset (the key's shrunk mean), so it is the endpoint's size for a
    typical key, not the size of whichever keys are busy now: a busy key with large requests that dominates its
    endpoint by day and is quiet at night does not lift the norm by day and leave it low at night, where its
    ordinary requests would look many times its usual. With ``norm_n`` empty, ``resid`` is taken as given.
    """
    n = key.shape[0]
    out = np.zeros((n, 4), dtype=np.float64)
    floor = min_sd * min_sd
    keyed = norm_n.shape[0] > 0
    for i in range(n):
        if not has_tok[i]:
            continue
        k = key[i]
        g = grp[i]
        if keyed:
            if norm_n[g] == 0.0:
                norm[g] = resid[i]
            resid[i] -= norm[g]
        x = resid[i]
        total = max(g_var[g], floor) if g_n[g] > 0.0 else 1.0
        within = max(peers[g, 0], floor) if peers[g, 1] > 0.0 else total
        between = max(peers[g, 2], 0.01) if peers[g, 3] > 0.0 else max(total - within, 0.01)
        kappa = within / between
        nk = tok_n[k]
        mean = nk * tok_mean[k] / (nk + kappa)
        spread = (nk * tok_var[k] + prior_n * within) / (nk + prior_n)
        z = (x - mean) / math.sqrt(max(spread * (1.0 + 1.0 / (nk + kappa)), floor))
        s = normal_surprise_nb(z)
        out[i, 0] = z
        out[i, 2] = mean
        out[i, 3] = s
        if z >= run_z:
            tok_run[k] += s
        else:
            tok_run[k] *= 0.5
        out[i, 1] = tok_run[k]
        if keyed:
            b = max(g_alpha, 1.0 / (norm_n[g] + 1.0))
            norm[g] += b * min(max(x - mean, -norm_step), norm_step)
            norm_n[g] += 1.0
        if z < gate and not skip[i]:
            d = x - tok_mean[k]
            a = max(alpha, 1.0 / (nk + 1.0))
            av = max(var_alpha, 1.0 / (nk + 1.0))
            tok_mean[k] += a * d
            tok_var[k] = (1.0 - av) * (tok_var[k] + av * d * d)
            tok_n[k] += 1.0
            nk += 1.0
            b = max(g_alpha, 1.0 / (g_n[g] + 1.0))
            g_var[g] += b * (x * x - g_var[g])
            g_n[g] += 1.0
            if nk >= 6.0:  # a key with a few requests: its mean and its deviations from it count
                b = max(0.01 * min(1.0, 20.0 / nk), 1.0 / (peers[g, 3] + 1.0))
                peers[g, 2] += b * (tok_mean[k] * tok_mean[k] - peers[g, 0] / nk - peers[g, 2])
                peers[g, 3] += 1.0
                b = max(g_alpha, 1.0 / (peers[g, 1] + 1.0))
                peers[g, 0] += b * (d * d * (nk - 1.0) / nk - peers[g, 0])
                peers[g, 1] += 1.0
    return out


@njit(cache=True)
def habit_session_surprise(key, group, learn, scored, novel_only, counts, group_n, group_once, totals, prior_weight,
                           threshold, session, evidence, step_min, new_evidence, signed,
                           signed_threshold):  # pragma: no cover - compiled
    """``habit_surprise`` judged per session: each scored event's surprise, its session's accumulated evidence
    as of it, and which events alert; learns the events that do not alert, in place.

    A session's rare steps (surprise at least ``step_min``; with ``new_evidence`` only keys the group never
    showed, a rare key it has shown being one of its habits) add up in ``evidence`` (per session index, in
    place) as independent chances multiply; a step alerts when it reaches ``threshold`` alone or adds to a
    session whose evidence reaches it. An alerting step is not learned, so an alerted session's later rare steps
    (an attack's other tools) do not become the group's habits either. The surprise and learning are
    ``habit_surprise``'s; with ``step_min`` infinite the alerts are its hits.

    ``signed`` marks events that carry a signature of their own (an agent's step triggered directly by content it
    read): such an event whose key its group never showed alerts from ``signed_threshold`` (a lower floor, still
    the group's own novelty rate: a group that keeps showing new keys is not surprised by one more). An event that
    alerts by its signature alone is learned: a key that alerts once by it is known to the group after, so a new
    habit of the group costs one alert, not one on every use (an unlearned key would only grow more surprising).
    """
    n = key.shape[0]
    out = np.zeros(n, dtype=np.float64)
    total = np.zeros(n, dtype=np.float64)
    alert = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        if not (learn[i] or scored[i]):
            continue
        k = key[i]
        g = group[i]
        c = counts[k]
        m = group_n[g]
        strong = False
        if scored[i] and (c == 0 or not novel_only):
            out[i] = -math.log10(habit_probability(c, m, group_once[g], totals, prior_weight))
            s = session[i]
            sign = signed[i] and c == 0 and out[i] >= signed_threshold
            if out[i] >= threshold or sign or (out[i] >= step_min and (c == 0 or not new_evidence)):
                evidence[s] += out[i]
                strong = evidence[s] >= threshold
                alert[i] = strong or sign
            total[i] = evidence[s]
        if learn[i] and not strong:
            habit_learn(k, g, counts, group_n, group_once, totals)
    return out, total, alert


@njit(cache=True)
def rising_day_totals(ent, day, x, cur_day, cur_tot, prev1, prev2, prev3, prev4):  # pragma: no cover - compiled
    """How many days running each event's entity's day total has risen: the running total of its UTC day so far
    (with the event) above the total of its last closed day is one, that above the one before two, and so on up to
    four (closed days are days with events; ``prev1..4`` keep their log1p totals, newest first, -1 for none).

    Under no trend the order of ``r + 1`` day totals is any of (r + 1)! alike, so ``r`` rises running are about 1 in
    (r + 1)!. Returns ``(rises, today, last)``: the count, the day's running total and the last closed day's total
    (rows, -1 for none), each as of the event.
    """
    n = ent.shape[0]
    rises = np.zeros(n, dtype=np.int64)
    today = np.empty(n, dtype=np.float64)
    last = np.empty(n, dtype=np.float64)
    for i in range(n):
        e = ent[i]
        if day[i] > cur_day[e]:
            if cur_day[e] >= 0:
                prev4[e], prev3[e], prev2[e], prev1[e] = prev3[e], prev2[e], prev1[e], math.log1p(cur_tot[e])
            cur_day[e] = day[i]
            cur_tot[e] = 0.0
        cur_tot[e] += x[i]
        v = math.log1p(cur_tot[e])
        r = 0
        for p in (prev1[e], prev2[e], prev3[e], prev4[e]):
            if p < 0 or not v > p:
                break
            r += 1
            v = p
        rises[i] = r
        today[i] = cur_tot[e]
        last[i] = math.expm1(prev1[e]) if prev1[e] >= 0 else -1.0
    return rises, today, last


@njit(cache=True)
def nb_tail_surprise(k, mu, size):  # pragma: no cover - compiled
    """-log10 P(X >= k) for X negative binomial of mean ``mu`` and size ``size`` (a Poisson whose rate is known
    as from ``size`` events: Gamma(size) uncertain), summed exactly from ``k`` up (no scaled-Poisson
    approximation: at a dozen requests over a mean of one or two, that approximation is a decade too sure)."""
    if k <= 0.0 or k <= mu:
        return 0.0
    mu = max(mu, 1e-12)
    q = mu / (size + mu)  # the failure probability of each trial
    log_pk = (math.lgamma(k + size) - math.lgamma(size) - math.lgamma(k + 1.0) + size * math.log1p(-q)
              + k * math.log(q))
    acc = 1.0
    term = 1.0
    x = k
    for _ in range(10_000):
        term *= (x + size) / (x + 1.0) * q
        acc += term
        x += 1.0
        if term < 1e-12 * acc:
            break
    return max(0.0, -(log_pk + math.log(acc)) / math.log(10.0))


@njit(cache=True)
def gap_scan_nb(key, ts, rate, ring, ks, n_short, size, rate_long, long_ms):  # pragma: no cover - compiled
    """How surprising each key's latest requests are as a cluster: for each ``k`` of ``ks``, the time since the
    key's k-th previous request against its expected rate (``rate``: requests per ms at this event).

    Under a Poisson process of rate r, the time from one request to the k-th after it is Gamma(k, r), so
    P(gap <= d) = P(Poisson(r d) >= k): an exact scan over the last k+1 requests, whatever their spacing
    (a decayed count of fixed time constant blurs a burst of a few requests spaced a minute apart). The rate is
    known as from ``size[i]`` requests (a young key's rests on fewer), so the count is negative binomial of that
    size, its tail summed exactly (``nb_tail_surprise``). ``ring`` holds each key's latest request times (most
    recent first; 0: none), updated in place. Returns per event (best surprise over the first ``n_short`` k
    before the multiple-test correction, its k, its gap in ms, the requests expected in it) and the same over
    every k. A gap longer than ``long_ms`` spans hours of the key's rhythm: it is judged at ``rate_long`` (the
    key's rate at no less than its average hour) instead.
    """
    n = key.shape[0]
    depth = ring.shape[1]
    out = np.zeros((n, 8), dtype=np.float64)
    for i in range(n):
        k = key[i]
        now = ts[i]
        for j in range(ks.shape[0]):
            kk = ks[j]
            if kk > depth:
                continue
            prev = ring[k, kk - 1]
            if prev <= 0.0:
                continue
            span = max(now - prev, 1.0)
            mu = (rate[i] if span <= long_ms else rate_long[i]) * span
            s = nb_tail_surprise(float(kk), mu, size[i])
            for part in range(2):
                if (part == 1 or j < n_short) and s > out[i, 4 * part]:
                    out[i, 4 * part] = s
                    out[i, 4 * part + 1] = kk
                    out[i, 4 * part + 2] = now - prev
                    out[i, 4 * part + 3] = mu
        for j in range(depth - 1, 0, -1):
            ring[k, j] = ring[k, j - 1]
        ring[k, 0] = now
    return out


@njit(cache=True)
def hour_rhythm_sensitive(ent, group, hour, ts, first, ent_hist, group_hist, recent, recent_last, short, short_last,
                          new_hour, carry, carry_ts, tau_ms, short_ms, prior, dispersion, extra, judged, floor,
                          loc, pending, pend_max, ep_n, raise_floor, weight, rate_share):  # pragma: no cover - compiled
    """Surprise of each entity's recent activity at this hour of day, against its own hour-of-day rhythm, judged at
    two time scales, counting only the accesses that matter.

    ``ent_hist``/``group_hist`` (rows of 24 hour-of-day counts, the entity's and its peer group's) and the decayed
    counts per entity are updated in place. The entity's share of activity in the 3 hours around the event's hour
    starts from its group's share (worth ``prior`` events); times the entity's events per day it gives the events
    expected at this hour, and each of two decayed counts of its accesses (``recent`` with time constant
    ``tau_ms``, ``short`` with ``short_ms``, this one included) is judged by its Poisson tail (scaled by
    ``dispersion`` for a busy entity) under the count that share expects at that scale; the surprise is the
    larger of the two less log10(2) (two tests). A burst of reads
    within minutes is judged on the minutes, a longer night's work on the half hours; the minutes only in an hour
    window (the event's hour and its neighbours) the entity had no learned access in before its current episode
    (``ep_n``: its accesses learned since its episode began), as how a working hour's accesses cluster within
    minutes (a batch's reads) is not known from the hourly rhythm. Each event adds one to its
    entity's histogram, but only an entity's first event at each hour of the day (``new_hour``) adds one to its
    group's: the group's rhythm counts how many of its entities work at each hour, so a few accounts reading
    thousands of times at night (nightly batches) do not make the night look busy for everyone else.
    ``extra`` is other evidence an event carries (a new IP's surprise); it holds for the entity's later events
    within ``tau_ms`` (``carry``/``carry_ts`` per entity), so the activity it starts is judged with it. A judged
    event whose surprise plus extra reaches ``floor`` is held
    back, not learned at once (the first reads of an unusual night do not teach that hour in while the night builds
    up): ``pending``/``pend_max`` (rows ``loc``: the entity's row in them) count the held-back events per hour and
    their largest surprise, and when the entity's episode ends (its next event comes more than ``tau_ms`` later)
    they are learned after all unless the episode reached ``raise_floor`` (an episode that is raised is not
    learned; one that was not, such as a service account's nightly batch, is, so its nights become its rhythm).
    The decayed counts add ``weight`` per event (1 for a sensitive access, 0 for others), and the count expected at
    this hour is the entity's expected accesses times ``rate_share`` (its share of such accesses), so a session of
    confidential reads at night by someone who mostly reads public data is judged as the rarer thing it is, while
    an account that reads only sensitive data (weights and shares of 1: every access counts) is judged on all of
    them. Returns (surprise, extra in force, the entity's share of the 3-hour window, the decayed count, the
    expected count, the time constant in ms) of the deciding scale, and the group's share of the 3-hour window
    (its principals at work there).
    """
    n = ent.shape[0]
    s_out = np.empty(n, dtype=np.float64)
    x_out = np.empty(n, dtype=np.float64)
    share_out = np.empty(n, dtype=np.float64)
    k_out = np.empty(n, dtype=np.float64)
    mu_out = np.empty(n, dtype=np.float64)
    tau_out = np.empty(n, dtype=np.float64)
    g_out = np.empty(n, dtype=np.float64)
    two = math.log10(2.0)
    for i in range(n):
        e = ent[i]
        g = group[i]
        h = hour[i]
        r = loc[i]
        dt = ts[i] - recent_last[e]
        if dt > tau_ms and pend_max[r] > 0.0:  # the entity's last episode is over: learn it unless it was raised
            if pend_max[r] < raise_floor:
                for j in range(24):
                    ent_hist[e, j] += pending[r, j]
            for j in range(24):
                pending[r, j] = 0.0
            pend_max[r] = 0.0
        if dt > tau_ms:
            ep_n[r] = 0.0
        if dt > 0:
            recent[e] *= math.exp(-dt / tau_ms)
            recent_last[e] = ts[i]
        recent[e] += weight[i]
        dt = ts[i] - short_last[e]
        if dt > 0:
            short[e] *= math.exp(-dt / short_ms)
            short_last[e] = ts[i]
        short[e] += weight[i]
        e_tot = 0.0
        g_tot = 0.0
        for j in range(24):
            e_tot += ent_hist[e, j]
            g_tot += group_hist[g, j]
        lo, hi = (h + 23) % 24, (h + 1) % 24
        e_win = ent_hist[e, lo] + ent_hist[e, h] + ent_hist[e, hi]
        g_win = group_hist[g, lo] + group_hist[g, h] + group_hist[g, hi]
        g_share = (g_win + 1.5) / (g_tot + 12.0)
        share = (e_win + prior * g_share) / (e_tot + prior)
        per_hour = share / 3.0 * (e_tot + 1.0) / max((ts[i] - first[e]) / 86_400_000.0, 1.0) * rate_share[i]
        best, k_best, mu_best, tau_best = -1.0, 0.0, 0.0, tau_ms
        # the minutes are judged only in an hour window the entity never worked in: where it does work, how its
        # accesses cluster within minutes (a batch's reads) is not known from its hourly rhythm
        scales = 2 if e_win - ep_n[r] <= 0.0 else 1
        for scale in range(scales):
            mu = per_hour * (tau_ms if scale == 0 else short_ms) / 3_600_000.0
            k = recent[e] if scale == 0 else short[e]
            d = 1.0 + mu / dispersion
            s = poisson_surprise_nb(k / d, mu / d)
            if s > best:
                best, k_best, mu_best, tau_best = s, k, mu, tau_ms if scale == 0 else short_ms
        s = max(best - two, 0.0) if scales == 2 else best
        if extra[i] > 0.0:
            carry[e] = extra[i]
            carry_ts[e] = ts[i]
        x = carry[e] if ts[i] - carry_ts[e] <= tau_ms else 0.0
        s_out[i] = s
        x_out[i] = x
        share_out[i] = share
        k_out[i] = k_best
        mu_out[i] = mu_best
        tau_out[i] = tau_best
        g_out[i] = g_share
        if judged[i] and s + x >= floor:
            pending[r, h] += 1.0
            pend_max[r] = max(pend_max[r], s + x)
        else:
            ent_hist[e, h] += 1.0
            ep_n[r] += 1.0
        group_hist[g, h] += new_hour[i]
    return s_out, x_out, share_out, k_out, mu_out, tau_out, g_out


@njit(cache=True)
def scope_run(key, scope, new, start, s0, n_before, share, weight, min_n0, run_scope, run_len, run_n0, run_s,
              run_q, last_new):  # pragma: no cover - compiled
    """The run of requests a key makes on a scope it just took up, and how unusual that run is.

    ``new``: the event is a key's first use of a scope (after ``n_before`` requests of the key); ``start``: one that
    is judged (its surprise ``s0``; ``share``: the share of its tenant's keys that use the scope). ``n0``, the
    requests the key made on the same set of scopes before it, counts from the key's previous new scope
    (``last_new``: its request count then; 0, its first request). Each later request of the key on that scope
    lengthens the run; a request on any other scope ends it. Under the key's own habits a scope it never used in
    ``n0`` requests is a small share of its traffic: after ``i`` uses the next request is on it with probability
    ``(i + weight * share) / (n0 + 1 + i + weight)`` (a Chinese-restaurant process whose new scope starts from its
    peers' share, worth ``weight`` requests, so a young key taking up a scope most keys use is not judged by its
    few requests alone); each request of the run adds its ``-log10`` to the first use's surprise. A key still
    taking up scopes has a small ``n0``, and its runs are no news: a first use with ``n0`` not above ``min_n0``
    starts no run.

    Per key state (``run_*``): the scope of the current run (-1: none), its length, ``n0``, its surprise so far and
    the peers' share. Returns ``(length, surprise, n0)`` per event: the run as of the event (0 where the event is
    in none), the first use's surprise plus the run's, and the run's ``n0``.
    """
    n = key.shape[0]
    length = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.float64)
    base = np.zeros(n, dtype=np.float64)
    for i in range(n):
        k = key[i]
        since = n_before[i] - last_new[k]
        if new[i]:
            last_new[k] = n_before[i]
        if start[i] and since > min_n0:
            run_scope[k] = scope[i]
            run_len[k] = 1.0
            run_n0[k] = since
            run_s[k] = s0[i]
            run_q[k] = share[i]
        elif run_len[k] > 0.0 and scope[i] == run_scope[k]:
            used = run_len[k]
            m = run_n0[k]
            run_s[k] -= math.log10((used + weight * run_q[k]) / (m + 1.0 + used + weight))
            run_len[k] = used + 1.0
        else:
            run_len[k] = 0.0
            run_scope[k] = -1.0
            continue
        length[i] = int(run_len[k])
        base[i] = run_n0[k]
        total[i] = run_s[k]
    return length, total, base
