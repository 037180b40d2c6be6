"""data.off_hours judges a young principal's accesses per day over the hours it has existed: a pattern and its
benign twin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.unit.test_detectors import T0, Stream, _hits, _work


def _evening(who: str) -> tuple[list, set[str]]:
    """Ten people of security read threat intelligence (confidential) and repo metadata (internal) in working hours
    for four days; on day 3 from 19:00 UTC ``who`` works for two hours, a read every four minutes: "joe", seen for
    the first time that evening (a new joiner's first shift, an on-call engineer's first night), half of his reads
    confidential; or "p0", one of the ten, who never worked evenings, reading confidential data only."""
    rng = np.random.default_rng(77)
    s = Stream()
    for day in range(4):
        for k in range(10):
            for _ in range(8):
                ds, sens = ("security/threat-intel", "confidential") if rng.random() < 0.5 else \
                    ("engineering/repo", "internal")
                s.data(_work(rng, day), f"p{k}", ds, int(100 * rng.lognormal(0.0, 0.5)) + 1, dept="security",
                       owner=ds.split("/")[0], sensitivity=sens, ip=f"10.0.0.{10 + k}")
    start = T0 + timedelta(days=3, hours=19)
    ids = set()
    for i in range(30):
        ds, sens = ("security/threat-intel", "confidential") if i % 2 or who == "p0" else ("engineering/repo",
                                                                                          "internal")
        t = start + timedelta(minutes=4 * i + float(rng.uniform(0, 1)))
        ids.add(s.data(t, who, ds, int(100 * rng.lognormal(0.0, 0.5)) + 1, dept="security", owner=ds.split("/")[0],
                       sensitivity=sens, ip="10.0.0.10" if who == "p0" else "10.0.0.7"))
    return s.run(), ids


@pytest.mark.parametrize("who", ["joe", "p0"])
def test_a_principal_seen_for_an_hour_works_at_its_own_pace(who: str):
    """joe's reads are an evening's work at his own pace, fifteen an hour: judged over the hours he has existed, not
    as if his first reads were a whole day's, they are not off-hours access. The pattern: p0, who has worked days for
    four days, reading confidential data at that pace in the evening is."""
    alerts, ids = _evening(who)
    hits = _hits(alerts, "data.off_hours", ids)
    assert bool(hits) == (who == "p0")
    assert all(h.entity == who for h in hits)
