"""NAB scorer on synthetic corpora, the univariate detector's protocol, and (when present) the real corpus."""

from __future__ import annotations

import argparse
import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.evaluation import nab
from detectors.models.univariate import _NS, _VMAX, _VMIN, UnivariateDetector, _context_step, _gate, _kernel

NAB_DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nab"


def corpus(rows: int = 2000, windows: tuple[tuple[int, int], ...] = ((800, 899), (1500, 1599))) -> nab.LabelledFile:
    ts = np.datetime64("2024-01-01T00:00:00", "us") + np.arange(rows) * np.timedelta64(5, "m")
    return nab.LabelledFile("synthetic/a.csv", ts, list(windows))


def score(files: list[nab.LabelledFile], scores: dict[str, np.ndarray], profile: str = "standard") -> nab.ProfileResult:
    return nab.score_corpus(files, scores, profile)


@pytest.mark.parametrize("profile", list(nab.PROFILES))
def test_null_detector_normalizes_to_zero_and_perfect_to_hundred(profile):
    f = corpus()
    assert score([f], {f.key: np.full(f.rows, 0.5)}, profile).normalized == pytest.approx(0.0)
    perfect = np.zeros(f.rows)
    for a, _ in f.windows:
        perfect[a] = 1.0
    assert score([f], {f.key: perfect}, profile).normalized == pytest.approx(100.0)


def test_scaled_sigmoid_reference_points():
    assert float(nab.scaled_sigmoid(-1.0)) == pytest.approx(0.98661, abs=1e-5)
    assert float(nab.scaled_sigmoid(-0.5)) == pytest.approx(0.84828, abs=1e-5)
    assert float(nab.scaled_sigmoid(0.0)) == pytest.approx(0.0)
    assert float(nab.scaled_sigmoid(3.0)) == -1.0


def test_probationary_length_is_nab_s():
    assert nab.probationary_length(4032) == 604
    assert nab.probationary_length(15831) == 750  # capped at 0.15 * 5000


def test_earlier_detection_in_a_window_scores_more():
    f = corpus()
    early, late = np.zeros(f.rows), np.zeros(f.rows)
    early[810], late[890] = 1.0, 1.0
    r_early, r_late = score([f], {f.key: early}), score([f], {f.key: late})
    assert r_early.raw > r_late.raw
    assert r_early.tp == r_late.tp == 1


def test_only_the_earliest_detection_in_a_window_counts():
    f = corpus()
    one, two = np.zeros(f.rows), np.zeros(f.rows)
    one[820] = 1.0
    two[820] = two[850] = 1.0
    assert score([f], {f.key: one}).raw == pytest.approx(score([f], {f.key: two}).raw)


def test_false_positive_cost_grows_with_distance_after_a_window():
    """By NAB's rules an FP just after a window is nearly free; far from any window it costs the full fpWeight."""
    f = corpus(windows=((800, 899),))
    near, far = np.zeros(f.rows), np.zeros(f.rows)
    near[805] = far[805] = 0.9  # keep a TP so the threshold is the same
    near[905], far[1500] = 1.0, 1.0
    r_near, r_far = score([f], {f.key: near}), score([f], {f.key: far})
    assert r_near.fp == r_far.fp == 1
    assert r_near.raw > r_far.raw
    sweep, _ = nab.sweep_scores(f.rows, f.windows, nab.PROFILES["standard"])
    assert sweep[1500] == pytest.approx(-0.11)
    assert -0.11 < sweep[905] < 0.0
    assert sweep[700] == pytest.approx(-0.11)  # before the first window


def test_probationary_rows_are_not_scored():
    f = corpus()
    s = np.zeros(f.rows)
    s[10] = 1.0  # inside the first 15%: no FP
    assert score([f], {f.key: s}).fp == 0


def test_threshold_is_optimized_over_the_corpus():
    f, g = corpus(), corpus()
    g.key = "synthetic/b.csv"
    sf, sg = np.zeros(f.rows), np.zeros(g.rows)
    sf[805], sg[1505] = 0.9, 0.6
    sf[1200] = 0.95  # one FP above both detections: worth taking (TP ~ +1.9, FP -0.11)
    r = score([f, g], {f.key: sf, g.key: sg})
    assert r.threshold == pytest.approx(0.6)
    assert (r.tp, r.fp, r.fn) == (2, 1, 2)


def test_split_check_scores_each_half_with_its_own_threshold():
    fs = []
    for i in range(4):
        f = corpus()
        f.key = f"synthetic/{i}.csv"
        fs.append(f)
    scores = {}
    for i, f in enumerate(fs):
        s = np.full(f.rows, 0.5)
        if i % 2 == 0:  # perfect on the even files, constant on the odd ones
            s[:] = 0.0
            for a, _ in f.windows:
                s[a] = 1.0
        scores[f.key] = s
    halves = nab.split_check(fs, scores)
    for p in nab.PROFILES:
        assert halves["even"][p].normalized == pytest.approx(100.0)
        assert halves["odd"][p].normalized == pytest.approx(0.0)


def series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n) / 20.0) + 0.1 * rng.standard_normal(n)
    x[n // 2 :] += 3.0
    return x


def test_detector_is_deterministic_and_flags_a_level_shift():
    x = series(3000, 1)
    a = UnivariateDetector(probationary_period=450).score_learn_many(x)
    b = UnivariateDetector(probationary_period=450).score_learn_many(x)
    np.testing.assert_array_equal(a, b)
    assert np.all((a >= 0.0) & (a <= 1.0))
    assert np.all(a[:450] == 0.0)
    assert int(np.argmax(a)) in range(1500, 1510)


@pytest.mark.parametrize("view", ["w_shift", "w_shift_range", "w_value"])
def test_each_new_view_alone_flags_a_level_shift(view):
    weights = {"w_window": 0.0, "w_step": 0.0, "w_value": 0.0, "w_shift": 0.0, "w_shift_range": 0.0,
               "w_context": 0.0, view: 1.0}
    a = UnivariateDetector(probationary_period=450, **weights).score_learn_many(series(3000, 4))
    assert np.all((a >= 0.0) & (a <= 1.0))
    assert int(np.argmax(a)) in range(1500, 1520)  # the windowed views peak a few rows after the shift


def pattern(n: int, broken: bool) -> np.ndarray:
    """A repeating 12-step staircase; the broken twin plays one cycle's steps in reverse, inside the usual range."""
    cycle = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], dtype=np.float64)
    x = np.tile(cycle, n // 12 + 1)[:n]
    if broken:
        x[1800:1812] = cycle[::-1]
    return x


CONTEXT_ONLY = {"w_window": 0.0, "w_step": 0.0, "w_value": 0.0, "w_shift": 0.0, "w_shift_range": 0.0}


def test_context_novelty_flags_a_reordered_cycle_and_not_its_benign_twin():
    """Every value stays in range and every step size was seen before; only the order of the levels is new."""
    broken = UnivariateDetector(probationary_period=450, **CONTEXT_ONLY).score_learn_many(pattern(3000, True))
    benign = UnivariateDetector(probationary_period=450, **CONTEXT_ONLY).score_learn_many(pattern(3000, False))
    level = 3.0 / 4.0  # the default z_detect = 3 as a score
    assert int(np.argmax(broken)) in range(1800, 1812)
    assert broken.max() >= level
    assert benign.max() < level
    assert np.all(benign == 0.0)


def reference_context_novelty(x: np.ndarray, bits: int, order: int, mem: int, offset: float) -> np.ndarray:
    """Plain-Python statement of one tiling's context novelty: bins over the range so far shifted by ``offset`` of a
    bin, rebuilt from the last ``mem`` rows whenever the range grows or ``mem`` rows have passed, contexts as tuples
    of the previous bins."""
    levels = 1 << bits
    out = np.zeros(len(x))
    table: dict[tuple[int, ...], set[int]] = {}
    lo = hi = float(x[0])
    since = 0
    q: dict[int, int] = {}

    def level(v: float) -> int:
        return 0 if hi <= lo else min(max(int((v - lo) / (hi - lo) * levels + offset), 0), levels - 1)

    def visit(t: int, first: int) -> float:
        facts = {2 * i + ((q[t] >> i) & 1) for i in range(bits)}
        parts = []
        for k in range(1, order + 1):
            if t - k < first:
                break
            ctx = tuple(q[t - j] for j in range(1, k + 1))
            seen = table.get(ctx)
            parts.append(1.0 if seen is None else 1.0 - len(seen & facts) / bits)
            table.setdefault(ctx, set()).update(facts)
        return sum(parts) / len(parts) if parts else 0.0

    for t, v in enumerate(x):
        if min(x[: t + 1]) < lo or max(x[: t + 1]) > hi or since >= mem:
            lo, hi = float(min(x[: t + 1])), float(max(x[: t + 1]))
            table.clear()
            first = max(0, t - mem)
            for u in range(first, t):
                q[u] = level(x[u])
                visit(u, first)
            since = 0
        q[t] = level(v)
        out[t] = visit(t, max(0, t - mem))
        since += 1
    return out


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 4), st.integers(1, 5), st.integers(3, 40), st.integers(1, 3))
def test_context_novelty_kernel_equals_plain_python(seed, bits, order, mem, tilings):
    rng = np.random.default_rng(seed)
    x = np.round(np.cumsum(rng.standard_normal(150)) * 2) / 2
    det = UnivariateDetector(context_bits=bits, context_order=order, context_memory=mem, context_tilings=tilings)
    s = np.zeros(_NS)
    got = np.empty(len(x))
    for t, v in enumerate(x):
        s[_VMIN] = v if t == 0 else min(s[_VMIN], v)
        s[_VMAX] = v if t == 0 else max(s[_VMAX], v)
        got[t] = _context_step(v, t, s, det._xbuf, det._qbuf, det._ctab, bits, order)
    want = np.min([reference_context_novelty(x, bits, order, mem, j / tilings) for j in range(tilings)], axis=0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def bursts(n: int, seed: int, big_at: int) -> np.ndarray:
    """A noisy sine with the same 3-row burst every 250 rows from row 600, and one burst twice as high at ``big_at``."""
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n) / 20.0) + 0.1 * rng.standard_normal(n)
    for a in range(600, n, 250):
        x[a : a + 3] += 4.0
    x[big_at : big_at + 3] += 8.0
    return x


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_z_gate_quiets_a_recurring_burst_and_not_a_larger_one(seed):
    """A burst as large as the last ones is a repeat (its z part scaled down, unless noise makes it the largest yet);
    the one twice as high is new and scores exactly as without the gate."""
    x = bursts(3000, seed, big_at=2100)
    params = {"probationary_period": 450, "w_context": 0.0}
    on = UnivariateDetector(**params).score_learn_many(x)
    off = UnivariateDetector(**params, z_gate=0.0).score_learn_many(x)
    level = 3.0 / 4.0
    repeats = range(850, 2100, 250)  # the bursts after the first and before the big one
    flagged_on = sum(on[a : a + 5].max() >= level for a in repeats)
    flagged_off = sum(off[a : a + 5].max() >= level for a in repeats)
    assert flagged_off == len(repeats)
    assert flagged_on <= flagged_off - 2
    assert on[2100:2105].max() >= level
    assert on[2100:2105].max() == off[2100:2105].max()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 30))
def test_z_gate_equals_a_plain_sliding_maximum(seed, span):
    rng = np.random.default_rng(seed)
    z = np.round(rng.random(300) * 5) / 5  # ties
    s = np.zeros(_NS)
    zq = np.zeros((2, span + 2))
    got = [_gate(float(v), t, s, zq) for t, v in enumerate(z)]
    want = [t == 0 or bool(v > z[max(0, t - span) : t].max()) for t, v in enumerate(z)]
    assert got == want


def test_context_settings_that_would_overflow_a_key_are_refused():
    with pytest.raises(ValueError, match="62 bits"):
        UnivariateDetector(context_bits=6, context_order=12)


def test_state_round_trip_gives_identical_scores():
    x = series(2500, 2)
    full = UnivariateDetector(probationary_period=300).score_learn_many(x)
    det = UnivariateDetector(probationary_period=300)
    first = det.score_learn_many(x[:1234])
    restored = UnivariateDetector.from_state(pickle.loads(pickle.dumps(det.state())))
    rest = restored.score_learn_many(x[1234:])
    np.testing.assert_array_equal(np.concatenate([first, rest]), full)
    assert pickle.loads(pickle.dumps(restored)).state()["params"] == det.state()["params"]


def test_one_at_a_time_equals_batch():
    x = series(1200, 3)
    batch = UnivariateDetector(probationary_period=200).score_learn_many(x)
    det = UnivariateDetector(probationary_period=200)
    singles = []
    for v in x:
        singles.append(det.score_one({"value": float(v)}))
        det.learn_one({"value": float(v)})
    np.testing.assert_array_equal(np.array(singles), batch)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(60, 400))
def test_compiled_kernel_equals_pure_python(seed, n):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(n)) + (rng.random(n) < 0.02) * rng.normal(0, 20, n)
    if seed % 3 == 0:
        x = np.round(x)  # ties and flat stretches
    params = {"probationary_period": 30, "memory": 60, "history": 100, "context_memory": 50, "w_pairs": 0.0}
    fast = UnivariateDetector(**params).score_learn_many(x)
    slow_det = UnivariateDetector(**params)
    out = np.empty(n)
    _kernel.py_func(x, slow_det._cfg, slow_det._s, slow_det._v, slow_det._buf, slow_det._cbuf, slow_det._dhist,
                    slow_det._xbuf, slow_det._qbuf, slow_det._ctab, slow_det._zq, out, np.zeros(n))
    np.testing.assert_allclose(fast, out, rtol=1e-9, atol=1e-12)


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert nab.run(argparse.Namespace(data=tmp_path / "nope", out=tmp_path / "out")) == 2
    assert "NAB data not found" in capsys.readouterr().out


@pytest.fixture(scope="module")
def real_results(tmp_path_factory):
    if not (NAB_DATA / "labels" / "combined_windows.json").is_file():
        pytest.skip(f"NAB corpus not found at {NAB_DATA} (the shared datasets folder is absent)")
    small = tmp_path_factory.mktemp("nab-data")
    keys = ["realKnownCause/nyc_taxi.csv", "artificialNoAnomaly/art_daily_no_noise.csv"]
    windows = json.loads((NAB_DATA / "labels" / "combined_windows.json").read_text())
    (small / "labels").mkdir()
    (small / "labels" / "combined_windows.json").write_text(json.dumps({k: windows[k] for k in keys}))
    for k in keys:
        (small / "data" / k).parent.mkdir(parents=True, exist_ok=True)
        (small / "data" / k).symlink_to(NAB_DATA / "data" / k)
    out = tmp_path_factory.mktemp("nab-out")
    assert nab.run(argparse.Namespace(data=small, out=out)) == 0
    return keys, windows, out


def test_real_corpus_results_have_nab_format(real_results):
    keys, windows, out = real_results
    for key in keys:
        category, name = key.split("/")
        path = out / "spyglass" / category / f"spyglass_{name}"
        with path.open() as fh:
            rows = list(csv.reader(fh))
        with (NAB_DATA / "data" / key).open() as fh:
            data = list(csv.reader(fh))
        assert rows[0] == ["timestamp", "value", "anomaly_score", "label"]
        assert len(rows) == len(data)
        assert [r[:2] for r in rows[1:]] == data[1:]
        scores = np.array([float(r[2]) for r in rows[1:]])
        labels = np.array([int(r[3]) for r in rows[1:]])
        assert np.all((scores >= 0) & (scores <= 1))
        assert labels.sum() > 0 if windows[key] else labels.sum() == 0
    summary = json.loads((out / "spyglass_scores.json").read_text())
    assert set(summary["profiles"]) == set(nab.PROFILES)
    for p in summary["profiles"].values():
        assert -100.0 <= p["normalized"] <= 100.0


def days(n_days: int, broken: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hourly rows, a plateau from 08:00 to 15:00 every day; the broken twin skips one day's plateau (day 40)."""
    rng = np.random.default_rng(seed)
    hours = np.arange(24 * n_days)
    x = ((hours % 24 >= 8) & (hours % 24 < 16)).astype(np.float64)
    if broken:
        x[40 * 24 : 41 * 24] = 0.0
    ts = np.datetime64("2026-01-01T00:00") + hours.astype("timedelta64[h]")
    return x + 0.02 * rng.standard_normal(x.shape[0]), ts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_seasonal_view_flags_a_missing_day_and_not_its_benign_twin(seed):
    """Every value and every 8-hour shape of the broken day was seen before, only not at that hour of the day:
    the detector flags it only with the seasonal view, and never flags the benign twin."""
    level = 3.0 / 4.0
    x, ts = days(60, True, seed)
    broken = UnivariateDetector(probationary_period=300).score_learn_many(x, ts)
    without = UnivariateDetector(probationary_period=300, w_season=0.0).score_learn_many(x, ts)
    assert broken.max() >= level
    assert int(np.argmax(broken)) in range(40 * 24 + 8, 40 * 24 + 16)
    assert without.max() < level
    # without timestamps the view has no lag and stays off
    np.testing.assert_array_equal(UnivariateDetector(probationary_period=300).score_learn_many(x), without)
    x, ts = days(60, False, seed)
    benign = UnivariateDetector(probationary_period=300).score_learn_many(x, ts)
    assert benign.max() < level


def test_seasonal_lag_follows_the_sampling_step_and_refuses_what_does_not_fit():
    five_min = np.datetime64("2026-01-01T00:00") + (5 * np.arange(50)).astype("timedelta64[m]")
    assert UnivariateDetector()._season_lag(five_min.astype("datetime64[us]")) == 288
    half_min = np.datetime64("2026-01-01T00:00") + (30 * np.arange(50)).astype("timedelta64[s]")
    assert UnivariateDetector()._season_lag(half_min.astype("datetime64[us]")) == -1  # 2,880 rows > season_max
    assert UnivariateDetector(season_max=3000)._season_lag(half_min.astype("datetime64[us]")) == 2880
    backwards = five_min[::-1].astype("datetime64[us]")
    assert UnivariateDetector()._season_lag(backwards) == -1
    with_gaps = five_min.astype("datetime64[us]").copy()
    with_gaps[[0, 7, 20]] = np.datetime64("NaT")
    assert UnivariateDetector()._season_lag(with_gaps) == 288
    with pytest.raises(ValueError, match="season"):
        UnivariateDetector(season=-1.0)
    with pytest.raises(ValueError, match="timestamps"):
        UnivariateDetector().score_learn_many(np.zeros(3), np.array(["noon", "x", "y"]))


def test_state_round_trip_keeps_the_seasonal_lag():
    x, ts = days(50, True)
    full = UnivariateDetector(probationary_period=300).score_learn_many(x, ts)
    det = UnivariateDetector(probationary_period=300)
    first = det.score_learn_many(x[:700], ts[:700])
    restored = UnivariateDetector.from_state(pickle.loads(pickle.dumps(det.state())))
    rest = restored.score_learn_many(x[700:])  # the lag was set by the first call
    np.testing.assert_array_equal(np.concatenate([first, rest]), full)
