"""The data family, sixth round: data.volume_drift counts a drip's reads above the principal's usual daily peak (they
are not its high mode), holds each read's step to at least the pair's baseline (the pair's ordinary reads between a
drip's do not wipe out its sum) with the sum's tail recomputed for those steps. Each pattern beside its benign twins
(a step, a new joiner ramping up, a release-day surge, a service account's nightly batch), and the tail's rate held
to a simulated CUSUM."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pytest

from detectors.families.data import DRIFT_FLOOR, cusum_surprise, cusum_theta
from detectors.kernels import cusum
from tests.unit.test_detectors import T0, Stream, _hits, _work


def _first(hits) -> datetime:
    return datetime.fromisoformat(hits[0].first_seen.replace("Z", "+00:00"))


def _busy_reader(s: Stream, rng: np.random.Generator, days: int) -> None:
    """ana reads her team's datasets about 24 times a day at about 100 rows (log-normal, sigma 0.5): her usual daily
    peak (the day's largest read) is about 2.5x her ordinary read."""
    for day in range(days):
        for _ in range(24):
            s.data(_work(rng, day), "ana", f"finance/sheet-{int(rng.integers(4))}",
                   int(100 * rng.lognormal(0.0, 0.5)) + 1)


def _drip_over_peak(levels: list[float]) -> tuple[list, set[str], datetime]:
    """Besides her usual reads (six days), from day 2 ana reads finance/payroll four times a day at ``levels[d]``
    times her usual 100 rows on day ``2 + d``; returns the stream's alerts, the extra reads and when they first
    reach three times the usual."""
    rng = np.random.default_rng(71)
    s = Stream()
    _busy_reader(s, rng, 6)
    ids: set[str] = set()
    unusual = None
    for d, level in enumerate(levels):
        for _ in range(4):
            t = _work(rng, 2 + d)
            ids.add(s.data(t, "ana", "finance/payroll", int(100 * level * rng.uniform(0.8, 1.2)) + 1))
            if level >= 3 and (unusual is None or t < unusual):
                unusual = t
    return s.run(), ids, unusual or T0


def test_a_drip_above_the_usual_daily_peak_is_not_the_principals_high_mode():
    """Growth 2.2x a day: the fourth day's reads (10.6x) are a few standard deviations over the principal's usual
    daily peak, which the high-mode rule (meant for a batch account's nightly reads, at its peak) used to take as her
    habit and drop from the sum (the drip was never raised); above the peak they count, and the drip is raised within
    a day of reaching 3x."""
    alerts, ids, unusual = _drip_over_peak([1.0, 2.2, 4.84, 10.65])
    hits = _hits(alerts, "data.volume_drift", ids)
    assert hits and hits[0].entity == "ana"
    assert _first(hits) <= unusual + timedelta(days=1)


def test_a_step_up_that_stays_is_not_a_drip():
    """The benign twin: the same extra reads at 1.6x her usual volume every day (a principal whose reads grew once):
    the pair's baseline learns the new level."""
    alerts, ids, _ = _drip_over_peak([1.6, 1.6, 1.6, 1.6])
    assert not _hits(alerts, "data.volume_drift", ids)


def _interleaved(grow: bool, ordinary: int = 8, reads: int = 5,
                 growth: float = 2.0) -> tuple[list, set[str], datetime]:
    """bo reads finance/ledger ``ordinary`` times a day at about 100 rows; from day 4 he also reads it ``reads``
    times a day, ``growth`` times more every day (or, the twin, at his usual, varied volume)."""
    rng = np.random.default_rng(72)
    s = Stream()
    for day in range(8):
        for _ in range(ordinary):
            s.data(_work(rng, day), "bo", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    ids: set[str] = set()
    unusual = None
    for d in range(4):
        level = growth ** d
        for _ in range(reads):
            t = _work(rng, 4 + d)
            rows = 100 * level * rng.uniform(0.8, 1.2) if grow else 100 * rng.lognormal(0.0, 0.5)
            ids.add(s.data(t, "bo", "finance/ledger", int(rows) + 1))
            if grow and level >= 3 and (unusual is None or t < unusual):
                unusual = t
    return s.run(), ids, unusual or T0


@pytest.mark.parametrize("grow", [True, False])
def test_a_drip_among_the_pairs_ordinary_reads_keeps_its_evidence(grow: bool):
    """Eight ordinary reads a day of the same dataset between the drip's five: each one below the baseline used to
    take its whole shortfall off the sum (a read at 0.3x erased two drip reads, and the drip was never raised); held
    to the baseline it takes the allowance only. The drip is raised within a day of reaching 3x; the twin (as many
    extra reads at the usual volume) is not."""
    alerts, ids, unusual = _interleaved(grow)
    hits = _hits(alerts, "data.volume_drift")
    if grow:
        assert hits and hits[0].entity == "bo" and ids & set(hits[0].evidence.event_ids)
        assert _first(hits) <= unusual + timedelta(days=1)
    else:
        assert not hits


def test_a_new_joiner_ramping_up_and_a_release_day_surge_are_not_drift():
    """More reads, not bigger ones: a new joiner's reads per day double daily (2 to 32), and the whole team reads
    four times as often on a release day; every read at the usual volume."""
    rng = np.random.default_rng(73)
    s = Stream()
    for day in range(7):
        surge = 4 if day == 4 else 1
        for name in ("ana", "ben", "cy"):
            for _ in range(8 * surge):
                s.data(_work(rng, day), name, "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
        if day >= 2:
            for _ in range(2 ** (day - 1) * surge):
                s.data(_work(rng, day), "newbie", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    assert not _hits(s.run(), "data.volume_drift")


def test_a_service_accounts_nightly_batch_stays_its_high_mode():
    """A batch account's nightly reads (200x its day reads, every night) lie at its usual daily peak: its high mode,
    not drift, although they are far above the pair's baseline."""
    rng = np.random.default_rng(74)
    s = Stream()
    for day in range(7):
        for _ in range(12):
            s.data(_work(rng, day), "svc", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
        for m in range(0, 90, 6):
            s.data(T0 + timedelta(days=day, hours=2, minutes=m), "svc", "finance/ledger",
                   int(20_000 * rng.lognormal(0.0, 0.4)))
    assert not _hits(s.run(), "data.volume_drift")


@pytest.mark.parametrize("floor", [-math.inf, DRIFT_FLOOR])
def test_the_drift_sums_tail_matches_a_simulated_cusum(floor: float):
    """The sum's tail rate (``cusum_theta``) against a CUSUM of simulated standard normal steps held to
    ``[floor, 4]`` (the kernel the detector runs): the stationary share of steps at which the sum stands at ``s`` or
    above is ``C exp(-theta s)`` with a constant ``C`` at most 1, so the fitted slope of its log is ``-theta`` and the
    tail never exceeds ``exp(-theta s)``. Held to the baseline, the steps' tail is heavier than Siegmund's ``2 k``
    (which would overstate how unusual a sum is)."""
    k, gate = 0.75, 4.0
    z = np.maximum(np.random.default_rng(75).standard_normal(4_000_000), floor)
    s = cusum(np.zeros(z.size, dtype=np.int64), z, np.zeros(1), k, gate)
    levels = np.array([2.0, 3.0, 4.0, 5.0, 6.0])
    tail = np.array([(s >= v).mean() for v in levels])
    theta = cusum_theta(k, floor, gate)
    slope = np.polyfit(levels, np.log(tail), 1)[0]
    assert slope == pytest.approx(-theta, rel=0.06)
    assert np.all(tail <= np.exp(-theta * levels) * 1.05)
    if floor > -math.inf:
        assert theta < 2 * k - 0.1 and slope > -2 * k + 0.1
    assert cusum_surprise(8.0, k, floor, gate) == pytest.approx(theta * 8.0 / math.log(10.0))
