"""Calibrated surprise (detectors.calibration): the tails against exact references, the docstring examples."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from detectors import calibration
from detectors.calibration import normal_surprise, one_in, poisson_surprise, poisson_surprise_many, rate_surprise
from detectors.kernels import lgamma_many


def _exact_poisson_tail(k: int, mu: float) -> float:
    """-log10 P(X >= k), summed term by term."""
    term, total = math.exp(-mu), 0.0
    for i in range(k + 200):
        if i >= k:
            total += term
        term *= mu / (i + 1)
    return -math.log10(total)


def test_docstring_examples():
    assert doctest.testmod(calibration).failed == 0


@pytest.mark.parametrize(("k", "mu"), [(10, 2.0), (30, 2.0), (50, 20.0), (8, 0.5), (100, 40.0)])
def test_poisson_surprise_is_the_tail_within_a_tenth(k, mu):
    assert poisson_surprise(k, mu) == pytest.approx(_exact_poisson_tail(k, mu), abs=0.1)


def test_poisson_surprise_is_zero_at_or_below_the_mean_and_grows_with_the_count():
    assert poisson_surprise(3, 5.0) == 0.0
    assert poisson_surprise(0, 0.0) == 0.0
    xs = [poisson_surprise(k, 3.0) for k in range(4, 40)]
    assert all(b > a for a, b in zip(xs, xs[1:], strict=False))


def test_the_array_form_agrees_with_the_scalar_one():
    k = np.array([0, 3, 10, 30, 50])
    mu = np.array([1.0, 5.0, 2.0, 2.0, 20.0])
    assert poisson_surprise_many(k, mu) == pytest.approx([poisson_surprise(a, b) for a, b in zip(k, mu, strict=True)])


def test_normal_surprise_matches_the_gaussian_tail():
    assert normal_surprise(0.0) == 0.0
    assert normal_surprise(3.0) == pytest.approx(-math.log10(0.0013499), abs=0.01)


def test_a_novelty_is_no_surprise_for_an_entity_whose_every_observation_is_new():
    nat_pool = rate_surprise(new=500, total=500, prior_rate=0.01)
    steady = rate_surprise(new=2, total=500, prior_rate=0.01)
    assert nat_pool < 0.05 < 2.0 < steady


def test_one_in_reads_like_an_analyst_would_say_it():
    assert one_in(2.0) == "1 in 100"
    assert one_in(6.0) == "1 in 1,000,000"


def test_the_compiled_lgamma_returns_math_lgammas_bits():
    rng = np.random.default_rng(25)
    x = np.concatenate([np.arange(1.0, 5_001.0), rng.uniform(0.0, 5.0, 20_000), rng.uniform(5.0, 1e4, 20_000),
                        rng.exponential(30.0, 10_000) + 1.0, rng.uniform(0.0, 1e12, 1_000), [1e-25, 2.0, 0.5]])
    got = lgamma_many(x)
    want = np.array([math.lgamma(v) for v in x.tolist()])
    assert np.array_equal(got, want), x[got != want][:5]
    assert np.isinf(lgamma_many(np.array([0.0, -3.0]))).all() and np.isnan(lgamma_many(np.array([np.nan])))[0]


def _poisson_many_per_element(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``poisson_surprise_many`` as it was written before it was compiled: ``math.lgamma`` element by element."""
    mu = np.maximum(mu, 1e-9)
    lg = np.array([math.lgamma(x + 1) for x in k.tolist()])
    out = np.maximum(0.0, -(k * np.log(mu) - mu - lg - np.log1p(-np.minimum(mu / (k + 1), 0.999))) / math.log(10))
    return np.where((k <= 0) | (k <= mu), 0.0, out)


def test_the_array_form_agrees_with_the_scalar_one_on_many_inputs():
    rng = np.random.default_rng(7)
    mu = np.concatenate([rng.exponential(5.0, 4_000), rng.uniform(0.0, 300.0, 2_000), np.zeros(50)])
    k = np.concatenate([np.floor(mu[:3_000] * rng.uniform(0.0, 6.0, 3_000)),  # counts, below and above the mean
                        mu[3_000:] * rng.uniform(0.0, 4.0, mu.size - 3_000)])  # scaled counts (negative binomial)
    got = poisson_surprise_many(k, mu)
    assert np.array_equal(got, _poisson_many_per_element(k, mu))  # the same bits: scores do not move
    assert got == pytest.approx([poisson_surprise(a, b) for a, b in zip(k.tolist(), mu.tolist(), strict=True)],
                                rel=1e-9, abs=1e-9)
    assert (got > 0).sum() > 1_000  # the tails were exercised, not only the zeros below the mean
    assert poisson_surprise_many(k[:6_000].reshape(60, 100), mu[:6_000].reshape(60, 100)).shape == (60, 100)
