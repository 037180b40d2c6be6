"""The univariate detector's half-rate view, the z part over row-pair means: pattern, benign twin, exactness."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.models.univariate import UnivariateDetector, _kernel

LEVEL = 3.0 / 4.0  # z_detect / (1 + z_detect) at the default z_detect = 3


def mirrored(n: int, seed: int, shift_at: int | None = None, d: float = 0.6, length: int = 60) -> np.ndarray:
    """Pairs ``(u, -u + noise)`` with ``u`` uniform: every row is noise over the whole range, each pair's mean stays
    near 0; from ``shift_at`` on, for ``length`` rows, the second row of each pair is ``d`` higher (pair mean +d/2)."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1.5, 1.5, n // 2)
    x = np.empty(n)
    x[0::2] = u
    x[1::2] = -u + 0.01 * rng.standard_normal(n // 2)
    if shift_at is not None:
        x[shift_at + 1 : shift_at + length : 2] += d
    return x


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_half_rate_view_flags_a_shift_of_the_pair_mean_and_not_its_benign_twin(seed):
    """A shift of 0.3 in the pair mean, inside the rows' own spread of 3, is new only at the half rate: the z part
    flags it early (within the first pairs) with the half-rate view and not without it; the same noise without the
    shift is never flagged (context novelty off in both, it is not what is tested here)."""
    x = mirrored(2000, seed, shift_at=1400)
    with_pairs = UnivariateDetector(probationary_period=300, w_context=0.0).score_learn_many(x)
    without = UnivariateDetector(probationary_period=300, w_context=0.0, w_pairs=0.0).score_learn_many(x)
    assert with_pairs[1400:1410].max() >= LEVEL
    assert without.max() < LEVEL
    twin = UnivariateDetector(probationary_period=300, w_context=0.0).score_learn_many(mirrored(2000, seed))
    assert twin.max() < LEVEL


def _plain(x: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """The detector composed by hand from the uncompiled kernel: a pairs detector (context novelty off, half the
    probationary period, combined part before the rest rules) over the pair means, its part times ``w_pairs`` on
    the row that ends each pair, then the detector itself with that part."""
    det = UnivariateDetector(**params)
    half = UnivariateDetector(**{**params, "probationary_period": params["probationary_period"] // 2,
                                 "w_context": 0.0, "w_pairs": 0.0})
    half._cfg[30] = 1.0
    m = x.shape[0] // 2
    means = x[: 2 * m].reshape(m, 2).mean(axis=1)
    part = np.empty(m)
    _kernel.py_func(means, half._cfg, half._s, half._v, half._buf, half._cbuf, half._dhist, half._xbuf, half._qbuf,
                    half._ctab, half._zq, part, np.zeros(m))
    ext = np.zeros(x.shape[0])
    ext[1 : 2 * m : 2] = det.w_pairs * part
    out = np.empty(x.shape[0])
    _kernel.py_func(x, det._cfg, det._s, det._v, det._buf, det._cbuf, det._dhist, det._xbuf, det._qbuf, det._ctab,
                    det._zq, out, ext)
    return out


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(61, 300))
def test_half_rate_part_equals_a_pairs_detector_on_the_pair_means(seed, n):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(n)) + (rng.random(n) < 0.03) * rng.normal(0, 20, n)
    params = {"probationary_period": 30, "memory": 60, "history": 100, "context_memory": 50}
    fast = UnivariateDetector(**params).score_learn_many(x)
    np.testing.assert_allclose(fast, _plain(x, params), rtol=1e-9, atol=1e-12)


def test_pairs_straddle_calls_and_checkpoints():
    """Chunks of odd sizes and a checkpoint taken with half a pair pending give the scores of one batch."""
    x = np.append(mirrored(1600, 5, shift_at=1100), 0.5)
    full = UnivariateDetector(probationary_period=200).score_learn_many(x)
    det = UnivariateDetector(probationary_period=200)
    parts, i = [], 0
    for size in [1, 3, 7, 100, 1, 1, 257]:
        parts.append(det.score_learn_many(x[i : i + size]))
        i += size
    restored = UnivariateDetector.from_state(pickle.loads(pickle.dumps(det.state())))  # i is odd: a row waits
    parts.append(restored.score_learn_many(x[i:]))
    np.testing.assert_array_equal(np.concatenate(parts), full)


def test_half_rate_settings_are_checked():
    with pytest.raises(ValueError, match="w_pairs"):
        UnivariateDetector(w_pairs=1.5)
    det = UnivariateDetector(probationary_period=100)
    state = det.state()
    state["pairs"] = None
    with pytest.raises(ValueError, match="pairs"):
        UnivariateDetector.from_state(state)
