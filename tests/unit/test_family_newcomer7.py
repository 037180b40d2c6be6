"""data.volume_spike on a principal's first reads, judged also against what its department's principals read when
they start (the newcomer baseline): a pattern and its benign twin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from tests.unit.test_detectors import T0, Stream, _hits, _reads, _work


def _busy_reader_department(first_rows: int) -> tuple[list, set[str]]:
    """finance's reads are mostly yara's (60 reads a day of about 20 rows), so its per-access baseline is hers; five
    colleagues read a few times a day at their own levels (40 to 600 rows). On day 3 a colleague who had not read
    yet ("new", a light user) reads ``first_rows`` rows twice."""
    rng = np.random.default_rng(71)
    s = Stream()
    for day in range(4):
        for _ in range(60):
            s.data(_work(rng, day), "yara", "finance/ledger", int(20 * rng.lognormal(0.0, 0.5)) + 1)
    for k, level in enumerate((40, 90, 150, 300, 600)):
        for day in range(1, 4):
            for _ in range(2):
                s.data(_work(rng, day), f"m{k}", "finance/ledger", int(level * rng.lognormal(0.0, 0.5)) + 1)
    start = T0 + timedelta(days=3, hours=15)
    ids = {s.data(start + timedelta(minutes=20 * i), "new", "finance/ledger", first_rows) for i in range(2)}
    _reads(s, rng, "other", "sales/pipeline", days=4, dept="sales", owner="sales")
    return s.run(), ids


@pytest.mark.parametrize("first_rows", [900, 200_000])
def test_a_newcomer_reading_like_its_departments_heavier_readers_is_not_a_spike(first_rows: int):
    """900 rows is 45x what finance reads per access (yara's habit) but within what its principals read when they
    start (40 to 600 rows each): not a spike. The pattern: 200,000 rows on a first read is far above both."""
    alerts, ids = _busy_reader_department(first_rows)
    hits = _hits(alerts, "data.volume_spike", ids)
    assert bool(hits) == (first_rows > 10_000)
    assert all(h.entity == "new" for h in hits)
    if hits:
        assert "what its principals read when they start" in hits[0].explanation
