"""api.rate_burst after a tenant's weekend: a quiet Saturday and Sunday do not make Monday's ordinary traffic a
burst (the tenant's lull, ``rate_tau_week_s``), and a real burst on Monday still is one."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from tests.unit.test_detectors import T0, Stream, _hits

OFFICE = tuple(f"o{i}" for i in range(6))
SESSIONS, STEPS, GAP_S = 40, 3, (30, 120)


def week(burst: bool) -> tuple[list, set[str], set[str]]:
    """Six office keys, each working day (09:00-17:00 UTC) 40 sessions of 3 requests a minute or so apart, and a
    tenth of that on Saturday and Sunday, for a week; then Monday's working day as usual. ``burst``: key o0 also
    makes 60 requests within ten minutes at 10:00 on Monday (about 30 times its weekday rate). Returns the alerts,
    Monday's request ids and the burst's."""
    rng = np.random.default_rng(7)
    s = Stream()
    monday, burst_ids = set(), set()
    for day in range(8):  # T0 is a Monday: days 5 and 6 are the weekend, day 7 the next Monday
        sessions = SESSIONS // 10 if day in (5, 6) else SESSIONS
        for k in OFFICE:
            for t0 in rng.uniform(9, 17, sessions):
                t = T0 + timedelta(days=day, hours=float(t0))
                for _ in range(STEPS):
                    t += timedelta(seconds=float(rng.uniform(*GAP_S)))
                    eid = s.api(t, k, "inference:chat")
                    if day == 7:
                        monday.add(eid)
    if burst:
        start = T0 + timedelta(days=7, hours=10)
        burst_ids = {s.api(start + timedelta(seconds=10 * i), "o0", "inference:chat") for i in range(60)}
    return s.run(), monday, burst_ids


def test_mondays_ordinary_traffic_after_a_quiet_weekend_is_not_a_burst():
    alerts, monday, _ = week(burst=False)
    assert not [a for a in _hits(alerts, "api.rate_burst", monday) if a.severity != "info"]


def test_a_burst_on_monday_after_a_quiet_weekend_is_still_one():
    alerts, _, burst = week(burst=True)
    hits = [a for a in _hits(alerts, "api.rate_burst", burst) if a.severity != "info"]
    assert hits and hits[0].entity == "o0"
