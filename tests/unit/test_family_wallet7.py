"""api.denial_of_wallet on new worlds: an endpoint norm that followed whichever keys were busy.

Benign twin: a busy key with large requests that dominates its endpoint by day and is quiet at night (the norm its
tokens are judged relative to was learned from every request alike, so it dropped overnight to the small keys'
size and the busy key's ordinary morning requests looked several times its usual). Pattern: the same key's
requests thirty times its own size are still raised.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from detectors.families.api import ApiConfig
from tests.unit.test_detectors import T0, Stream, _hits
from tests.unit.test_family_api_surge7 import _poisson


def _size(s: Stream, total: float) -> None:
    row = s.rows[-1][1]
    row["tokens_in"], row["tokens_out"] = int(total / 3) + 1, int(2 * total / 3) + 1


def night_size_pattern(minimal: bool = False, scale: float = 1.0) -> tuple[list, set[str]]:
    """Four days of one tenant's embeddings: "big" (seventy times the others' size) busy in the working day and
    silent at night, four small service keys around the clock; then, early on the fifth morning, big's requests at
    ``scale`` times its own usual size."""
    rng = np.random.default_rng(9)
    s = Stream()
    for day in range(5):
        start = T0 + timedelta(days=day)
        for t in (_poisson(rng, start + timedelta(hours=9), 8.0, 60.0) if day < 4 else []):
            s.api(t, "big", "inference:embed", endpoint="/v1/embeddings", model="embed-v3")
            _size(s, 20000.0 * float(rng.lognormal(0.0, 0.7)))
        for key in ("s0", "s1", "s2", "s3"):
            for t in _poisson(rng, start, 24.0, 4.0):
                s.api(t, key, "inference:embed", endpoint="/v1/embeddings", model="embed-v3")
                _size(s, 300.0 * float(rng.lognormal(0.0, 0.7)))
    ids = set()
    for i in range(40):  # early on the fifth morning, after the service keys' night
        ids.add(s.api(T0 + timedelta(days=4, hours=6, minutes=3 * i), "big", "inference:embed",
                      endpoint="/v1/embeddings", model="embed-v3"))
        _size(s, 20000.0 * scale * float(rng.lognormal(0.0, 0.7)))
    return s.run(minimal=minimal), ids


def test_a_busy_keys_ordinary_requests_at_night_are_not_denial_of_wallet():
    alerts, ids = night_size_pattern()
    assert not _hits(alerts, "api.denial_of_wallet", ids)


def test_the_busy_keys_requests_far_above_its_own_at_night_are_still_denial_of_wallet():
    alerts, ids = night_size_pattern(scale=30.0)
    hits = _hits(alerts, "api.denial_of_wallet", ids)
    assert hits and hits[0].entity == "big"


def _day_and_night(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One endpoint's requests (key, log tokens) over three days: key 0 twenty times the others' size and busy from
    09:00 to 17:00, keys 1-4 small around the clock; then key 0's ordinary requests early on the fourth morning."""
    key, x, ts = [], [], []
    for day in range(3):
        t0 = day * 24.0
        for k, (start, hours, per_hour, size) in enumerate([(9.0, 8.0, 60.0, 6000.0)] + [(0.0, 24.0, 4.0, 300.0)] * 4):
            n = int(rng.poisson(per_hour * hours))
            ts += list(t0 + start + rng.uniform(0.0, hours, n))
            key += [k] * n
            x += list(np.log1p(size * rng.lognormal(0.0, 0.7, n)))
    for k in range(1, 5):  # the small keys' fourth night, then key 0 from 06:00
        n = int(rng.poisson(4.0 * 6.0))
        ts += list(72.0 + rng.uniform(0.0, 6.0, n))
        key += [k] * n
        x += list(np.log1p(300.0 * rng.lognormal(0.0, 0.7, n)))
    ts += list(78.0 + np.arange(40) * 0.05)
    key += [0] * 40
    x += list(np.log1p(6000.0 * rng.lognormal(0.0, 0.7, 40)))
    order = np.argsort(ts, kind="stable")
    return np.array(key, dtype=np.int64)[order], np.array(x)[order]


def test_the_endpoint_norm_is_a_typical_keys_size_not_the_busy_keys_of_the_hour():
    """A busy key's ordinary morning requests after a night of small keys are ordinary for it: judged against a
    norm that learns each request less its key's own offset; the norm that followed whichever keys were busy had
    dropped overnight and made them look several times its usual."""
    from detectors.kernels import group_log_residual, token_scope_model

    cfg = ApiConfig()
    key, x = _day_and_night(np.random.default_rng(3))
    grp, ones = np.zeros(key.size, dtype=np.int64), np.ones(key.size, dtype=np.bool_)

    def judge(resid: np.ndarray, norm: np.ndarray, seen: np.ndarray) -> np.ndarray:
        state = [np.zeros(5) for _ in range(4)]
        return token_scope_model(key, grp, ones, resid, ~ones, *state, np.zeros(1), np.zeros(1), np.zeros((1, 4)),
                                 cfg.token_mean_alpha, cfg.token_var_alpha, cfg.token_min_sd, cfg.token_peer_events,
                                 cfg.token_gate, cfg.token_run_z, cfg.token_route_alpha, norm, seen,
                                 cfg.token_route_step)

    keyed = judge(x.copy(), np.zeros(1), np.zeros(1))[-40:, 0]
    followed = group_log_residual(grp, x, ones, np.zeros(1), np.zeros(1), cfg.token_route_alpha,
                                  cfg.token_route_step)
    busy = judge(followed, np.zeros(0), np.zeros(0))[-40:, 0]
    assert abs(float(np.mean(keyed))) < 0.5, "its ordinary requests are about its usual"
    assert float(np.mean(busy)) > 1.0, "the norm that follows the busy keys drops overnight"
