"""API rate detectors: alarming requests are explained, guesses are what a spread is raised on, extraction decides
on fewer requests when its outputs are evidence of their own, and failed guesses are not a key's clients.

Patterns and benign twins:
- api.rate_burst: a quiet key's burst is caught, and so is a second burst two hours later; the key's ordinary
  requests an hour after the first burst (its requests still decaying in the hour window) are not a new burst.
- api.auth_failure_spread: guesses at key ids at five a minute are caught within about a minute; the tenant's own
  key failing as often (an expired key retried) is not a spread.
- api.model_extraction: a quiet key's requests 15 s apart with outputs ten times its usual are caught by the fifth
  request; the same requests with its usual outputs are not extraction.
- api.new_client: a key whose id was guessed (failed requests from another client) before its owner's first use
  is not used from a new client when its owner starts.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from tests.unit.test_detectors import T0, Stream, _hits
from tests.unit.test_family_api import _history, _tokens


def _ordinary(s: Stream, rng: np.random.Generator, key: str, day: int, n: int) -> None:
    for _ in range(n):
        s.api(T0 + timedelta(days=day, hours=float(rng.uniform(9, 17))), key, "inference:chat")
        _tokens(s, 30.0 * float(rng.lognormal(0.0, 0.5)))


# -- api.rate_burst: the requests after an alarming burst are judged without it ---------------------------
def after_burst(second: bool = False) -> tuple[list, set[str], set[str], set[str]]:
    """k1 (12 requests a working day) makes 60 requests in 10 minutes at 11:00 of day 4, then a request every 20
    minutes from 12:20 to 13:00 (within the hour window's memory of the burst, after its alert's cooldown);
    ``second``: another 60 in 10 minutes at 14:30."""
    rng = np.random.default_rng(21)
    s = Stream()
    _history(s, rng, per_day=12)
    t = T0 + timedelta(days=4, hours=11)
    burst = {s.api(t + timedelta(seconds=10 * i), "k1", "inference:chat") for i in range(60)}
    later = {s.api(t + timedelta(minutes=80 + 20 * i), "k1", "inference:chat") for i in range(3)}
    again: set[str] = set()
    if second:
        t2 = T0 + timedelta(days=4, hours=14, minutes=30)
        again = {s.api(t2 + timedelta(seconds=10 * i), "k1", "inference:chat") for i in range(60)}
    return s.run(), burst, later, again


def test_ordinary_requests_after_an_alarming_burst_are_not_a_new_burst():
    alerts, burst, later, _ = after_burst()
    assert _hits(alerts, "api.rate_burst", burst)
    assert not _hits(alerts, "api.rate_burst", later), "the burst's own requests are explained, not counted again"


def test_a_second_burst_after_the_first_is_caught_again():
    alerts, _, later, again = after_burst(second=True)
    assert not _hits(alerts, "api.rate_burst", later)
    hits = _hits(alerts, "api.rate_burst", again)
    assert hits and hits[0].entity == "k1"


# -- api.auth_failure_spread: raised on guesses, early -----------------------------------------------------
def spread(own_key: bool = False) -> tuple[list, set[str], timedelta]:
    """50 invalid-credential attempts 12 s apart from 40 IPs at guessed key ids at 14:00 of day 4; ``own_key``:
    k2's own id fails as often, from its own client (an expired key retried)."""
    rng = np.random.default_rng(5)
    s = Stream()
    _history(s, rng, per_day=30)
    t = T0 + timedelta(days=4, hours=14)
    ids = {s.api(t + timedelta(seconds=12 * i), "k2" if own_key else f"guess-{i}", "inference:chat",
                 ip="10.1.0.1" if own_key else f"198.51.100.{i % 40}", auth_result="invalid_credentials")
           for i in range(50)}
    return s.run(), ids, timedelta(hours=14)


def test_guesses_at_five_a_minute_are_a_spread_within_about_a_minute():
    alerts, ids, at = spread()
    hits = _hits(alerts, "api.auth_failure_spread", ids)
    assert hits and hits[0].entity.startswith("198.51.100.")
    assert hits[0].first_seen <= (T0 + timedelta(days=4) + at + timedelta(seconds=75)).isoformat()[:19]


def test_a_tenants_own_key_failing_as_often_is_not_a_spread():
    alerts, ids, _ = spread(own_key=True)
    assert not _hits(alerts, "api.auth_failure_spread", ids)


# -- api.model_extraction: long outputs are evidence from the fourth request on -----------------------------
def extraction(scale: float) -> tuple[list, list[str]]:
    """k2 (12 requests a working day, one model) makes 12 requests 15 s apart at 11:00 of day 4, each with
    ``scale`` times its usual output for its input."""
    rng = np.random.default_rng(8)
    s = Stream()
    for day in range(4):
        for key in ("k0", "k1", "k2", "k3"):
            _ordinary(s, rng, key, day, 12)
    t = T0 + timedelta(days=4, hours=11)
    ids = []
    for i in range(12):
        ids.append(s.api(t + timedelta(seconds=15 * i), "k2", "inference:chat"))
        row = s.rows[-1][1]
        total = 30.0 * float(rng.lognormal(0.0, 0.2))
        row["tokens_in"], row["tokens_out"] = int(total / 3) + 1, int(scale * 2 * total / 3) + 1
    return s.run(), ids


def test_long_outputs_at_a_quiet_keys_raised_rate_are_extraction_by_the_fifth_request():
    alerts, ids = extraction(10.0)
    hits = _hits(alerts, "api.model_extraction", set(ids))
    assert hits and hits[0].entity == "k2"
    assert hits[0].evidence.event_ids[0] in ids[:5]


def test_the_same_requests_with_usual_outputs_are_not_extraction():
    alerts, ids = extraction(1.0)
    assert not _hits(alerts, "api.model_extraction", set(ids))


# -- api.new_client: failed guesses at a key id are not its clients -----------------------------------------
def test_a_keys_first_successful_use_after_guesses_at_its_id_is_not_a_new_client():
    rng = np.random.default_rng(9)
    s = Stream()
    _history(s, rng, per_day=30)
    t = T0 + timedelta(days=4, hours=3)
    for i in range(3):
        s.api(t + timedelta(minutes=5 * i), "k-late", "inference:chat", ip="203.0.113.7",
              user_agent="Go-http-client/1.1", auth_result="invalid_credentials")
    first = {s.api(T0 + timedelta(days=4, hours=10 + i), "k-late", "inference:chat", ip="10.1.0.9",
                   user_agent="openai-python/1.54.0") for i in range(3)}
    assert not _hits(s.run(), "api.new_client", first)


# -- the kernel: only reported requests are explained ---------------------------------------------------------
def _explained(ts: np.ndarray) -> float:
    """``key_rate_model`` over one key from fresh state; returns its explained hour count (``x60``) after ``ts``."""
    from detectors.families.api import RATE_WINDOWS_S, ApiConfig
    from detectors.families.common import DAY, HOUR
    from detectors.kernels import TN_COLS, key_rate_model

    cfg = ApiConfig()
    n = ts.size
    key, ten = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    col = [np.zeros(1) for _ in range(14)]  # r1 .. tok_run
    x = [np.zeros(1) for _ in range(3)]
    key_rate_model(
        key, ten, ts, np.ones(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_), np.zeros(n, dtype=np.bool_),
        np.zeros(n), *col, np.zeros((1, TN_COLS)), np.zeros((1, 24)),
        np.array(RATE_WINDOWS_S) * 1000, cfg.rate_tau_slow_s * 1000, cfg.rate_prior_events, cfg.rate_nb_size,
        cfg.rhythm_tau_days * DAY, cfg.unknown_dormant_days * DAY, HOUR, cfg.rate_floor_per_hour / HOUR,
        cfg.rate_surprise, cfg.token_alpha, cfg.token_min_sd, 1, cfg.token_gate, cfg.token_run_z,
        cfg.stuffing_floor_share, cfg.stuffing_surprise, np.zeros((1, 24)), cfg.rhythm_prior_events,
        cfg.rate_level_floor, np.zeros(1), np.zeros(1), *x, cfg.rate_min_requests, 0.0)
    return float(x[2][0])


def test_only_requests_reported_as_a_burst_are_explained():
    day0 = 20_000 * DAY_MS
    rng = np.random.default_rng(3)
    history = np.sort(day0 + rng.uniform(0, 3 * DAY_MS, size=30))  # three days at about 0.4 requests an hour
    at = day0 + 3 * DAY_MS + 2 * HOUR_MS
    few = at + np.arange(5) * 2_000.0  # five requests in 8 s: improbable, but fewer than a reported burst's
    many = at + np.arange(40) * 5_000.0  # forty: reported, and explained
    assert _explained(np.concatenate([history, few]).astype(np.int64)) == 0.0
    assert _explained(np.concatenate([history, many]).astype(np.int64)) > 10.0


DAY_MS, HOUR_MS = 86_400_000, 3_600_000
