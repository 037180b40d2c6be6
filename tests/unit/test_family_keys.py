"""api.unknown_key and api.denial_of_wallet judged by what is usual for the tenant and the key.

Patterns: a key never seen appearing at the tenant's night and calling seconds apart; a second such key after
the first alerted (an alerting appearance is not learned); a request a hundred times a long-lived key's usual.
Benign twins: a tenant whose new keys appear at night every night; a new key at night used now and then; a
young key's large request in a tenant whose keys have made only a handful of requests (a spread resting on a
handful of requests has a heavy tail).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from detectors.kernels import normal_surprise_nb, student_t_surprise_nb
from tests.unit.test_detectors import T0, Stream, _hits, _work
from tests.unit.test_family_api import _history, _tokens


# -- api.unknown_key: appearances judged by the hours the tenant's keys appear at ----------------------------
def _night_key(s: Stream, day: int, key: str, calls: int, gap_s: float, hour: float = 3.0) -> set[str]:
    t = T0 + timedelta(days=day, hours=hour)
    return {s.api(t + timedelta(seconds=gap_s * i), key, "inference:chat", ip="203.0.113.8",
                  user_agent="python-httpx/0.27.0") for i in range(calls)}


def night_keys(nightly: bool) -> tuple[list, set[str]]:
    """Four days of working-day traffic; ``nightly``: on each night a new key also appears at 03:00 (a batch job
    whose key is rotated every night). On the fifth night a new key appears at 03:00 and calls every 20 s."""
    rng = np.random.default_rng(4)
    s = Stream()
    _history(s, rng, per_day=30)
    if nightly:
        for day in range(1, 5):
            _night_key(s, day - 1, f"rotated-{day}", 12, 20.0, hour=27.0)
    ids = _night_key(s, 4, "k-new", 30, 20.0)
    return s.run(), ids


def test_a_key_never_seen_calling_seconds_apart_at_night_is_caught_within_a_minute():
    alerts, ids = night_keys(nightly=False)
    hits = _hits(alerts, "api.unknown_key", ids)
    assert hits and hits[0].entity == "k-new"
    assert hits[0].first_seen <= (T0 + timedelta(days=4, hours=3, seconds=60)).isoformat()[:19]
    assert "hours its keys appear at" in hits[0].explanation


def test_a_tenant_whose_new_keys_appear_every_night_is_not_surprised_by_one_more():
    alerts, ids = night_keys(nightly=True)
    assert not _hits(alerts, "api.unknown_key", ids)


def test_a_new_key_used_now_and_then_at_night_is_not_unknown():
    rng = np.random.default_rng(4)
    s = Stream()
    _history(s, rng, per_day=30)
    ids = _night_key(s, 4, "k-new", 4, 900.0)  # 4 calls 15 minutes apart
    assert not _hits(s.run(), "api.unknown_key", ids)


def test_an_alerting_appearance_does_not_teach_the_tenant_that_keys_appear_at_night():
    rng = np.random.default_rng(4)
    s = Stream()
    _history(s, rng, per_day=30)
    first = _night_key(s, 4, "k-bad-1", 30, 20.0)
    second = _night_key(s, 4, "k-bad-2", 30, 20.0, hour=4.0)
    alerts = s.run()
    assert _hits(alerts, "api.unknown_key", first) and _hits(alerts, "api.unknown_key", second)


# -- api.denial_of_wallet: a Student-t tail from the requests the spread rests on -----------------------------
@pytest.mark.parametrize("nu", [1.0, 3.0, 20.0, 70.0, 500.0])
def test_the_student_t_tail_is_scipys(nu):
    stats = pytest.importorskip("scipy.stats")
    for t in (0.3, 1.0, 2.5, 4.0, 6.0, 12.0, 40.0):
        assert student_t_surprise_nb(t, nu) == pytest.approx(-np.log10(stats.t.sf(t, nu)), rel=1e-6, abs=1e-9)


def test_the_student_t_tail_is_heavier_than_the_normals_and_tends_to_it():
    assert student_t_surprise_nb(5.0, 20.0) < normal_surprise_nb(5.0) - 1.0
    assert student_t_surprise_nb(5.0, 1e6) == pytest.approx(normal_surprise_nb(5.0), abs=0.01)
    assert student_t_surprise_nb(-1.0, 5.0) == 0.0


def test_a_request_a_hundred_times_a_keys_usual_alerts_on_that_request():
    rng = np.random.default_rng(3)
    s = Stream()
    _history(s, rng, per_day=12)
    big = s.api(_work(rng, 4), "k2", "inference:chat")
    _tokens(s, 30.0 * 100)
    hits = _hits(s.run(), "api.denial_of_wallet", {big})
    assert hits and hits[0].entity == "k2" and hits[0].evidence.event_ids[0] == big


def test_a_young_keys_large_request_among_peers_of_a_handful_of_requests_is_not_denial_of_wallet():
    rng = np.random.default_rng(3)
    s = Stream()
    t = T0 + timedelta(hours=10)
    for i in range(3):  # the tenant's first keys: three requests each
        for j in range(3):
            s.api(t + timedelta(minutes=10 * i + j), f"k{i}", "inference:chat")
            _tokens(s, 30.0 * float(rng.lognormal(0.0, 0.3)))
    big = s.api(t + timedelta(hours=1), "k9", "inference:chat")
    _tokens(s, 30.0 * 15)
    assert not _hits(s.run(), "api.denial_of_wallet", {big})
