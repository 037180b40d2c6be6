"""The daily-peak kernel (data.volume_spike / data.volume_drift) against a pure-Python reference, and cut-free."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.kernels import daily_peak_zscore

# (entity, day, rows, in the learning period)
reads = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.floats(0, 1e7), st.booleans()), min_size=1,
                 max_size=80)
ALPHA, MIN_VAR, WARM, RISE = 0.1, 0.25, 2, 3.0


def _state(n: int = 4) -> list[np.ndarray]:
    return [np.full(n, -1.0), np.full(n, -1.0), np.zeros(n), np.full(n, 0.25), np.zeros(n)]


def _reference(evs):
    st_ = {}
    out = []
    for e, day, x, learn_all in evs:
        s = st_.setdefault(e, {"day": -1, "max": -1.0, "mean": 0.0, "var": 0.25, "n": 0.0})
        if day > s["day"]:
            if s["day"] >= 0 and s["max"] >= 0:
                a = max(ALPHA, 1.0 / (s["n"] + 1.0))
                d = s["max"] - s["mean"]
                s["mean"] += a * d
                s["var"] = (1 - a) * (s["var"] + a * d * d)
                s["n"] += 1
            s["day"], s["max"] = day, -1.0
        v = math.log1p(x)
        sd = math.sqrt(max(s["var"], MIN_VAR))
        warm = s["n"] >= WARM
        out.append((v - s["mean"]) / sd if warm else math.inf)
        s["max"] = max(s["max"], v if learn_all or not warm else min(v, s["mean"] + RISE * sd))
    return out


def _run(evs, cuts=()):
    evs = sorted(evs, key=lambda e: e[1])
    state = _state()
    out = []
    bounds = [0, *sorted(c % (len(evs) + 1) for c in cuts), len(evs)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        part = evs[lo:hi]
        if not part:
            continue
        ent = np.array([e[0] for e in part], dtype=np.int64)
        day = np.array([e[1] for e in part], dtype=np.float64)
        x = np.array([e[2] for e in part], dtype=np.float64)
        learn = np.array([e[3] for e in part], dtype=np.bool_)
        out.extend(daily_peak_zscore(ent, day, x, learn, *state, ALPHA, MIN_VAR, WARM, RISE).tolist())
    return evs, out


@given(reads)
@settings(max_examples=60, deadline=None)
def test_daily_peak_zscore_matches_reference(evs):
    ordered, got = _run(evs)
    want = _reference(ordered)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (math.isinf(g) and math.isinf(w)) or math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9)


@given(reads, st.lists(st.integers(0, 80), max_size=4))
@settings(max_examples=60, deadline=None)
def test_daily_peak_zscore_does_not_depend_on_the_batch_cuts(evs, cuts):
    _, whole = _run(evs)
    _, cut = _run(evs, cuts)
    assert np.array_equal(np.array(whole), np.array(cut))
