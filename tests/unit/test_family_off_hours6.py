"""data.off_hours, sixth round: a night session is counted in sensitive accesses against the principal's own share of
them, and off hours are quiet hours of the tenant too. Each pattern beside its benign twin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from tests.unit.test_detectors import T0, Stream, _hits, _work


def _office(s: Stream, rng: np.random.Generator, days: int, *, night_shift: bool = False) -> None:
    """Ten colleagues of p0 reading confidential data eight times a day in working hours, or half of them
    on the night shift (22:00-06:00)."""
    for day in range(days):
        for p in range(1, 11):
            for _ in range(8):
                t = (T0 + timedelta(days=day, hours=float(rng.uniform(22, 30))) if night_shift and p > 5
                     else _work(rng, day))
                s.data(t, f"p{p}", "finance/ledger", 50, ip=f"10.0.0.{p}")


def _night(night: list[str], *, mostly_internal: bool = True, night_shift: bool = False,
           per_day: int = 8, gap_s: int = 90) -> tuple[list, set]:
    """p0 works office hours for four days, ``per_day`` reads a day (all but one in eight of internal data, or all
    confidential); at 02:00 of day 4 it makes the reads ``night`` names (their sensitivity), ``gap_s`` apart."""
    rng = np.random.default_rng(61)
    s = Stream()
    _office(s, rng, 4, night_shift=night_shift)
    for day in range(4):
        for j in range(per_day):
            sens = "internal" if mostly_internal and j % 8 else "confidential"
            s.data(_work(rng, day), "p0", "finance/ledger" if sens == "confidential" else "finance/budgets", 50,
                   ip="10.0.0.0", sensitivity=sens)
    t = T0 + timedelta(days=4, hours=2)
    ids = {s.data(t + timedelta(seconds=gap_s * i), "p0",
                  "finance/ledger" if sens == "confidential" else "finance/budgets", 60, ip="10.0.0.0",
                  sensitivity=sens)
           for i, sens in enumerate(night)}
    return s.run(), ids


def test_a_night_session_of_confidential_reads_by_someone_who_mostly_reads_internal_data_is_caught():
    """Three confidential reads 90 s apart at 02:00 by a day worker whose reads are mostly of internal data."""
    alerts, ids = _night(["confidential"] * 3)
    hits = _hits(alerts, "data.off_hours", ids)
    assert hits and hits[0].entity == "p0"


def test_internal_reads_of_the_same_night_do_not_count_toward_the_session():
    """The benign twin: the same night's first two reads are of internal data; the confidential read after them is
    judged as the session's first sensitive access, and one read at night is not raised."""
    alerts, ids = _night(["internal", "internal", "confidential"])
    assert not _hits(alerts, "data.off_hours", ids)


def test_the_session_is_as_unusual_as_sensitive_reads_are_for_the_principal():
    """The same three confidential reads are more surprising from someone who rarely reads confidential data than
    from someone who reads nothing else (both at an hour they never work)."""
    score = {}
    for mostly_internal in (True, False):
        alerts, ids = _night(["confidential"] * 3, mostly_internal=mostly_internal)
        score[mostly_internal] = max((h.score for h in _hits(alerts, "data.off_hours", ids)), default=0.0)
    assert score[True] > score[False]


def test_a_quiet_hour_of_the_principal_is_not_off_hours_while_its_tenant_works_a_night_shift():
    """Four confidential reads 20 s apart at 02:00 by a heavy day reader are raised where its colleagues work office
    hours; the benign twin: where half of them work the night shift, 02:00 is not a quiet hour of the tenant, and
    the same reads are a change of shift, not off-hours access."""
    for shift in (False, True):
        alerts, ids = _night(["confidential"] * 4, mostly_internal=False, night_shift=shift, per_day=40,
                             gap_s=20)
        assert bool(_hits(alerts, "data.off_hours", ids)) is not shift
