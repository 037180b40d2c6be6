"""data.segmentation judged on the principal's own crossing rate, shrunk to its department's: a pattern and its
benign twin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.unit.test_detectors import T0, Stream, _hits, _reads


def _batch_account_department(fay_crosses: bool) -> tuple[list, set[str]]:
    """security's crossings to legal's sensitive data are a batch account's (svc-backup reads legal's holds all
    day); fay (security) has read her department's logs for three days and now reads legal's restricted
    litigation files for the first time. ``fay_crosses``: she has read legal's holds daily herself."""
    rng = np.random.default_rng(51)
    s = Stream()
    _reads(s, rng, "svc-backup", "legal/holds", days=3, per_day=60, dept="security", owner="legal",
           sensitivity="restricted")
    _reads(s, rng, "fay", "security/logs", days=3, per_day=60, dept="security", owner="security")
    if fay_crosses:
        _reads(s, rng, "fay", "legal/holds", days=3, per_day=10, dept="security", owner="legal",
               sensitivity="restricted")
    for k, dept in enumerate(("sales", "support", "engineering")):
        _reads(s, rng, f"{dept}{k}", f"{dept}/main", days=3, per_day=30, dept=dept, owner=dept)
    _reads(s, rng, "lee", "legal/litigation", days=3, per_day=6, dept="legal", owner="legal",
           sensitivity="restricted")
    ids = {s.data(T0 + timedelta(days=3, hours=11, minutes=2 * i), "fay", "legal/litigation", 80, dept="security",
                  owner="legal", sensitivity="restricted") for i in range(3)}
    return s.run(), ids


@pytest.mark.parametrize("fay_crosses", [False, True])
def test_a_department_s_batch_crossings_do_not_cover_a_person_who_never_crossed(fay_crosses: bool):
    """The department's crossing rate is its batch account's, not fay's: her own rate (none in 180 accesses,
    shrunk to the department's) makes her first read of legal's restricted data news. The benign twin: she reads
    legal's data every day herself, so another of its datasets is not."""
    alerts, ids = _batch_account_department(fay_crosses)
    hits = _hits(alerts, "data.segmentation", ids)
    assert bool(hits) != fay_crosses
    assert all(h.entity == "fay" for h in hits)
