"""The data family, fourth round: a write to training data that was never written, judged by how often the writer's
department writes other departments' training data; a nightly batch spanning UTC midnight whose pair baseline holds
its first night is not drift. Each pattern beside its benign twin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.unit.test_detectors import T0, Stream, _hits, _work


def _unwritten_training_set(labelers: bool) -> tuple[list, set[str]]:
    """Three days of a tenant where nobody writes ml's training set (its pipeline is not deployed here); then
    mallory (sales) writes it. In the benign twin, sales is a labelling team whose five people each started writing
    ml's training set before (more writers than a pipeline has, so only the department's habit can clear it)."""
    rng = np.random.default_rng(51)
    s = Stream()
    for day in range(3):
        for p in range(6):
            for _ in range(6):
                s.data(_work(rng, day), f"sales{p}", "sales/leads", 50, dept="sales", owner="sales",
                       op="write" if rng.random() < 0.2 else "read")
                s.data(_work(rng, day), f"ml{p}", "ml/features", 80, dept="ml", owner="ml")
        if labelers:
            for p in range(5):
                s.data(_work(rng, day), f"sales{p}", "ml/train-set", 40, dept="sales", owner="ml", op="write",
                       purpose="model-training")
    ids = {s.data(T0 + timedelta(days=3, hours=10), "mallory", "ml/train-set", 500, dept="sales", owner="ml",
                  op="write", purpose="model-training")}
    return s.run(), ids


@pytest.mark.parametrize("labelers", [False, True])
def test_a_first_write_to_a_training_set_nobody_writes_is_judged_by_the_writers_department(labelers: bool):
    """`training_peer_surprise`: sales never wrote another department's training data in hundreds of accesses, so
    mallory's first write is raised on that write (in time), although the set has no writes to call a pipeline;
    where sales' people write ml's training set as their job it is not news."""
    alerts, ids = _unwritten_training_set(labelers)
    hits = _hits(alerts, "data.training_write", ids)
    if labelers:
        assert not hits
    else:
        assert hits and hits[0].entity == "mallory" and "sales made 0 of its" in hits[0].explanation


def _midnight_batch() -> list:
    """A service account reads ~100 rows of finance/ledger twenty times a day round the clock; its nightly batch
    (~30,000 rows a read, six of the ledger a night) runs from 22:40 to 00:40 UTC, across the UTC day's end; the
    tenant's learning period (its first day) holds the tail of a run that began before the stream."""
    rng = np.random.default_rng(52)
    s = Stream()
    for name in ("ana", "ben"):
        for day in range(6):
            for _ in range(6):
                s.data(_work(rng, day), name, "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    for m in (10, 30):  # the tail of a batch run that began before the stream
        s.data(T0 + timedelta(minutes=m), "svc", "finance/ledger", int(30_000 * rng.lognormal(0.0, 0.4)))
    for day in range(6):
        for _ in range(20):
            t = T0 + timedelta(days=day, hours=float(rng.uniform(0, 24)))  # round the clock
            s.data(t, "svc", "finance/ledger", int(100 * rng.lognormal(0.0, 0.3)) + 1)
        for m in range(0, 120, 20) if day >= 1 else ():
            s.data(T0 + timedelta(days=day, hours=22, minutes=40 + m), "svc", "finance/ledger",
                   int(30_000 * rng.lognormal(0.0, 0.4)))
    return s.run()


def test_a_nightly_batch_across_the_utc_days_end_is_not_drift():
    """The pair's baseline learned the first night's batch reads in the learning period, so later batch reads are
    only three of its wide standard deviations up: at the level of the account's usual daily peak and far above the
    pair's mean in log units, they are its high mode and add nothing to the drift sum. (The pattern twins, drips
    a few times a pair's usual volume that are still caught, are in test_family_data.py and test_detectors.py.)"""
    assert not _hits(_midnight_batch(), "data.volume_drift")


def test_log_zscore_excess_is_log_zscore_with_the_excess_in_log_units():
    """The drift gate's kernel scores and learns exactly as ``log_zscore``; its excess is log1p(x) less the entity's
    mean as of the event (a Python reference), 0 while the entity is cold."""
    from detectors.kernels import log_zscore, log_zscore_excess

    rng = np.random.default_rng(53)
    ent = rng.integers(0, 4, 400)
    x = np.exp(rng.normal(5.0, 1.5, 400))
    args = (0.02, 2.0, 0.25, 5)
    a = [np.zeros(4), np.full(4, 0.25), np.zeros(4)]
    b = [m.copy() for m in a]
    z = log_zscore(ent, x, *a, *args)
    z2, excess = log_zscore_excess(ent, x, *b, *args)
    assert np.array_equal(z, z2) and all(np.array_equal(m, n) for m, n in zip(a, b, strict=True))
    mean, var, seen = np.zeros(4), np.full(4, 0.25), np.zeros(4)
    for i, e in enumerate(ent.tolist()):
        v = np.log1p(x[i])
        assert excess[i] == pytest.approx(0.0 if seen[e] < 5 else v - mean[e])
        if z2[i] < 2.0:
            al = max(0.02, 1.0 / (seen[e] + 1.0))
            d = v - mean[e]
            mean[e] += al * d
            var[e] = (1.0 - al) * (var[e] + al * d * d)
            seen[e] += 1.0
    assert (excess > 0).any()


def _pipelines_from_the_start(learning: bool) -> tuple[list, set[str]]:
    """engineering's three ETL services start writing ml's training set at 20:00 of the tenant's first day (its
    learning period), or (the pattern) of its second; on day 3 a fourth ETL service of engineering writes it."""
    rng = np.random.default_rng(54)
    s = Stream()
    for day in range(3):
        for p in range(6):
            for _ in range(30):
                s.data(_work(rng, day), f"eng{p}", "eng/logs", 50, dept="engineering", owner="engineering")
                s.data(_work(rng, day), f"ml{p}", "ml/features", 80, dept="ml", owner="ml")
    for k in range(3):
        for day in range(0 if learning else 1, 3):
            for h in range(4):
                s.data(T0 + timedelta(days=day, hours=20 + h, minutes=10 * k), f"etl{k}", "ml/train-set", 400,
                       dept="engineering", owner="ml", op="write", purpose="model-training")
    ids = {s.data(T0 + timedelta(days=3, hours=10), "etl3", "ml/train-set", 400, dept="engineering", owner="ml",
                  op="write", purpose="model-training")}
    return s.run(), ids


@pytest.mark.parametrize("learning", [True, False])
def test_a_department_feeding_anothers_training_sets_from_the_learning_period_is_learned(learning: bool):
    """The tenant's learning period learns first writes it would raise: engineering's services feeding ml's
    training set from the first day are its habit, and a fourth service is not news. Started after the learning
    period, the first is raised and none is learned, so the fourth is raised too."""
    alerts, ids = _pipelines_from_the_start(learning)
    hits = _hits(alerts, "data.training_write", ids)
    assert not hits if learning else hits and hits[0].entity == "etl3"
