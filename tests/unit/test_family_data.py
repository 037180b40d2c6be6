"""The data family's per-principal models: patterns that must alert and their benign twins that must not."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from tests.unit.test_detectors import T0, Stream, _hits, _reads, _work


def _day_workers(s: Stream, rng: np.random.Generator, days: int) -> None:
    """Ten people reading confidential data eight times a day in working hours, each from their own address."""
    for day in range(days):
        for p in range(10):
            for _ in range(8):
                s.data(_work(rng, day), f"p{p}", "finance/ledger", 50, ip=f"10.0.0.{p}")


def _night_reader(ips: str, night_reads: int) -> tuple[list, set[str]]:
    """A day worker (``ips``: 'fixed' one address, 'nat' a new address of the tenant's pool on every access) reads
    confidential data ``night_reads`` times a minute apart at 03:00 UTC on day 3, from an address new to them (in
    the pool, for 'nat')."""
    rng = np.random.default_rng(21)
    s = Stream()
    n = 0
    for day in range(3):
        for p in range(10):
            for _ in range(8):
                n += 1
                ip = f"100.64.{n // 250}.{n % 250}" if ips == "nat" else f"10.0.0.{p}"
                s.data(_work(rng, day), f"p{p}", "finance/ledger", 50, ip=ip)
    net = "100.64.240" if ips == "nat" else "100.99.0"
    ids = {s.data(T0 + timedelta(days=3, hours=3, minutes=i), "p0", "finance/ledger", 60, ip=f"{net}.{i}")
           for i in range(night_reads)}
    return s.run(), ids


def test_night_reads_from_a_new_ip_of_a_fixed_ip_worker_are_caught():
    alerts, ids = _night_reader("fixed", 2)
    hits = _hits(alerts, "data.off_hours", ids)
    assert hits and hits[0].entity == "p0"
    assert "1 in" in hits[0].explanation and "a new IP" in hits[0].explanation


def test_a_new_ip_is_no_evidence_behind_a_nat_pool():
    """Every access of the tenant comes from a new address of its pool: a first night read from the pool is not
    raised on its new address (a second within minutes is, by the hour alone: test_family_data3)."""
    alerts, ids = _night_reader("nat", 1)
    assert not _hits(alerts, "data.off_hours", ids)


def test_a_run_of_confidential_night_reads_is_caught_from_the_usual_place_too():
    """The pilot's miss: confidential reads at 03:00 from the worker's usual address."""
    rng = np.random.default_rng(22)
    s = Stream()
    _day_workers(s, rng, 3)
    ids = {s.data(T0 + timedelta(days=3, hours=3, minutes=2 * i), "p0", "finance/ledger", 60, ip="10.0.0.0")
           for i in range(6)}
    alerts = s.run()
    hits = _hits(alerts, "data.off_hours", ids)
    assert hits and hits[0].entity == "p0"


def test_night_work_in_the_principals_own_history_is_not_off_hours():
    """A service account (or on-call engineer) whose history has night reads: its night, from a new IP too."""
    rng = np.random.default_rng(23)
    s = Stream()
    _day_workers(s, rng, 4)
    for day in range(4):
        for m in range(0, 120, 5):
            s.data(T0 + timedelta(days=day, hours=1, minutes=m), "svc", "finance/ledger", 5000, ip="10.9.9.9")
    ids = {s.data(T0 + timedelta(days=4, hours=1, minutes=m), "svc", "finance/ledger", 5000, ip="10.9.9.10")
           for m in range(0, 60, 5)}
    alerts = s.run()
    assert not _hits(alerts, "data.off_hours", ids)
    assert not _hits(alerts, "data.volume_spike", ids)


def _batch_account(hour: int, rows: int = 20_000) -> tuple[list, set[str]]:
    """A service account reads ~100 rows by day and ~20,000 in a nightly batch; then ``rows`` rows at ``hour``."""
    rng = np.random.default_rng(24)
    s = Stream()
    _reads(s, rng, "ben", "finance/ledger", days=5)
    for day in range(5):
        for _ in range(10):
            s.data(_work(rng, day), "svc", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
        for m in range(0, 60, 5):
            s.data(T0 + timedelta(days=day, hours=2, minutes=m), "svc", "finance/ledger",
                   int(20_000 * rng.lognormal(0.0, 0.4)))
    ids = {s.data(T0 + timedelta(days=5, hours=hour, minutes=30), "svc", "finance/ledger", rows)}
    return s.run(), ids


def test_a_volume_far_above_the_principals_daily_peaks_is_a_spike():
    """The batch account reading fifty times its nightly batch: far above its daily peaks."""
    alerts, ids = _batch_account(hour=2, rows=1_000_000)
    hits = _hits(alerts, "data.volume_spike", ids)
    assert hits and hits[0].entity == "svc" and "1 in" in hits[0].explanation


def test_the_nightly_batch_volume_is_not_a_spike():
    alerts, ids = _batch_account(hour=2)
    assert not _hits(alerts, "data.volume_spike", ids)
    assert not _hits(alerts, "data.volume_drift")


def test_a_volume_the_principal_reaches_every_day_is_not_a_spike_at_another_hour_either():
    """Its daily peaks clear it: the volume is its habit (the hour is the off-hours detector's business)."""
    alerts, ids = _batch_account(hour=12)
    assert not _hits(alerts, "data.volume_spike", ids)


def test_one_export_does_not_make_the_next_look_usual():
    """A human's bulk export is learned into its daily peaks as at most `volume_peak_z` above them: a second
    export of the same size the next day is still a spike."""
    rng = np.random.default_rng(26)
    s = Stream()
    _reads(s, rng, "ben", "finance/ledger", days=5)
    first = {s.data(T0 + timedelta(days=5, hours=11), "ben", "finance/ledger", 30_000, op="export")}
    second = {s.data(T0 + timedelta(days=6, hours=11), "ben", "finance/ledger", 30_000, op="export")}
    alerts = s.run()
    assert _hits(alerts, "data.volume_spike", first) and _hits(alerts, "data.volume_spike", second)


def _denials(gap_s: float, heavy: bool) -> tuple[list, set[str]]:
    rng = np.random.default_rng(25)
    s = Stream()
    _reads(s, rng, "eve", "finance/ledger", per_day=30 if heavy else 6)
    t = T0 + timedelta(days=5, hours=10)
    ids = {s.data(t + timedelta(seconds=gap_s * i), "eve", f"hr/file{i}", 0, owner="hr", sensitivity="restricted",
                  granted=False) for i in range(3)}
    return s.run(), ids


def test_three_denials_within_a_minute_are_probing_in_time():
    alerts, ids = _denials(20.0, heavy=False)
    hits = _hits(alerts, "data.denied_burst", ids)
    assert hits and hits[0].entity == "eve"
    assert hits[0].first_seen < (T0 + timedelta(days=5, hours=10, seconds=60)).isoformat()


def test_denials_hours_apart_are_not_probing():
    alerts, _ = _denials(3 * 3600.0, heavy=True)
    assert not _hits(alerts, "data.denied_burst")


def _crossing(colleague_crosses: bool) -> tuple[list, set[str]]:
    """bob (marketing) reads hr's restricted payroll for the first time; ``colleague_crosses``: marketing reads
    hr's sensitive data every day (someone else did, often), else once (someone did, rarely)."""
    rng = np.random.default_rng(26)
    s = Stream()
    _reads(s, rng, "bob", "marketing/campaigns", days=3, per_day=8, dept="marketing", owner="marketing")
    _reads(s, rng, "dan", "marketing/campaigns", days=3, per_day=30, dept="marketing", owner="marketing")
    _reads(s, rng, "hana", "hr/payroll", days=3, dept="hr", owner="hr", sensitivity="restricted")
    if colleague_crosses:
        _reads(s, rng, "carol", "hr/payroll", days=3, per_day=30, dept="marketing", owner="hr",
               sensitivity="restricted")
    else:
        s.data(T0 + timedelta(hours=10), "carol", "hr/payroll", 50, dept="marketing", owner="hr",
               sensitivity="restricted")
    ids = {s.data(T0 + timedelta(days=3, hours=11), "bob", "hr/payroll", 80, dept="marketing", owner="hr",
                  sensitivity="restricted")}
    return s.run(), ids


def test_a_rare_crossing_is_segmentation_even_if_someone_crossed_once():
    alerts, ids = _crossing(colleague_crosses=False)
    hits = _hits(alerts, "data.segmentation", ids)
    assert hits and hits[0].entity == "bob"


def test_a_crossing_the_department_makes_daily_is_not_segmentation():
    alerts, ids = _crossing(colleague_crosses=True)
    assert not _hits(alerts, "data.segmentation", ids)


def _newcomer(night: bool) -> tuple[list, set[str]]:
    """A newcomer with six working-hour accesses reads confidential data eight times a few minutes apart from
    their usual address, at 03:00 UTC (``night``) or at 11:00, their working hours."""
    rng = np.random.default_rng(27)
    s = Stream()
    _day_workers(s, rng, 4)
    for _ in range(6):
        s.data(_work(rng, 2), "new", "finance/ledger", 50, ip="10.0.1.1")
    start = T0 + timedelta(days=3, hours=3 if night else 11)
    ids = {s.data(start + timedelta(seconds=150 * i), "new", "finance/ledger", 60, ip="10.0.1.1") for i in range(8)}
    return s.run(), ids


@pytest.mark.parametrize("night", [True, False])
def test_a_newcomers_night_of_confidential_reads_is_caught_before_it_teaches_itself_in(night: bool):
    """At night: the night's first reads are not learned into its rhythm while
    the night builds up (learned, they made 03:00 look like one of its hours). The benign twin: the same reads in
    working hours are not off hours."""
    alerts, ids = _newcomer(night)
    hits = _hits(alerts, "data.off_hours", ids)
    assert bool(hits) == night
    assert all(h.entity == "new" for h in hits)


def _young_exporter(rows: int) -> tuple[list, set[str]]:
    """A principal with three reads of about 100 rows exports ``rows`` rows five times, 90 s apart, in a department
    whose volumes are broad (people read about 100 rows, a service account about 100,000 at night), so the
    department's baseline says little about it."""
    rng = np.random.default_rng(28)
    s = Stream()
    _reads(s, rng, "ann", "finance/ledger", days=3)
    for day in range(3):
        for m in range(0, 60, 10):
            s.data(T0 + timedelta(days=day, hours=2, minutes=m), "svc", "finance/ledger",
                   int(100_000 * rng.lognormal(0.0, 0.4)))
    for _ in range(3):
        s.data(_work(rng, 3), "young", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    start = T0 + timedelta(days=4, hours=10)
    ids = {s.data(start + timedelta(seconds=90 * i), "young", "finance/ledger", rows, op="export") for i in range(5)}
    return s.run(), ids


@pytest.mark.parametrize("rows", [25_000, 300])
def test_a_young_principals_bulk_export_is_judged_against_its_own_few_reads(rows: int):
    """From its third read on, a principal's own baseline judges it: 250x its usual rows is a spike (its
    department's broad baseline alone let it through, and the first export was learned); 3x is not."""
    alerts, ids = _young_exporter(rows)
    hits = _hits(alerts, "data.volume_spike", ids)
    assert bool(hits) == (rows > 1000)
    assert all(h.entity == "young" for h in hits)


def _growing(grow: bool) -> tuple[list, set[str], datetime]:
    """Five days of a principal's ordinary reads (about 100 rows), then three reads a day that grow 1.9x every
    day (or, the benign twin, stay as varied as ever); returns when the drip first reaches 3x."""
    rng = np.random.default_rng(31)
    s = Stream()
    for day in range(5):
        for _ in range(6):
            s.data(_work(rng, day), "ana", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    extra: set[str] = set()
    unusual = None
    for d in range(4):
        for _ in range(3):
            t = _work(rng, 5 + d)
            level = 1.9 ** d if grow else rng.lognormal(0.0, 0.5)
            extra.add(s.data(t, "ana", "finance/ledger", int(100 * level * rng.uniform(0.8, 1.2)) + 1))
            if grow and level >= 3 and (unusual is None or t < unusual):
                unusual = t
    return s.run(), extra, unusual or T0


def test_a_drip_growing_daily_is_caught_within_a_day_of_becoming_unusual():
    """The drift sum's threshold (`drift_h`) lets a drip growing 1.9x a day alert within one day of reaching three
    times the principal's usual volume (the deadline for slow attacks); at the old threshold of 10 it came a day
    later."""
    alerts, extra, unusual = _growing(True)
    hits = _hits(alerts, "data.volume_drift", extra)
    assert hits and hits[0].entity == "ana"
    assert datetime.fromisoformat(hits[0].first_seen.replace("Z", "+00:00")) <= unusual + timedelta(days=1)


def test_as_many_extra_reads_as_varied_as_usual_are_not_drift():
    """The benign twin: the same extra reads at the principal's usual, varied volume."""
    alerts, _, _ = _growing(False)
    assert not _hits(alerts, "data.volume_drift")


def test_first_night_batches_in_the_learning_period_do_not_hold_a_later_export_at_info():
    """Service accounts' first nightly batches fall in the tenant's learning period, before any day of their peaks:
    info, and kept out of the alert budget, so a person's bulk export two days later still pages."""
    rng = np.random.default_rng(32)
    s = Stream()
    for name in ("ana", "ben", "cy"):
        _reads(s, rng, name, "finance/ledger", days=4)
    for k in range(8):
        for day in range(4):
            for m in range(0, 60, 10):  # small reads just before the batch: its block's baseline is small
                s.data(T0 + timedelta(days=day, hours=1, minutes=m + k), f"svc{k}", "finance/ledger",
                       int(100 * rng.lognormal(0.0, 0.5)) + 1)
            for m in range(0, 60, 10):
                s.data(T0 + timedelta(days=day, hours=2, minutes=m + k), f"svc{k}", "finance/ledger",
                       int(30_000 * rng.lognormal(0.0, 0.4)))
    ids = {s.data(T0 + timedelta(days=3, hours=11), "ana", "finance/ledger", 40_000, op="export")}
    alerts = s.run()
    assert not [a for a in _hits(alerts, "data.volume_spike") if a.entity.startswith("svc") and a.severity != "info"]
    hits = _hits(alerts, "data.volume_spike", ids)
    assert hits and hits[0].entity == "ana" and hits[0].severity != "info", hits and hits[0].explanation


def _small_department_crossing(owner_shared: bool) -> tuple[list, set[str]]:
    """legal is a small department (two dozen accesses); leo (legal) reads hr's restricted payroll for the first
    time. ``owner_shared``: the tenant's other departments read hr's sensitive data every day, else nobody does."""
    rng = np.random.default_rng(33)
    s = Stream()
    _reads(s, rng, "leo", "legal/holds", days=3, per_day=8, dept="legal", owner="legal")
    for k, dept in enumerate(("sales", "support", "engineering", "marketing")):
        _reads(s, rng, f"{dept}{k}", f"{dept}/main", days=3, per_day=40, dept=dept, owner=dept)
        if owner_shared:
            _reads(s, rng, f"x{dept}", "hr/payroll", days=3, per_day=10, dept=dept, owner="hr",
                   sensitivity="restricted")
    _reads(s, rng, "hana", "hr/payroll", days=3, dept="hr", owner="hr", sensitivity="restricted")
    ids = {s.data(T0 + timedelta(days=3, hours=11), "leo", "hr/payroll", 80, dept="legal", owner="hr",
                  sensitivity="restricted")}
    return s.run(), ids


def test_a_small_departments_first_crossing_to_an_owner_nobody_crosses_to_is_segmentation():
    """A department with few accesses is judged with its tenant's other departments as the prior of its crossing
    rate: nobody crosses to hr, so legal's first crossing is rare, whatever its own handful of accesses says."""
    alerts, ids = _small_department_crossing(owner_shared=False)
    hits = _hits(alerts, "data.segmentation", ids)
    assert hits and hits[0].entity == "leo" and "1 in" in hits[0].explanation


def test_a_first_crossing_to_an_owner_every_department_reads_is_not_segmentation():
    alerts, ids = _small_department_crossing(owner_shared=True)
    assert not _hits(alerts, "data.segmentation", ids)


def _rare_reader(night: bool) -> tuple[list, set[str]]:
    """Someone who read confidential data once, in working hours, two days ago (their tenant's people work by day)
    reads it six times a couple of minutes apart at 03:00 UTC (``night``) or at 11:00."""
    rng = np.random.default_rng(34)
    s = Stream()
    _day_workers(s, rng, 4)
    s.data(_work(rng, 1), "rare", "finance/ledger", 50, ip="10.0.2.2")
    start = T0 + timedelta(days=3, hours=3 if night else 11)
    ids = {s.data(start + timedelta(seconds=120 * i), "rare", "finance/ledger", 60, ip="10.0.2.2") for i in range(6)}
    return s.run(), ids


@pytest.mark.parametrize("night", [True, False])
def test_a_rare_readers_night_is_judged_against_their_tenants_rhythm(night: bool):
    """`off_hours_min_events` is 1: a principal with a single earlier access is judged, its rhythm its tenant's
    (worth `off_hours_prior` events) until it has its own; its night of confidential reads is off hours, and the
    benign twin, the same reads in working hours, is not."""
    alerts, ids = _rare_reader(night)
    hits = _hits(alerts, "data.off_hours", ids)
    assert bool(hits) == night
    assert all(h.entity == "rare" for h in hits)
