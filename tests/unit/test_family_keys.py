"""api.unknown_key judged by what is usual for the tenant: the hours its keys appear at, a new key's rate.

Patterns: a key never seen appearing at the tenant's night and calling seconds apart; a second such key after
the first alerted (an alerting appearance is not learned). Benign twins: a tenant whose new keys appear at night
every night; a new key at night used now and then.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from tests.unit.test_detectors import T0, Stream, _hits
from tests.unit.test_family_api import _history


# -- api.unknown_key: appearances judged by the hours the tenant's keys appear at ----------------------------
def _night_key(s: Stream, day: int, key: str, calls: int, gap_s: float, hour: float = 3.0) -> set[str]:
    t = T0 + timedelta(days=day, hours=hour)
    return {s.api(t + timedelta(seconds=gap_s * i), key, "inference:chat", ip="203.0.113.8",
                  user_agent="python-httpx/0.27.0") for i in range(calls)}


def night_keys(nightly: bool) -> tuple[list, set[str]]:
    """Four days of working-day traffic; ``nightly``: on each of the nights before, a new key also appears at
    03:00 and makes two calls 15 minutes apart (a nightly job given a fresh key every night). On the fifth night a
    new key appears at 03:00 and calls every 20 s."""
    rng = np.random.default_rng(4)
    s = Stream()
    _history(s, rng, per_day=30)
    if nightly:
        for day in range(1, 4):
            _night_key(s, day, f"rotated-{day}", 2, 900.0, hour=3.0)
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

