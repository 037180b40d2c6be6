"""The data family, third round: off-hours access judged on minutes and against the people at work, a network new to
the tenant as evidence, and the drift sum's calibrated tail. Each pattern beside its benign twin."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from detectors.calibration import score_of
from detectors.columns import SEP, Vocab
from detectors.families.data import cusum_surprise, networks
from tests.unit.test_detectors import T0, Stream, _hits, _work


def _office(s: Stream, rng: np.random.Generator, days: int, *, nat: bool = False) -> None:
    """Ten people reading confidential data eight times a day in working hours (each from its own address, or from
    a new address of the tenant's NAT pool on every access)."""
    n = 0
    for day in range(days):
        for p in range(10):
            for _ in range(8):
                n += 1
                s.data(_work(rng, day), f"p{p}", "finance/ledger", 50,
                       ip=f"100.64.{n // 250}.{n % 250}" if nat else f"10.0.0.{p}")


@pytest.mark.parametrize("foreign", [True, False])
def test_a_first_night_read_from_a_network_the_tenant_never_used_is_caught(foreign: bool):
    """One confidential read at 03:00 by a day worker of a NAT-pool tenant: from a network no one in the tenant ever
    used it is raised on that first read; from a new address of the tenant's own pool (the benign twin) it is not."""
    rng = np.random.default_rng(41)
    s = Stream()
    _office(s, rng, 3, nat=True)
    ip = "203.0.113.9" if foreign else "100.64.240.9"
    ids = {s.data(T0 + timedelta(days=3, hours=3), "p0", "finance/ledger", 60, ip=ip)}
    hits = _hits(s.run(), "data.off_hours", ids)
    if foreign:
        assert hits and hits[0].entity == "p0" and "network their tenant never used" in hits[0].explanation
    else:
        assert not hits


def _second_read(history_nights: bool) -> tuple[list, set[str]]:
    """A person reads confidential data three times, 40 s apart, at 02:00 UTC of day 4 from their usual address;
    their history has (the benign twin: an on-call engineer) or has not a few nights of reads at that hour."""
    rng = np.random.default_rng(42)
    s = Stream()
    _office(s, rng, 4)
    if history_nights:
        for day in (0, 2):
            for m in range(0, 60, 10):
                s.data(T0 + timedelta(days=day, hours=2, minutes=m), "p0", "finance/ledger", 50, ip="10.0.0.0")
    t = T0 + timedelta(days=4, hours=2)
    ids = {s.data(t + timedelta(seconds=40 * i), "p0", "finance/ledger", 60, ip="10.0.0.0") for i in range(3)}
    return s.run(), ids


def test_night_reads_within_a_minute_or_two_are_caught_on_the_minutes():
    """Judged on the minutes (`off_hours_short_min`), not only the half hour: alerted within 80 s of the first."""
    alerts, ids = _second_read(False)
    hits = _hits(alerts, "data.off_hours", ids)
    assert hits and hits[0].entity == "p0" and "within about 5 min" in hits[0].explanation


def test_two_night_reads_of_someone_who_works_nights_are_not_off_hours():
    alerts, ids = _second_read(True)
    assert not _hits(alerts, "data.off_hours", ids)


def _batch_tenant(reader: str) -> tuple[list, set[str]]:
    """A tenant whose batch account reads a hundred and twenty times every night at 01:00-03:00 UTC (more than its
    ten people read all day); ``reader`` (a person with a day's few reads, or the batch account) reads confidential
    data three times, 40 s apart, at 02:30 UTC of day 3."""
    rng = np.random.default_rng(43)
    s = Stream()
    _office(s, rng, 3)
    for day in range(4):
        for m in range(0, 120, 1):
            s.data(T0 + timedelta(days=day, hours=1, minutes=m), "svc0", "finance/ledger", 5000, ip="10.9.9.0")
    for _ in range(4):
        s.data(_work(rng, 2), "newbie", "finance/ledger", 50, ip="10.0.1.1")
    t = T0 + timedelta(days=3, hours=2, minutes=30, seconds=17)
    ip, rows = ("10.0.1.1", 60) if reader == "newbie" else ("10.9.9.0", 5000)
    ids = {s.data(t + timedelta(seconds=40 * i), reader, "finance/ledger", rows, ip=ip) for i in range(3)}
    return s.run(), ids


def test_batch_accounts_reading_all_night_do_not_make_the_night_usual_for_a_young_person():
    """The tenant's rhythm, a young person's prior, counts principals at work, not accesses: three accounts'
    thousands of night reads do not hide a person's first night."""
    alerts, ids = _batch_tenant("newbie")
    hits = _hits(alerts, "data.off_hours", ids)
    assert hits and hits[0].entity == "newbie"


def test_a_batch_accounts_own_night_is_not_off_hours():
    alerts, ids = _batch_tenant("svc0")
    assert not _hits(alerts, "data.off_hours", ids)


def test_networks_are_ipv4_16s_and_ipv6_48s():
    v = Vocab([f"acme{SEP}10.1.2.3", f"acme{SEP}10.1.9.9", f"acme{SEP}10.2.0.1", f"acme{SEP}2001:db8:1:2::1",
               f"acme{SEP}2001:db8:1:ffff::2", f"acme{SEP}not-an-ip"])
    net = networks(v, np.array([0, 1, 2, 3, 4, 5, -1]))
    assert net[0] == net[1] != net[2]
    assert net[3] == net[4] and net[3] > 65_535
    assert net[5] == -1 and net[6] == -1


def test_network_keys_stay_bounded_whatever_addresses_an_attacker_writes():
    """The tenant's network novelty set is never evicted: IPv6 /48s fold into 2**16 keys (a compressed and an
    expanded spelling of one /48 alike, an IPv4-mapped address as its IPv4 /16), so random addresses cannot grow it
    past 2**17 keys a tenant."""
    rng = np.random.default_rng(5)
    names = [f"acme{SEP}{':'.join(f'{x:x}' for x in rng.integers(0, 65_536, 8))}" for _ in range(5_000)]
    names += [f"acme{SEP}2001:db8::1", f"acme{SEP}2001:0db8:0000:0001::5", f"acme{SEP}::ffff:10.1.2.3",
              f"acme{SEP}10.1.7.7"]
    net = networks(Vocab(names), np.arange(len(names)))
    assert net[:5_000].min() >= 1 << 16 and net[:5_000].max() < 1 << 17
    assert net[-4] == net[-3] and net[-2] == net[-1] < 1 << 16


def test_the_drift_sums_surprise_grows_with_the_sum():
    """A calibrated tail (the CUSUM's stationary exp(-2ks)), not a floor: the budget can rank drifts by it."""
    assert cusum_surprise(12.0, 0.75) == pytest.approx(2 * cusum_surprise(6.0, 0.75))
    assert cusum_surprise(6.0, 0.75) == pytest.approx(-np.log10(np.exp(-9.0)))


def _drip(days: int) -> list:
    """A principal's ordinary reads (about 100 rows) for five days, then three reads a day growing 1.8x a day for
    ``days`` days."""
    rng = np.random.default_rng(44)
    s = Stream()
    for day in range(5):
        for _ in range(6):
            s.data(_work(rng, day), "ana", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    for d in range(days):
        for _ in range(3):
            s.data(_work(rng, 5 + d), "ana", "finance/ledger", int(100 * 1.8 ** d * rng.uniform(0.8, 1.2)) + 1)
    return s.run()


def test_a_drift_alert_is_as_unusual_as_its_sum():
    """The drift alert's score is its sum's calibrated tail (with the dataset's sensitivity), at least the opening
    hit's and growing with the sum as the drip goes on, where a floor of 1 in 1,000 scored every drift alike."""
    hits = _hits(_drip(4), "data.volume_drift")
    assert hits
    f = {x.name: x.value for x in hits[0].evidence.features}
    assert f["cusum"] >= 6.0
    assert hits[0].score >= score_of(cusum_surprise(f["cusum"], 0.75), 2) - 0.002
    assert hits[0].score > score_of(3.0, 2) + 0.1


def _episode(raise_floor: float) -> np.ndarray:
    """Two judged night accesses of one entity a minute apart, held back (floor 0), then one an hour later; the
    entity's hour histogram after."""
    from detectors.kernels import hour_rhythm_sensitive

    n = 3
    ts = np.array([0, 60_000, 3_600_000 + 120_000], dtype=np.int64) + 10 * 86_400_000
    hist = np.zeros((1, 24))
    hist[0, 12] = 50.0
    group = np.ones((1, 24))
    zeros = np.zeros(1)
    pending, pend_max = np.zeros((1, 24)), np.zeros(1)
    hour = (ts // 3_600_000) % 24
    hour_rhythm_sensitive(np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), hour, ts, zeros.copy(), hist,
                          group, zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy(), np.zeros(n), zeros.copy(),
                          zeros.copy(), 1_800_000.0, 300_000.0, 24.0, 5.0, np.zeros(n), np.array([True, True, False]),
                          0.0, np.zeros(n, dtype=np.int64), pending, pend_max, np.zeros(1), raise_floor, np.ones(n),
                          np.ones(n))
    return hist[0]


def test_a_held_back_night_is_learned_once_it_ends_unraised():
    """The night's reads are held back while it builds up, and learned when it is over without being raised (a
    batch account's nights become its rhythm)."""
    assert _episode(raise_floor=1e9)[0] == 2.0


def test_a_raised_night_is_never_learned():
    assert _episode(raise_floor=0.0)[0] == 0.0


def _batch_turns_to(dataset: str) -> tuple[list, set[str]]:
    """A service account reads ``warehouse/facts`` in a nightly batch (40 reads of ~20,000 rows) and ``finance/ledger``
    lightly by day (~100 rows); from the fourth day an evening job (22:00, another block of the day than the
    batch) also reads ``dataset`` at the batch's volume."""
    rng = np.random.default_rng(31)
    s = Stream()
    for day in range(6):
        for _ in range(10):
            s.data(T0 + timedelta(days=day, hours=9 + int(rng.integers(8)), minutes=int(rng.integers(60))), "svc",
                   "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
        for m in range(40):
            s.data(T0 + timedelta(days=day, hours=2, seconds=90 * m), "svc", "warehouse/facts",
                   int(20_000 * rng.lognormal(0.0, 0.4)))
    ids = {s.data(T0 + timedelta(days=day, hours=22, minutes=m), "svc", dataset, int(20_000 * rng.lognormal(0.0, 0.4)))
           for day in range(3, 6) for m in range(0, 30, 6)}
    return s.run(), ids


def test_a_batch_accounts_nightly_volume_on_a_dataset_it_reads_lightly_by_day_is_not_drift():
    """The benign twin of a drip: far above the pair's own reads, but within the account's daily peaks (its
    nightly batch's volume), night after night: its high mode, not a pair growing."""
    alerts, ids = _batch_turns_to("finance/ledger")
    assert not _hits(alerts, "data.volume_drift", ids)
