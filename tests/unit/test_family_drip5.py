"""The data family, fifth round: a (principal, dataset) pair whose day totals rise four days running adds that
order's tail (1 in 4! = 24 under no trend) to its drift sum's. Each pattern beside its benign twin, and the day-total
kernel held to a pure-Python reference however the stream is cut into batches."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from detectors.kernels import rising_day_totals
from tests.unit.test_detectors import T0, Stream, _hits, _work

DAY_MS = 86_400_000


def _young_drip(levels: list[float], reads: int = 4) -> tuple[list, set[str]]:
    """ana reads her own datasets every day; from day 1 on she also reads finance/payroll three times a day (a pair
    with no history before), ``levels[d]`` times her usual 100 rows on day ``d + 1``: the drip's first days are the
    pair's young baseline."""
    rng = np.random.default_rng(61)
    s = Stream()
    for day in range(6):
        for name in ("ana", "ben", "cy"):
            for _ in range(8):
                s.data(_work(rng, day), name, f"finance/{name}-sheet", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    ids: set[str] = set()
    for d, level in enumerate(levels):
        for _ in range(reads):
            ids.add(s.data(_work(rng, d + 1), "ana", "finance/payroll",
                           int(100 * level * rng.uniform(0.8, 1.2)) + 1))
    return s.run(), ids


@pytest.mark.parametrize("rising", [True, False])
def test_day_totals_rising_four_days_running_add_their_order_to_the_drift(rising: bool):
    """Growth 1.7x a day, four reads a day: the pair's young baseline learns the first days, so the drift sum alone
    stays under `drift_surprise`; four rising day totals (1 in 24) raise it on the fourth day. The twin swaps the
    first two days (a dip, then the same rise): its drift sum ends as high, its days do not rise four running, and it
    is not raised."""
    levels = [1.0, 1.7, 2.89, 4.91] if rising else [1.7, 1.0, 2.89, 4.91]
    alerts, ids = _young_drip(levels)
    hits = _hits(alerts, "data.volume_drift", ids)
    if rising:
        assert hits and hits[0].entity == "ana" and "risen day after day for 4 days" in hits[0].explanation
        assert hits[0].first_seen.startswith((T0 + timedelta(days=4)).date().isoformat())
    else:
        assert not hits


def _reference(ent, day, x):
    cur: dict[int, tuple[float, float]] = {}
    prev: dict[int, list[float]] = {}  # log1p day totals, newest first
    out = []
    for e, d, v in zip(ent.tolist(), day.tolist(), x.tolist(), strict=True):
        cd, tot = cur.get(e, (-1.0, 0.0))
        if d > cd:
            if cd >= 0:
                prev[e] = [float(np.log1p(tot))] + prev.get(e, [])[:3]
            cd, tot = d, 0.0
        tot += v
        cur[e] = (cd, tot)
        v, r = float(np.log1p(tot)), 0
        for p in prev.get(e, []):
            if not v > p:
                break
            v, r = p, r + 1
        out.append(r)
    return np.array(out)


@pytest.mark.parametrize("cut", [1, 7, 1000])
def test_rising_day_totals_agrees_with_a_reference_however_the_batches_are_cut(cut: int):
    rng = np.random.default_rng(62)
    n = 600
    ent = rng.integers(0, 4, n).astype(np.int64)
    ts = np.sort(rng.integers(0, 8 * DAY_MS, n))
    day = (ts // DAY_MS).astype(np.float64)
    x = (rng.lognormal(3.0, 1.0, n) * (1.0 + day * rng.integers(0, 2, n))).astype(np.float64)
    cur_day, cur_tot = np.full(4, -1.0), np.zeros(4)
    prev = [np.full(4, -1.0) for _ in range(4)]
    got = np.concatenate([rising_day_totals(ent[i:i + cut], day[i:i + cut], x[i:i + cut], cur_day, cur_tot,
                                            *prev)[0] for i in range(0, n, cut)])
    want = _reference(ent, day, x)
    assert (want >= 3).any() and (want == 4).any() and (got == want).all()
