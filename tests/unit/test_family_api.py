"""The API family's learned, calibrated detectors: each pattern alerts on the right entity, its benign twin does not.

Patterns: a steady key from a new client, a key far above its own (low) rate, tokens far above a key's own,
a key never seen running calls at the tenant's night, authentication failures spread over many IPs and keys.
Benign twins: a proxy key with a new IP on every call, a tenant-wide release-day surge, ordinary token spread,
a new key in the working day, failures at the tenant's usual trickle.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from detectors.calibration import normal_surprise, poisson_surprise
from detectors.kernels import normal_surprise_nb, poisson_surprise_nb
from tests.unit.test_detectors import T0, Stream, _hits, _work

KEYS = ("k0", "k1", "k2", "k3", "k4")


def _history(s: Stream, rng: np.random.Generator, days: int = 4, per_day: int = 40, *, proxy: bool = False,
             tokens: float = 30.0) -> None:
    """Five keys' ordinary use over working days; k0 behind a proxy (a new IP per call) when ``proxy``."""
    for day in range(days):
        for key in KEYS:
            for _ in range(per_day):
                ip = f"172.16.{rng.integers(250)}.{rng.integers(250)}" if proxy and key == "k0" else "10.1.0.1"
                s.api(_work(rng, day), key, "inference:chat", ip=ip)
                _tokens(s, tokens * float(rng.lognormal(0.0, 0.5)))


def _tokens(s: Stream, total: float) -> None:
    row = s.rows[-1][1]
    row["tokens_in"], row["tokens_out"] = int(total / 3) + 1, int(2 * total / 3) + 1


# -- api.new_client: judged by the key's own novelty rate -------------------------------------------
def proxy_client(minimal: bool = False) -> tuple[list, set[str]]:
    """The benign twin: a proxy key shows yet another new IP, as it does on every call."""
    rng = np.random.default_rng(1)
    s = Stream()
    _history(s, rng, proxy=True)
    t = T0 + timedelta(days=4, hours=10)
    ids = {s.api(t + timedelta(seconds=30 * i), "k0", "inference:chat", ip=f"172.17.0.{i}") for i in range(5)}
    return s.run(minimal=minimal), ids


def test_a_proxy_key_with_a_new_ip_on_every_call_is_never_a_new_client():
    alerts, ids = proxy_client()
    assert not _hits(alerts, "api.new_client")


def test_a_steady_key_from_a_new_ip_and_user_agent_is_a_new_client_with_its_odds():
    rng = np.random.default_rng(1)
    s = Stream()
    _history(s, rng, proxy=True)
    t = T0 + timedelta(days=4, hours=10)
    ids = {s.api(t + timedelta(seconds=30 * i), "k1", "inference:chat", ip="198.51.100.9", user_agent="curl/8.5")
           for i in range(3)}
    hits = _hits(s.run(), "api.new_client", ids)
    assert hits and hits[0].entity == "k1" and "1 in " in hits[0].explanation
    assert hits[0].title == "API key used from a new client IP and user agent"


# -- api.rate_burst: the key's own rate, its tenant's surge -------------------------------------------
def rate_pattern(minimal: bool = False, surge: bool = False) -> tuple[list, set[str]]:
    """k1 at about 10x its own rate for 20 minutes (30 requests, below any absolute floor of 40); ``surge``:
    every key of the tenant at 4x for two hours instead (a release day)."""
    rng = np.random.default_rng(2)
    s = Stream()
    _history(s, rng, per_day=12)
    t = T0 + timedelta(days=4, hours=11)
    ids: set[str] = set()
    if surge:
        for key in KEYS:
            for _ in range(16):
                ids.add(s.api(t + timedelta(minutes=float(rng.uniform(0, 120))), key, "inference:chat"))
    else:
        for i in range(30):
            ids.add(s.api(t + timedelta(seconds=40 * i), "k1", "inference:chat"))
    return s.run(minimal=minimal), ids


def test_a_burst_far_above_the_keys_own_low_rate_is_caught_within_a_minute_or_two():
    alerts, ids = rate_pattern()
    hits = _hits(alerts, "api.rate_burst", ids)
    assert hits and hits[0].entity == "k1" and "for this key" in hits[0].explanation
    first = min(int(e[1:]) for e in ids)
    assert hits[0].evidence.event_ids[0] != f"a{first}"


def test_a_tenant_wide_release_day_surge_is_not_a_burst():
    alerts, ids = rate_pattern(surge=True)
    assert not _hits(alerts, "api.rate_burst", ids)


# -- api.denial_of_wallet: same rate, far more tokens ---------------------------------------------------
def wallet_pattern(minimal: bool = False, scale: float = 30.0) -> tuple[list, set[str]]:
    rng = np.random.default_rng(3)
    s = Stream()
    _history(s, rng, per_day=12)
    ids = set()
    for _ in range(6):
        ids.add(s.api(_work(rng, 4), "k2", "inference:chat"))
        _tokens(s, 30.0 * scale * float(rng.lognormal(0.0, 0.3)))
    return s.run(minimal=minimal), ids


def test_tokens_far_above_the_keys_own_at_its_usual_rate_are_caught():
    alerts, ids = wallet_pattern()
    hits = _hits(alerts, "api.denial_of_wallet", ids)
    assert hits and hits[0].entity == "k2" and "usual" in hits[0].explanation


def test_ordinary_token_spread_is_not_denial_of_wallet():
    alerts, ids = wallet_pattern(scale=1.0)
    assert not _hits(alerts, "api.denial_of_wallet", ids)


# -- api.unknown_key: a key never seen, at the tenant's night -----------------------------------------
def unknown_pattern(minimal: bool = False, hour: float = 3.0) -> tuple[list, set[str]]:
    rng = np.random.default_rng(4)
    s = Stream()
    _history(s, rng, per_day=30)
    t = T0 + timedelta(days=4, hours=hour)
    ids = {s.api(t + timedelta(seconds=20 * i), "k-new", "inference:chat", ip="203.0.113.8",
                 user_agent="python-httpx/0.27.0") for i in range(30)}
    return s.run(minimal=minimal), ids


def test_a_key_never_seen_calling_at_the_tenants_night_is_caught_within_a_minute():
    alerts, ids = unknown_pattern()
    hits = _hits(alerts, "api.unknown_key", ids)
    assert hits and hits[0].entity == "k-new"
    assert hits[0].first_seen <= (T0 + timedelta(days=4, hours=3, seconds=60)).isoformat()[:19]


def test_a_new_key_in_the_working_day_is_not_unknown():
    alerts, ids = unknown_pattern(hour=11.0)
    assert not _hits(alerts, "api.unknown_key", ids)


# -- api.auth_failure_spread: credential stuffing over many IPs and keys -----------------------------
def spread_pattern(minimal: bool = False, minutes: float = 15.0, tries: int = 200) -> tuple[list, set[str]]:
    """``tries`` invalid-credential attempts over ``minutes`` from 40 IPs on guessed keys (no IP bursts)."""
    rng = np.random.default_rng(5)
    s = Stream()
    _history(s, rng, per_day=30)
    t = T0 + timedelta(days=4, hours=14)
    ids = {s.api(t + timedelta(seconds=float(rng.uniform(0, minutes * 60))), f"guess-{i}", "inference:chat",
                 ip=f"198.51.100.{i % 40}", auth_result="invalid_credentials") for i in range(tries)}
    return s.run(minimal=minimal), ids


def test_failures_spread_over_many_ips_and_keys_are_caught_once_per_tenant_episode():
    alerts, ids = spread_pattern()
    hits = _hits(alerts, "api.auth_failure_spread", ids)
    assert len(hits) == 1 and hits[0].entity.startswith("198.51.100.")
    assert not _hits(alerts, "api.auth_failure_burst", ids), "no single IP bursts"


def test_failures_at_the_tenants_usual_trickle_are_not_a_spread():
    alerts, ids = spread_pattern(minutes=4 * 24 * 60, tries=6)
    assert not _hits(alerts, "api.auth_failure_spread", ids)


# -- the compiled tails agree with detectors.calibration -------------------------------------------------
def test_compiled_tails_match_the_calibration_module():
    for k, mu in ((30, 2.0), (5, 0.1), (3.5, 0.02), (1, 3.0), (60, 40.0)):
        assert abs(poisson_surprise_nb(k, mu) - poisson_surprise(k, mu)) < 1e-9
    for z in (-1.0, 0.5, 2.0, 6.0):
        assert abs(normal_surprise_nb(z) - normal_surprise(z)) < 1e-9


# -- api.rate_burst: the cluster test over a key's latest requests -----------------------------------
def cluster_pattern(minimal: bool = False, spread_h: float = 0.0) -> tuple[list, set[str]]:
    """k3 (12 requests a working day) makes 12 requests about a minute apart at night (no decayed window of
    the old kind saw that as a burst); ``spread_h``: the same 12 requests spread over that many working hours."""
    rng = np.random.default_rng(6)
    s = Stream()
    _history(s, rng, per_day=12)
    if spread_h:
        t, step = T0 + timedelta(days=4, hours=9), spread_h * 3600 / 12
    else:
        t, step = T0 + timedelta(days=4, hours=2), 60.0
    ids = {s.api(t + timedelta(seconds=step * i + float(rng.uniform(0, 20))), "k3", "inference:chat")
           for i in range(12)}
    return s.run(minimal=minimal), ids


def test_a_dozen_requests_a_minute_apart_at_night_is_a_burst_said_as_a_cluster():
    alerts, ids = cluster_pattern()
    hits = _hits(alerts, "api.rate_burst", ids)
    assert hits and hits[0].entity == "k3"
    assert "requests within" in hits[0].explanation and "1 in " in hits[0].explanation


def test_the_same_dozen_requests_spread_over_the_working_day_are_not_a_burst():
    alerts, ids = cluster_pattern(spread_h=8.0)
    assert not _hits(alerts, "api.rate_burst", ids)


# -- api.denial_of_wallet: tokens judged relative to the endpoint ---------------------------------------
def endpoint_pattern(minimal: bool = False, batch: bool = False) -> tuple[list, set[str]]:
    """k4 mixes small chat requests with batch jobs 40x their size. Six chat requests of batch size are far above
    its usual chat; ``batch``: six more of its ordinary batch jobs instead (large, but usual for the endpoint)."""
    rng = np.random.default_rng(7)
    s = Stream()
    for day in range(4):
        for key in KEYS:
            for j in range(40):
                big = key == "k4" and j % 4 == 0
                s.api(_work(rng, day), key, "inference:batch" if big else "inference:chat",
                      endpoint="/v1/batches" if big else "/v1/chat/completions")
                _tokens(s, (1200.0 if big else 30.0) * float(rng.lognormal(0.0, 0.5)))
    ids = set()
    for _ in range(6):
        ids.add(s.api(_work(rng, 4), "k4", "inference:batch" if batch else "inference:chat",
                      endpoint="/v1/batches" if batch else "/v1/chat/completions"))
        _tokens(s, 1200.0 * float(rng.lognormal(0.0, 0.3)))
    return s.run(minimal=minimal), ids


def test_chat_requests_of_batch_size_are_denial_of_wallet_for_a_key_that_mixes_them():
    alerts, ids = endpoint_pattern()
    hits = _hits(alerts, "api.denial_of_wallet", ids)
    assert hits and hits[0].entity == "k4" and "/v1/chat/completions" in hits[0].explanation


def test_a_keys_ordinary_batch_jobs_are_not_denial_of_wallet():
    alerts, ids = endpoint_pattern(batch=True)
    assert not _hits(alerts, "api.denial_of_wallet", ids)


# -- the appended kernels against plain Python ------------------------------------------------------------
def test_gap_scan_is_the_negative_binomial_tail_of_the_last_k_requests():
    from scipy.stats import nbinom

    from detectors.kernels import gap_scan_nb

    rng = np.random.default_rng(8)
    key = rng.integers(0, 3, size=200)
    ts = np.cumsum(rng.exponential(30_000.0, size=200))
    rate = rng.uniform(1e-6, 1e-4, size=200)
    ks, size = np.array([2, 4]), rng.uniform(2.0, 40.0, size=200)
    ring = np.zeros((3, 4))
    long_ms = 90_000.0  # a longer gap is judged at the long rate (the key's rhythm can have turned within it)
    out = gap_scan_nb(key, ts, rate, ring, ks, 1, size, 3.0 * rate, long_ms)
    seen: dict[int, list[float]] = {0: [], 1: [], 2: []}
    for i in range(200):
        past = seen[int(key[i])]
        best, best_all = 0.0, 0.0
        for j, k in enumerate(ks.tolist()):
            if len(past) >= k:
                span = max(ts[i] - past[-k], 1.0)
                mu = (rate[i] if span <= long_ms else 3.0 * rate[i]) * span
                sv = 0.0 if k <= mu else -np.log10(nbinom.sf(k - 1, size[i], size[i] / (size[i] + mu)))
                best_all = max(best_all, sv)
                if j < 1:
                    best = max(best, sv)
        assert out[i, 0] == pytest.approx(best, rel=1e-7, abs=1e-9)
        assert out[i, 4] == pytest.approx(best_all, rel=1e-7, abs=1e-9)
        past.append(float(ts[i]))
    assert (out[:, 4] > 0).any()
    assert all(ring[k, 0] == seen[k][-1] for k in range(3) if seen[k])


def test_group_log_residual_is_robust_to_a_run_of_outliers():
    from detectors.kernels import group_log_residual

    x = np.r_[np.full(200, 5.0), np.full(20, 12.0), np.full(5, 5.0)]
    grp = np.zeros(x.size, dtype=np.int64)
    mean, seen = np.zeros(1), np.zeros(1)
    r = group_log_residual(grp, x, np.ones(x.size, dtype=bool), mean, seen, 0.01, 1.0)
    assert r[0] == 0.0 and abs(r[199]) < 1e-9
    assert r[200] == 7.0 and r[219] > 6.5, "twenty huge requests barely move the endpoint's norm"
    assert abs(r[-1]) < 0.5


# -- api.denial_of_wallet for a young key: judged by its peers -------------------------------------------
def young_wallet_pattern(minimal: bool = False, scale: float = 40.0) -> tuple[list, set[str]]:
    """A key first seen today makes 8 ordinary chat requests, then 6 of ``scale`` times the tenant's usual size
    (no history of its own to speak of: its peers' spread judges it)."""
    rng = np.random.default_rng(9)
    s = Stream()
    _history(s, rng, per_day=12)
    ids = set()
    for j in range(14):
        eid = s.api(T0 + timedelta(days=4, hours=9, minutes=20 * j), "k-young", "inference:chat")
        _tokens(s, 30.0 * (scale if j >= 8 else 1.0) * float(rng.lognormal(0.0, 0.4)))
        if j >= 8:
            ids.add(eid)
    return s.run(minimal=minimal), ids


def test_a_young_keys_requests_far_above_its_peers_are_denial_of_wallet():
    alerts, ids = young_wallet_pattern()
    hits = _hits(alerts, "api.denial_of_wallet", ids)
    assert hits and hits[0].entity == "k-young"


def test_a_young_keys_ordinary_requests_are_not_denial_of_wallet():
    alerts, ids = young_wallet_pattern(scale=1.0)
    assert not _hits(alerts, "api.denial_of_wallet", ids)


# -- api.model_extraction: outputs far longer than the key's own for their inputs ---------------------------
def long_output_pattern(minimal: bool = False, out_scale: float = 10.0) -> tuple[list, set[str]]:
    """k2 at about 8x its own rate for an hour on one model, each output ``out_scale`` times its usual for the
    same inputs (the total tokens barely move: the outputs were a third of them)."""
    rng = np.random.default_rng(10)
    s = Stream()
    _history(s, rng, per_day=12)
    t = T0 + timedelta(days=4, hours=10)
    ids = set()
    for i in range(60):
        ids.add(s.api(t + timedelta(seconds=60 * i + float(rng.uniform(0, 30))), "k2", "inference:chat"))
        total = 30.0 * float(rng.lognormal(0.0, 0.5))
        row = s.rows[-1][1]
        row["tokens_in"], row["tokens_out"] = int(total / 3) + 1, int(out_scale * 2 * total / 3) + 1
    return s.run(minimal=minimal), ids


def test_long_outputs_at_a_sustained_rate_are_model_extraction():
    alerts, ids = long_output_pattern()
    hits = _hits(alerts, "api.model_extraction", ids)
    assert hits and hits[0].entity == "k2" and "outputs far longer" in hits[0].explanation


def test_the_same_rate_with_usual_outputs_is_not_model_extraction():
    alerts, ids = long_output_pattern(out_scale=1.0)
    assert not _hits(alerts, "api.model_extraction", ids)


def test_token_run_model_judges_a_young_key_by_its_peers_spread():
    from detectors.kernels import token_run_model

    key = np.zeros(3, dtype=np.int64)
    grp = np.zeros(3, dtype=np.int64)
    cols = [np.zeros(1) for _ in range(4)]
    g_var, g_n = np.array([0.25]), np.array([100.0])
    out = token_run_model(key, grp, np.ones(3, dtype=bool), np.array([0.1, 2.0, 2.0]), *cols, g_var, g_n,
                          0.02, 0.3, 20.0, 4.0, 2.5, 0.01)
    assert abs(out[0, 0] - 0.1 / 0.5) < 1e-9, "a key's first request: its peers' spread, mean 0"
    assert out[1, 0] > 3.5 and out[2, 1] > out[1, 1] > 0, "far-out requests start and grow a run"
    assert cols[2][0] == 1.0, "far-out requests are not learned"


# -- api.new_scope: the key's own rate of taking up scopes, times the scope's share of the tenant's keys -------
def _scopes(scope: str, *, history: int, guessed: int = 0) -> tuple[list, set[str]]:
    """30 keys of a tenant using chat (every third also embeddings); key ``solo`` uses chat ``history`` times,
    then ``scope`` (unprivileged) three times. ``guessed`` keys of a credential-stuffing run fail first."""
    rng = np.random.default_rng(11)
    s = Stream()
    for k in range(30):
        for day in range(3):
            for _ in range(4):
                s.api(_work(rng, day), f"key{k}", "inference:chat")
            if k % 3 == 0:
                s.api(_work(rng, day), f"key{k}", "inference:embed", endpoint="/v1/embeddings")
    for g in range(guessed):
        s.api(T0 + timedelta(days=1, seconds=g), f"guess{g}", "inference:chat", auth_result="invalid_credentials")
    for h in range(history):
        s.api(T0 + timedelta(hours=2, seconds=3 * 24 * 3600 * h / history), "solo", "inference:chat")
    t = T0 + timedelta(days=3, hours=10)
    ids = {s.api(t + timedelta(seconds=20 * i), "solo", scope, endpoint="/v1/batches") for i in range(3)}
    return s.run(), ids


def test_a_key_with_one_scope_for_hundreds_of_requests_turning_to_a_scope_no_key_uses_is_caught():
    alerts, ids = _scopes("inference:batch", history=400)
    hits = [a for a in _hits(alerts, "api.new_scope", ids) if a.severity != "info"]
    assert hits and hits[0].entity == "solo"
    assert "1 in" in hits[0].explanation and "0 of its tenant's" in hits[0].explanation


def test_a_young_key_taking_up_a_scope_a_third_of_its_peers_use_is_not_news():
    """The benign twin: 12 requests in, embeddings (a third of the tenant's keys use them) is what young keys do."""
    alerts, ids = _scopes("inference:embed", history=12)
    assert not [a for a in _hits(alerts, "api.new_scope", ids) if a.severity != "info"]


def test_keys_a_credential_stuffing_run_guessed_do_not_make_a_scope_look_rare():
    """Three hundred guessed keys that never authenticated are not the tenant's keys: the embeddings scope is
    still used by a third of its keys, so a young key taking it up stays quiet."""
    alerts, ids = _scopes("inference:embed", history=12, guessed=300)
    assert not [a for a in _hits(alerts, "api.new_scope", ids) if a.severity != "info"]
