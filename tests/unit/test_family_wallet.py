"""api.denial_of_wallet: one far-out request, keys that differ widely, and tokens of a burst not learned.

Patterns and benign twins for the hierarchical token model (``kernels.token_scope_model``) and the
single-request raise level (``token_single_surprise``).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from detectors.calibration import normal_surprise
from detectors.families.api import ApiConfig
from detectors.kernels import token_run_model, token_scope_model
from tests.unit.test_detectors import T0, Stream, _hits, _work

NO_NORM = (np.zeros(0), np.zeros(0), 1.0)  # tokens given relative to their endpoint already (no norm kept)
SCALES = {"k0": 0.2, "k1": 3.0, "k2": 1.0, "k3": 8.0, "k4": 0.5}  # keys of one tenant differ widely in size


def _tokens(s: Stream, total: float) -> None:
    row = s.rows[-1][1]
    row["tokens_in"], row["tokens_out"] = int(total / 3) + 1, int(2 * total / 3) + 1


def one_request_pattern(minimal: bool = False, scale: float = 40.0, per_day: int = 25) -> tuple[list, set[str]]:
    """Keys whose sizes differ by a factor of 40 (each request varying by about 2x around its key's own), then
    one request of ``scale`` times k2's usual size at its usual rate: the first request of a denial of wallet."""
    rng = np.random.default_rng(11)
    s = Stream()
    for day in range(4):
        for key, size in SCALES.items():
            for _ in range(per_day):
                s.api(_work(rng, day), key, "inference:chat")
                _tokens(s, 300.0 * size * float(rng.lognormal(0.0, 0.7)))
    eid = s.api(T0 + timedelta(days=4, hours=10), "k2", "inference:chat")
    _tokens(s, 300.0 * scale)
    return s.run(minimal=minimal), {eid}


def test_one_request_far_above_a_keys_own_is_raised_on_that_request():
    alerts, ids = one_request_pattern()
    hits = _hits(alerts, "api.denial_of_wallet", ids)
    assert hits and hits[0].entity == "k2" and "one request" in hits[0].explanation


def test_one_request_a_few_times_a_keys_usual_is_not_raised():
    alerts, ids = one_request_pattern(scale=6.0)  # about 2.5 spreads out: one in a few hundred requests
    assert not _hits(alerts, "api.denial_of_wallet", ids)


def test_a_young_keys_first_far_out_request_is_judged_by_one_keys_spread_not_every_keys():
    """Peers differ by a factor of 40 in size, each key's requests by about 2x: a young key with 30 requests of
    its own is judged by the within-key spread, so a request 30x its usual is far out; the former blend held it to
    the spread of every key's requests and found it ordinary."""
    rng = np.random.default_rng(5)
    n_keys, per_key = 12, 150
    means = rng.normal(0.0, 1.2, n_keys)
    key = np.repeat(np.arange(n_keys), per_key)
    rng.shuffle(key)
    x = means[key] + rng.normal(0.0, 0.7, key.size)
    young = np.full(31, n_keys)
    key = np.concatenate([key, young])
    x = np.concatenate([x, 0.4 + rng.normal(0.0, 0.7, 30), [0.4 + np.log(30.0)]])
    grp = np.zeros(key.size, dtype=np.int64)
    ones = np.ones(key.size, dtype=np.bool_)
    cfg = ApiConfig()

    def cols():
        return [np.zeros(n_keys + 1) for _ in range(4)]

    new = token_scope_model(key, grp, ones, x, ~ones, *cols(), np.zeros(1), np.zeros(1), np.zeros((1, 4)),
                            cfg.token_mean_alpha, cfg.token_var_alpha, cfg.token_min_sd, cfg.token_peer_events,
                            cfg.token_gate, cfg.token_run_z, cfg.token_route_alpha, *NO_NORM)
    old = token_run_model(key, grp, ones, x, *cols(), np.zeros(1), np.zeros(1), cfg.token_alpha, cfg.token_min_sd,
                          cfg.token_prior_events, cfg.token_gate, cfg.token_run_z, cfg.token_route_alpha)
    assert new[-1, 3] >= cfg.token_single_surprise > normal_surprise(old[-1, 0])
    # the same key's ordinary requests stay ordinary: none of its 30 reaches a run's z
    assert (new[-31:-1, 0] < cfg.token_run_z).all()


def test_a_busy_keys_ordinary_requests_stay_below_the_single_request_level():
    """20,000 ordinary requests of keys that differ widely: none is one request past the raise level (at 1 in
    300,000 a request, the level's tail, about none is expected)."""
    rng = np.random.default_rng(8)
    n_keys = 10
    means = rng.normal(0.0, 1.0, n_keys)
    key = rng.integers(0, n_keys, 20_000)
    x = means[key] + rng.normal(0.0, 0.7, key.size)
    grp = np.zeros(key.size, dtype=np.int64)
    ones = np.ones(key.size, dtype=np.bool_)
    cfg = ApiConfig()
    out = token_scope_model(key, grp, ones, x, ~ones, *[np.zeros(n_keys) for _ in range(4)], np.zeros(1),
                            np.zeros(1), np.zeros((1, 4)), cfg.token_mean_alpha, cfg.token_var_alpha,
                            cfg.token_min_sd, cfg.token_peer_events, cfg.token_gate, cfg.token_run_z,
                            cfg.token_route_alpha, *NO_NORM)
    assert out[2_000:, 3].max() < cfg.token_single_surprise


def test_requests_at_an_unusual_rate_are_judged_but_not_learned():
    """A burst's requests (``skip``) of another size do not move the key's distribution: its ordinary requests
    afterwards are judged as before."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(1.0, 0.7, 300), np.full(200, -2.0), [1.0]])
    key = np.zeros(x.size, dtype=np.int64)
    grp = np.zeros(x.size, dtype=np.int64)
    skip = np.zeros(x.size, dtype=np.bool_)
    skip[300:500] = True
    cfg = ApiConfig()
    state = [np.zeros(1) for _ in range(4)]
    out = token_scope_model(key, grp, np.ones(x.size, dtype=np.bool_), x, skip, *state, np.zeros(1),
                            np.zeros(1), np.zeros((1, 4)), cfg.token_mean_alpha, cfg.token_var_alpha,
                            cfg.token_min_sd, cfg.token_peer_events, cfg.token_gate, cfg.token_run_z,
                            cfg.token_route_alpha, *NO_NORM)
    assert state[2][0] == 301  # learned: the 300 ordinary requests and the last one, not the burst's 200
    assert out[300, 0] < -2.0 and abs(out[-1, 0]) < 1.0
