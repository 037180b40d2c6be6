"""data.denied_burst counts only denials of data the principal was never granted: a pattern and its benign twin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.unit.test_detectors import T0, Stream, _hits, _reads


def _refused(own_data: bool) -> tuple[list, set[str]]:
    """eve has read finance/ledger and finance/invoices for five days; on day 5 she is denied three times within a
    minute: on her own datasets (an expired session) or on hr's restricted files she never had."""
    rng = np.random.default_rng(73)
    s = Stream()
    _reads(s, rng, "eve", "finance/ledger")
    _reads(s, rng, "eve", "finance/invoices")
    _reads(s, rng, "bob", "finance/ledger")
    t = T0 + timedelta(days=5, hours=10)
    targets = ("finance/ledger", "finance/invoices", "finance/ledger") if own_data else ("hr/a", "hr/b", "hr/c")
    ids = {s.data(t + timedelta(seconds=20 * i), "eve", ds, 0, owner="finance" if own_data else "hr",
                  sensitivity="restricted", granted=False) for i, ds in enumerate(targets)}
    return s.run(), ids


@pytest.mark.parametrize("own_data", [False, True])
def test_denials_of_data_one_was_granted_before_are_not_probing(own_data: bool):
    """Three denials within a minute of hr files eve never had are probing; the same three denials of the datasets
    she reads every day (a session expired, a permission changed) are not."""
    alerts, ids = _refused(own_data)
    hits = _hits(alerts, "data.denied_burst", ids)
    assert bool(hits) != own_data
    assert all(h.entity == "eve" and "never granted" in h.explanation for h in hits)
