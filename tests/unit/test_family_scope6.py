"""api.new_scope's run of requests on a scope a key just took up, and the budget's ceiling for detectors whose
every finding is on a sensitive asset (data.segmentation)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from detectors.budget import COLD_FLOOR, SENSITIVE_MARGIN, AlertBudget, ceiling, sensitive_ceiling
from detectors.catalog import CATALOG
from detectors.kernels import scope_run
from tests.unit.test_detectors import T0, Stream, _hits, _work


def _reference(key, scope, new, start, s0, n_before, share, weight, min_n0):
    """scope_run in plain Python: the run from a judged first use, ended by a request on another scope; its
    ``n0`` counts from the key's previous first use of a scope; after ``i`` uses the next request is on the scope
    with probability ``(i + weight * share) / (n0 + 1 + i + weight)``."""
    state: dict[int, tuple] = {}
    last: dict[int, float] = {}
    out = []
    for k, sc, nw, st, s, n, q in zip(key, scope, new, start, s0, n_before, share, strict=True):
        cur = state.get(k)
        since = n - last.get(k, 0.0)
        if nw:
            last[k] = n
        if st and since > min_n0:
            cur = (sc, 1, since, s, q)
        elif cur is not None and cur[1] > 0 and sc == cur[0]:
            i, m = cur[1], cur[2]
            cur = (cur[0], i + 1, m, cur[3] - math.log10((i + weight * cur[4]) / (m + 1 + i + weight)), cur[4])
        else:
            if cur is not None:
                state[k] = (-1.0, 0, *cur[2:])
            out.append((0, 0.0, 0.0))
            continue
        state[k] = cur
        out.append((cur[1], cur[3], cur[2]))
    return out


def _cols(n: int) -> list[np.ndarray]:
    return [np.full(n, -1.0), *(np.zeros(n) for _ in range(5))]


def test_scope_run_kernel_matches_its_reference():
    rng = np.random.default_rng(11)
    n = 400
    key = rng.integers(0, 5, n).astype(np.int64)
    scope = rng.integers(0, 3, n).astype(np.float64)
    new = rng.random(n) < 0.08
    start = new & (rng.random(n) < 0.7)
    s0 = rng.uniform(0.5, 3.0, n)
    share = rng.uniform(0.0, 1.0, n)
    n_before = np.zeros(n)
    for k in range(5):  # each key's request count as of each of its events
        n_before[key == k] = np.arange(int((key == k).sum()))
    length, total, base = scope_run(key, scope, new, start, s0, n_before, share, 5.0, 3.0, *_cols(5))
    ref = _reference(key.tolist(), scope.tolist(), new.tolist(), start.tolist(), s0.tolist(), n_before.tolist(),
                     share.tolist(), 5.0, 3.0)
    assert length.tolist() == [r[0] for r in ref]
    assert total == pytest.approx([r[1] for r in ref], abs=1e-9)
    assert base.tolist() == [r[2] for r in ref]
    assert length.max() >= 3  # the draw has runs to compare


def test_scope_run_state_carries_over_batches():
    key = np.zeros(6, dtype=np.int64)
    scope = np.array([1.0, 2.0, 2.0, 2.0, 2.0, 1.0])
    start = np.array([False, True, False, False, False, False])
    s0, n_before, share = np.full(6, 1.5), 99.0 + np.arange(6.0), np.zeros(6)
    whole = scope_run(key, scope, start, start, s0, n_before, share, 5.0, 10.0, *_cols(1))
    cols = _cols(1)
    parts = [scope_run(key[a:b], scope[a:b], start[a:b], start[a:b], s0[a:b], n_before[a:b], share[a:b], 5.0,
                       10.0, *cols) for a, b in ((0, 3), (3, 6))]
    assert np.concatenate([p[0] for p in parts]).tolist() == whole[0].tolist() == [0, 1, 2, 3, 4, 0]
    assert np.concatenate([p[1] for p in parts]) == pytest.approx(whole[1])
    # four requests in a row on a scope no peer uses, first used after 100 on the same scopes:
    # 1.5 + log10((102 + 5) (103 + 5) (104 + 5) / 3!)
    assert whole[1][4] == pytest.approx(1.5 + math.log10(107 * 108 * 109 / 6))


def test_a_key_still_taking_up_scopes_makes_weak_runs():
    """The same run after the key's previous new scope 5 requests earlier, not 100: far less surprising; and
    below the floor of requests on the same scopes, no run at all."""
    key = np.zeros(5, dtype=np.int64)
    scope = np.array([1.0, 2.0, 2.0, 2.0, 2.0])
    new = np.array([True, True, False, False, False])
    start = np.array([False, True, False, False, False])
    s0, share = np.full(5, 1.5), np.zeros(5)
    settled = scope_run(key, scope, new, start, s0, np.array([0.0, 100, 101, 102, 103]), share, 5.0, 0.0,
                        *_cols(1))
    young = scope_run(key, scope, new, start, s0, np.array([95.0, 100, 101, 102, 103]), share, 5.0, 0.0,
                      *_cols(1))
    assert settled[1][4] - young[1][4] > 2.0
    floor = scope_run(key, scope, new, start, s0, np.array([95.0, 100, 101, 102, 103]), share, 5.0, 10.0,
                      *_cols(1))
    assert floor[0].tolist() == [0, 0, 0, 0, 0]


def test_a_run_on_a_scope_most_peers_use_is_weaker():
    key = np.zeros(4, dtype=np.int64)
    scope = np.array([2.0, 2.0, 2.0, 2.0])
    start = np.array([True, False, False, False])
    args = (np.full(4, 1.5), np.array([30.0, 31, 32, 33]))
    rare = scope_run(key, scope, start, start, *args, np.full(4, 0.05), 5.0, 10.0, *_cols(1))
    common = scope_run(key, scope, start, start, *args, np.full(4, 0.9), 5.0, 10.0, *_cols(1))
    assert rare[1][3] - common[1][3] > 0.5


def _turn(run: int, batch: int = 997) -> tuple[list, set[str]]:
    """Twenty-five keys: chat, and every other one also lists models. A settled key (four days of chat) lists models
    for the first time, then makes ``run - 1`` more requests on it before going back to chat (``run`` 1: a first
    use in passing)."""
    rng = np.random.default_rng(3)
    s = Stream()
    for k in range(25):
        for day in range(4):
            for _ in range(5 if k else 10):
                s.api(_work(rng, day), f"key{k}", "inference:chat", granted=("models:read",))
            if k % 2 == 0 and k:
                s.api(_work(rng, day), f"key{k}", "models:read", model=None, endpoint="/v1/models")
    t = T0 + timedelta(days=4, hours=10)
    ids = {s.api(t + timedelta(seconds=20 * i), "key0", "models:read", model=None, endpoint="/v1/models",
                 granted=("models:read",)) for i in range(run)}
    s.api(t + timedelta(minutes=5), "key0", "inference:chat", granted=("models:read",))
    return s.run(batch), ids


def test_a_settled_key_staying_on_a_scope_it_just_took_up_is_caught():
    alerts, ids = _turn(4)
    hits = _hits(alerts, "api.new_scope", ids)
    assert hits and hits[0].entity == "key0" and hits[0].severity != "info"
    assert "requests on it alone" in hits[0].explanation


def test_a_first_use_in_passing_is_not_a_run():
    alerts, ids = _turn(1)
    assert not _hits(alerts, "api.new_scope", ids)


def test_scope_run_alerts_do_not_depend_on_batch_cuts():
    a, _ = _turn(4, batch=997)
    b, _ = _turn(4, batch=7)
    assert [(x.alert_id, x.severity) for x in a] == [(x.alert_id, x.severity) for x in b]


def _spent(detector: str) -> AlertBudget:
    """A budget whose detector had a handful of strong benign episodes in a quiet tenant."""
    b = AlertBudget()
    for i, v in enumerate((5.5, 5.8, 6.0, 5.9)):
        b.learn(0, detector, v, threshold=0.0, rise=1.0, ts=i * 60_000, learning=True)
    return b


def test_a_sensitive_detectors_finding_past_its_ceiling_passes_a_spent_budget():
    thr_seg = _spent("data.segmentation").threshold(0, "data.segmentation", events=20_000, per_100k=1.0)
    assert thr_seg > COLD_FLOOR + SENSITIVE_MARGIN  # the budget alone would hold 1 in 10,000
    assert CATALOG["data.segmentation"].sensitive and not CATALOG["api.new_client"].sensitive
    bar = _spent("data.segmentation").bar(0, "data.segmentation", thr_seg, per_100k=1.0, sensitive=True)
    assert bar == pytest.approx(COLD_FLOOR + SENSITIVE_MARGIN)
    other = _spent("api.new_client").bar(0, "api.new_client", thr_seg, per_100k=1.0)
    assert other == pytest.approx(min(thr_seg, ceiling(1.0))) and other > bar


def test_sensitive_ceiling_never_raises_the_ordinary_one():
    for per in (0.1, 1.0, 100.0, 10_000.0):
        assert sensitive_ceiling(per, True) <= ceiling(per)
        assert sensitive_ceiling(per, False) == ceiling(per)
