"""Numba kernels against pure-Python references."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.kernels import (
    after_mark,
    cusum,
    decayed_count,
    distinct_recent,
    first_seen,
    log_zscore,
    session_runaway,
)

events = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 120_000), st.floats(0, 1e6)), min_size=1, max_size=60)


def _arrays(evs):
    evs = sorted(evs, key=lambda e: e[1])
    ent = np.array([e[0] for e in evs], dtype=np.int64)
    ts = np.array([e[1] for e in evs], dtype=np.int64)
    x = np.array([e[2] for e in evs], dtype=np.float64)
    return ent, ts, x


@settings(max_examples=60, deadline=None)
@given(events)
def test_decayed_count_matches_reference(evs):
    ent, ts, x = _arrays(evs)
    got = decayed_count(ent, ts, np.ones_like(x), np.zeros(5), np.zeros(5), 30_000.0)
    count, last = [0.0] * 5, [0] * 5
    for i in range(len(ent)):
        e = ent[i]
        if ts[i] > last[e]:
            count[e] *= math.exp(-(ts[i] - last[e]) / 30_000.0)
            last[e] = ts[i]
        count[e] += 1
        assert math.isclose(got[i], count[e], rel_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(events)
def test_log_zscore_and_cusum_match_reference(evs):
    ent, _, x = _arrays(evs)
    mean, var, n = np.zeros(5), np.full(5, 0.25), np.zeros(5)
    z = log_zscore(ent, x, mean, var, n, 0.05, 3.0, 0.25, 3)
    rm, rv, rn = [0.0] * 5, [0.25] * 5, [0.0] * 5
    for i in range(len(ent)):
        e = ent[i]
        v = math.log1p(x[i])
        ref = (v - rm[e]) / math.sqrt(max(rv[e], 0.25)) if rn[e] >= 3 else 0.0
        assert math.isclose(z[i], ref, rel_tol=1e-9, abs_tol=1e-9)
        if ref < 3.0:
            a = max(0.05, 1 / (rn[e] + 1))
            d = v - rm[e]
            rm[e] += a * d
            rv[e] = (1 - a) * (rv[e] + a * d * d)
            rn[e] += 1
    s = cusum(ent, z, np.zeros(5), 0.5, 4.0)
    acc = [0.0] * 5
    for i in range(len(ent)):
        acc[ent[i]] = max(0.0, acc[ent[i]] + min(z[i], 4.0) - 0.5)
        assert math.isclose(s[i], acc[ent[i]], abs_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=80), st.lists(st.integers(0, 50), max_size=40))
def test_first_seen_marks_first_occurrences_of_unseen_keys(keys, seen):
    keys_a = np.array(keys, dtype=np.int64)
    seen_a = np.unique(np.array(seen, dtype=np.int64))
    mask, new_seen = first_seen(keys_a, seen_a)
    known = set(seen)
    expected = []
    for k in keys:
        expected.append(k not in known)
        known.add(k)
    assert mask.tolist() == expected
    assert new_seen.tolist() == sorted(set(seen) | set(keys))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20).map(lambda x: x * 100), st.integers(-1, 6)),
                min_size=1, max_size=60),
       st.data())
def test_distinct_recent_counts_values_per_entity_in_the_window(evs, data):
    # event times are not sorted (a batch can hold late events: "up to the event" is by position), and are
    # whole hundreds, so some fall on the window's edge
    ent, ts, val = (np.array(x, dtype=np.int64) for x in zip(*evs, strict=True))
    times = st.integers(-500, 2_000) | st.sampled_from([t - 300 + d for t in ts.tolist() for d in (-1, 0, 1)])
    prior = data.draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), times), max_size=12))
    at = np.array(sorted(data.draw(st.sets(st.integers(0, len(evs) - 1)))), dtype=np.int64)
    pe, pv, pt = (np.array(x, dtype=np.int64) for x in zip(*prior, strict=True)) if prior else (
        np.zeros(0, dtype=np.int64),) * 3
    got = distinct_recent(ent, ts, val, at, 300, pe, pv, pt)
    for c, i in enumerate(at.tolist()):
        lo = ts[i] - 300
        want = {v for e, v, t in prior if e == ent[i] and t >= lo}
        want |= {int(val[j]) for j in range(i + 1) if ent[j] == ent[i] and ts[j] >= lo and val[j] >= 0}
        assert got[c] == len(want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20).map(lambda x: x * 100), st.booleans()),
                max_size=60),
       st.dictionaries(st.integers(0, 3), st.integers(-500, 2_000), max_size=4))
def test_after_mark_matches_reference(evs, prior):
    ent, ts, mark = (np.array(x, dtype=d) for x, d in zip(zip(*evs, strict=True), (np.int64, np.int64, np.bool_),
                                                            strict=True)) if evs else (np.zeros(0, np.int64),) * 3
    last = np.array([prior.get(e, 0) for e in range(4)], dtype=np.int64)
    has = np.array([e in prior for e in range(4)], dtype=np.bool_)
    got = after_mark(ent, ts, mark.astype(np.bool_), last, has, 300)
    marks = dict(prior)
    for i, (e, t, m) in enumerate(evs):
        assert got[i] == (e in marks and t - marks[e] <= 300)
        if m:
            marks[e] = t
    assert {e: int(last[e]) for e in range(4) if has[e]} == marks


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 1), st.booleans()), max_size=400),
       st.lists(st.integers(0, 40), min_size=6, max_size=6), st.sets(st.integers(0, 5)),
       st.lists(st.integers(0, 3), min_size=2, max_size=2))
def test_session_runaway_matches_reference(evs, prior_steps, prior_flagged, lengths):
    # sessions 0-5 of two agent types; min_steps small so runaways, and their taking back, happen
    hist = np.zeros((2, 1024), dtype=np.int64)
    for t, k in enumerate(lengths):  # some sessions of each type already reached a few lengths
        hist[t, 1:3 + k] = 2
    longest = np.array([2 + k for k in lengths], dtype=np.int64)
    steps = np.array(prior_steps, dtype=np.int64)
    flagged = np.array([k in prior_flagged for k in range(6)], dtype=np.bool_)
    ref_hist, ref_longest, ref_steps, ref_flagged = hist.copy(), longest.copy(), list(prior_steps), set(prior_flagged)
    session = np.array([e[0] for e in evs], dtype=np.int64)
    kind = np.array([e[1] for e in evs], dtype=np.int64)
    warm = np.array([e[2] for e in evs], dtype=np.bool_)
    step_n, long_step = session_runaway(session, kind, warm, steps, flagged, hist, longest, 5)
    for i, (k, t, w) in enumerate(evs):  # the engine's rule before it was compiled, step by step
        n = ref_steps[k] + 1
        ref_steps[k] = n
        assert step_n[i] == n
        top = int(ref_longest[t])
        if n > max(1.5 * top, 5) and w:
            assert long_step[i]
            if k not in ref_flagged:
                ref_flagged.add(k)
                ref_hist[t, 1: min(n, 1024)] -= 1
                np.maximum(ref_hist[t], 0, out=ref_hist[t])
                reached = np.flatnonzero(ref_hist[t, 1:] >= 2)
                ref_longest[t] = int(reached[-1]) + 1 if reached.size else 0
            continue
        assert not long_step[i]
        ref_hist[t, min(n, 1023)] += 1
        if n > top and ref_hist[t, min(n, 1023)] >= 2:
            ref_longest[t] = n
    assert steps.tolist() == ref_steps and set(np.flatnonzero(flagged).tolist()) == ref_flagged
    assert (hist == ref_hist).all() and longest.tolist() == ref_longest.tolist()


@settings(max_examples=80, deadline=None)
@given(st.floats(0, 60), st.floats(0, 40))
def test_compiled_poisson_tail_is_calibrations(k, mu):
    from detectors.calibration import poisson_surprise
    from detectors.kernels import poisson_surprise_nb

    assert math.isclose(poisson_surprise_nb(k, mu), poisson_surprise(k, mu), rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.floats(0, 1e6)), min_size=1, max_size=60))
def test_block_log_zscore_matches_reference(evs):
    from detectors.kernels import block_log_zscore

    ent = np.array([e[0] for e in evs], dtype=np.int64)
    block = np.array([e[1] for e in evs], dtype=np.int64)
    x = np.array([e[2] for e in evs], dtype=np.float64)
    mean, var, seen = np.zeros((3, 4)), np.full((3, 4), 0.25), np.zeros((3, 4))
    z = block_log_zscore(ent, block, x, mean, var, seen, 0.05, 3.0, 0.25, 2)
    rm, rv, rn = [[0.0] * 4 for _ in range(3)], [[0.25] * 4 for _ in range(3)], [[0.0] * 4 for _ in range(3)]
    for i in range(len(ent)):
        e, b, v = ent[i], block[i], math.log1p(x[i])
        zs = [(v - rm[e][bb]) / math.sqrt(max(rv[e][bb], 0.25)) for bb in ((b - 1) % 4, b, (b + 1) % 4)
              if rn[e][bb] >= 2]
        ref = min(zs) if zs else math.inf
        assert (math.isinf(z[i]) and math.isinf(ref)) or math.isclose(z[i], ref, rel_tol=1e-9, abs_tol=1e-9)
        own = (v - rm[e][b]) / math.sqrt(max(rv[e][b], 0.25)) if rn[e][b] >= 2 else 0.0
        if own < 3.0:
            a = max(0.05, 1 / (rn[e][b] + 1))
            d = v - rm[e][b]
            rm[e][b] += a * d
            rv[e][b] = (1 - a) * (rv[e][b] + a * d * d)
            rn[e][b] += 1
