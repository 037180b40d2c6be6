"""api.rate_burst on new worlds: a tenant-wide release-day surge the key model did not see as one.

Benign twin: a release-day surge of a tenant one busy key dominates (the surge's own requests, learned into the
tenant's rhythm as they came, raised the expectation the other keys' counts were judged by, and the tenant's
hours seen on more days counted as busier than those seen on fewer, so the surge was never seen as one and the
busy key's surge looked like a burst). Patterns: the busy key alone at ten times its rate, and a quiet key's
burst, with no tenant surge, are still raised.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from detectors.families.api import RATE_WINDOWS_S, ApiConfig
from detectors.families.common import DAY, HOUR
from detectors.kernels import KR_SURGE, TN_COLS, key_rate_model
from tests.unit.test_detectors import T0, Stream, _hits

RATES = {"k0": 600, "k1": 16, "k2": 16, "k3": 16, "k4": 16}  # requests per working day: k0 dominates its tenant


def _poisson(rng: np.random.Generator, start, hours: float, per_hour: float) -> list:
    n = int(rng.poisson(per_hour * hours))
    return sorted(start + timedelta(hours=float(h)) for h in rng.uniform(0.0, hours, n))


def surge_pattern(minimal: bool = False, surge: float = 5.0, burst_key: str | None = None) -> tuple[list, set[str]]:
    """Four working days (09:00-17:00) of five keys, k0 dominant; on the fifth, every key at ``surge`` times its
    rate from 11:00 for three hours (a release day), or, with ``burst_key``, no surge but that key's burst: k0 at
    ten times its rate for an hour, any other key 30 requests 40 s apart, from 12:00."""
    rng = np.random.default_rng(7)
    s = Stream()
    ids: set[str] = set()
    for day in range(5):
        for key, per_day in RATES.items():
            rate = per_day / 8.0
            start = T0 + timedelta(days=day, hours=9)
            if day < 4 or burst_key is not None:
                times = _poisson(rng, start, 8.0, rate)
            else:
                times = (_poisson(rng, start, 2.0, rate)
                         + _poisson(rng, start + timedelta(hours=2), 3.0, rate * surge)
                         + _poisson(rng, start + timedelta(hours=5), 3.0, rate))
            for t in times:
                eid = s.api(t, key, "inference:chat")
                if day == 4 and burst_key is None:
                    ids.add(eid)
    if burst_key is not None:
        noon = T0 + timedelta(days=4, hours=12)
        times = (_poisson(rng, noon, 1.0, 9.0 * RATES[burst_key] / 8.0) if burst_key == "k0"
                 else [noon + timedelta(seconds=40 * i) for i in range(30)])
        ids |= {s.api(t, burst_key, "inference:chat") for t in times}
    return s.run(minimal=minimal), ids


def test_a_release_day_surge_of_a_tenant_one_key_dominates_is_not_a_burst():
    alerts, ids = surge_pattern()
    assert not _hits(alerts, "api.rate_burst", ids)
    assert not _hits(alerts, "api.model_extraction", ids)


def test_the_dominant_key_alone_at_ten_times_its_rate_is_still_a_burst():
    alerts, ids = surge_pattern(burst_key="k0")
    hits = _hits(alerts, "api.rate_burst", ids)
    assert hits and hits[0].entity == "k0"


def test_a_quiet_keys_burst_in_the_same_tenant_is_still_a_burst():
    alerts, ids = surge_pattern(burst_key="k2")
    hits = _hits(alerts, "api.rate_burst", ids)
    assert hits and hits[0].entity == "k2"


def _surge_seen(lift: float) -> np.ndarray:
    """``key_rate_model`` over one tenant of five keys (three days of flat traffic, then every key at ``lift``
    times its rate for two hours); returns the surge each request of the second hour of the lift was judged with."""
    cfg = ApiConfig()
    rng = np.random.default_rng(5)
    day0 = 20_000 * DAY
    ts, key = [], []
    for k in range(5):
        base = np.sort(day0 + rng.uniform(0, 3 * DAY, 3 * 24 * 6))  # about six requests an hour, all day
        lifted = np.sort(day0 + 3 * DAY + rng.uniform(0, 2 * HOUR, int(2 * 6 * lift)))
        ts += [base, lifted]
        key += [np.full(base.size, k), np.full(lifted.size, k)]
    t, kk = np.concatenate(ts), np.concatenate(key)
    order = np.argsort(t, kind="stable")
    t, kk = t[order].astype(np.int64), kk[order].astype(np.int64)
    n = t.size
    col = [np.zeros(5) for _ in range(14)]  # r1 .. tok_run
    out = key_rate_model(
        kk, np.zeros(n, dtype=np.int64), t, np.ones(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_),
        np.zeros(n, dtype=np.bool_), np.zeros(n), *col, np.zeros((1, TN_COLS)), np.zeros((1, 24)),
        np.array(RATE_WINDOWS_S) * 1000, cfg.rate_tau_slow_s * 1000, cfg.rate_prior_events, cfg.rate_nb_size,
        cfg.rhythm_tau_days * DAY, cfg.unknown_dormant_days * DAY, HOUR, cfg.rate_floor_per_hour / HOUR,
        cfg.rate_surprise, cfg.token_alpha, cfg.token_min_sd, 1, cfg.token_gate, cfg.token_run_z,
        cfg.stuffing_floor_share, cfg.stuffing_surprise, np.zeros((5, 24)), cfg.rhythm_prior_events,
        cfg.rate_level_floor, np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5), np.zeros(5),
        cfg.rate_min_requests, 0.0)
    return out[t >= day0 + 3 * DAY + HOUR, KR_SURGE]


def test_the_tenant_surge_is_seen_as_it_is_not_absorbed_by_its_own_requests():
    seen = _surge_seen(4.0)
    assert np.median(seen) > 2.5, "a surge of 4x is seen as most of that within its clock hour"
    quiet = _surge_seen(1.0)
    assert np.median(quiet) < 1.3, "an ordinary hour is no surge"

