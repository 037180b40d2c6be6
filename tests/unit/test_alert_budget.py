"""The false-alarm budget (detectors.budget) on an engine run: a noisy detector is held to its budget, a rare
strong finding still alerts, and the budget is batch independent and checkpointed.

The detector under test is a family of this module, registered on a registry of its own: ``noisy.hit`` fires on
one api event in twenty of tenant acme (each on a key of its own, so every hit opens an episode), with a
calibrated surprise of about 1 in 100 to 1 in 10,000; an event whose ``user_agent`` is ``strong/<s>`` is a hit of
surprise ``s`` (the attack, or a quiet tenant's one real finding).
"""

from __future__ import annotations

import doctest
import json
import pickle
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from detectors.alerting import Finding
from detectors.budget import AlertBudget
from detectors.calibration import score_of
from detectors.columns import ApiColumns
from detectors.engine import Engine, EngineLimits
from detectors.registry import Context, Detector, Family, Registry
from schemas.alerts import Feature
from schemas.events import decode
from schemas.samples import SAMPLES

T0 = datetime(2026, 11, 2, tzinfo=UTC)
EVENTS_PER_DAY = 10_000


def noisy_stage(ctx: Context, c: ApiColumns) -> list[Finding]:
    """A hit on every twentieth event of acme (surprise from the event's number) and on every ``strong/`` one."""
    out = []
    for i in range(len(c.ts)):
        e = c.events[i]
        n = int(e.event_id[1:])
        if e.user_agent.startswith("strong/"):
            surprise = float(e.user_agent.split("/", 1)[1])
        elif e.tenant == "acme" and n % 20 == 0:
            surprise = 2.0 + float(np.random.default_rng(n).exponential(0.6))
        else:
            continue
        f = ctx.finding("noisy.hit", c, i, e.api_key_id, e.principal, score_of(surprise),
                        [Feature(name="n", value=float(n))], f"Event {e.event_id} looked odd.")
        f.surprise = surprise
        out.append(f)
    return out


NOISY = Family(
    name="noisy", kind="api_usage", doc="A detector that fires on 5% of a tenant's events.", stage=noisy_stage,
    detectors=(Detector("noisy.hit", "A noisy hit", "api_key", ("atlas:AML.T0034",), "Fires often.",
                        cooldown_s=60),))
REGISTRY = Registry([NOISY])


def api(n: int, t: datetime, tenant: str = "acme", user_agent: str = "sdk/1.0"):
    row = dict(SAMPLES["api_usage"], event_id=f"e{n}", ts=t.isoformat().replace("+00:00", "Z"), tenant=tenant,
               api_key_id=f"k{n}", user_agent=user_agent)
    return decode(json.dumps(row).encode())


def day_of(n: int, day: int, tenant: str = "acme") -> datetime:
    return T0 + timedelta(days=day, seconds=86_400 * (n % EVENTS_PER_DAY) / EVENTS_PER_DAY)


def noisy_days(days: int) -> list:
    """``days`` days of acme's traffic, 10,000 events a day, every twentieth a noisy hit."""
    return [api(d * EVENTS_PER_DAY + i, day_of(i, d)) for d in range(days) for i in range(EVENTS_PER_DAY)]


def run(events, engine: Engine | None = None, size: int = 5_000) -> tuple[Engine, list]:
    engine = engine or Engine(registry=REGISTRY)
    out = []
    for i in range(0, len(events), size):
        out += engine.process(events[i: i + size])
    return engine, out


def paged(alerts) -> list:
    return [a for a in alerts if a.severity != "info"]


@pytest.fixture(scope="module")
def noise() -> list:
    return noisy_days(4)


def test_a_detector_firing_on_five_percent_of_events_is_held_to_its_budget(noise):
    _, alerts = run(noise)
    hits = [a for a in alerts if a.detector == "noisy.hit"]
    assert len(hits) == 2_000  # every hit is still an alert, stored
    after_learning = [a for a in hits if a.first_seen >= "2026-11-03"]
    assert len(after_learning) == 1_500
    # 30,000 events after the learning period at 1 per 100k: well under one alert; a few record highs at most
    assert len(paged(hits)) <= 3, [(a.first_seen, a.score) for a in paged(hits)]
    kept = next(a for a in after_learning if a.severity == "info")
    assert "Kept at info by the alert budget" in kept.explanation and "1 alert(s) per 100k" in kept.explanation


def test_without_a_budget_the_same_detector_pages_on_every_hit(noise):
    config = REGISTRY.config_class(EngineLimits)(alert_budget_per_100k=0.0)
    _, alerts = run(noise, Engine(config, REGISTRY))
    assert len(paged(a for a in alerts if a.first_seen >= "2026-11-03")) == 1_500


def test_a_larger_budget_lets_more_through(noise):
    config = REGISTRY.config_class(EngineLimits)(alert_budget_per_100k=50.0)
    _, alerts = run(noise, Engine(config, REGISTRY))
    n = len(paged(alerts))
    assert 5 <= n <= 40, n  # 50 per 100k of 40,000 events is 20


def test_a_single_rare_strong_finding_in_a_quiet_tenant_alerts():
    quiet = [api(i, T0 + timedelta(minutes=5 * i), tenant="initech") for i in range(1_000)]
    quiet.append(api(5_000, T0 + timedelta(days=3, hours=3), tenant="initech", user_agent="strong/5"))
    _, alerts = run(quiet)
    (hit,) = [a for a in alerts if a.detector == "noisy.hit"]
    assert hit.severity != "info" and hit.entity == "k5000"
    assert "That is about 1 in 100,000 for this key." in hit.explanation  # added once, by alert building


def test_a_quiet_detectors_first_finding_pages_from_the_cold_floor_and_a_weak_one_does_not():
    """Before a detector has a few episodes in a tenant, the budget holds its findings to COLD_FLOOR (about 1 in
    1,000): a first strong finding pages, a first weak one (1 in 50 for its key) is info and says why."""
    from detectors.budget import COLD_FLOOR

    quiet = [api(i, T0 + timedelta(minutes=5 * i), tenant="initech") for i in range(1_000)]
    weak = quiet + [api(5_000, T0 + timedelta(days=3, hours=3), tenant="initech", user_agent="strong/1.7")]
    (hit,) = [a for a in run(weak)[1] if a.detector == "noisy.hit"]
    assert hit.severity == "info" and "only above about 1 in 1,000" in hit.explanation
    strong = quiet + [api(5_000, T0 + timedelta(days=3, hours=3), tenant="initech",
                          user_agent=f"strong/{COLD_FLOOR + 0.2}")]
    (hit,) = [a for a in run(strong)[1] if a.detector == "noisy.hit"]
    assert hit.severity != "info"


def test_the_cold_floor_gives_way_to_the_learned_tail_once_the_detector_has_episodes():
    b = AlertBudget()
    assert b.bar(0, "d", b.threshold(0, "d", events=1e6, per_100k=1.0)) == 3.0
    for i in range(50):  # a detector whose benign episodes are about 1 in 10, ten allowed
        b.learn(0, "d", 1.0, threshold=b.threshold(0, "d", 1e6, 1.0), rise=1.0, ts=i * 3_600_000)
    assert b.bar(0, "d", b.threshold(0, "d", events=1e6, per_100k=1.0)) < 3.0


def test_a_strong_finding_stands_out_of_the_noise_and_a_burst_does_not_hide_the_next(noise):
    eng, _ = run(noise)
    t = T0 + timedelta(days=4, hours=2)
    burst = [api(900_000 + i, t + timedelta(seconds=i), user_agent="strong/9") for i in range(30)]
    _, burst_alerts = run(burst, eng)
    assert paged(burst_alerts), "an attack nine decades out stands out of noise at two to four"
    later = [api(990_000, t + timedelta(hours=12), user_agent="strong/9")]
    _, later_alerts = run(later, eng)
    assert paged(later_alerts), "the burst's own alerts lifted the threshold past an attack of its strength"


def test_the_budget_is_the_same_whatever_the_batch_cuts_and_survives_a_checkpoint(noise):
    events = noise[:25_000] + [api(900_000, day_of(2_600, 2), user_agent="strong/8")] + noise[25_000:]
    straight, want = run(events, size=5_000)
    _, other = run(events, size=997)
    assert msgspec.json.encode(other) == msgspec.json.encode(want)
    half, got = run(events[:17_000], size=4_096)
    restored = Engine.from_state(half.state(), REGISTRY)
    _, rest = run(events[17_000:], restored, size=1_500)
    assert msgspec.json.encode(got + rest) == msgspec.json.encode(want)
    assert restored.tables.budget.events == pytest.approx(straight.tables.budget.events)
    for key, hist in straight.tables.budget.hist.items():
        assert np.array_equal(restored.tables.budget.hist[key], hist), key


def test_a_checkpoint_written_before_budgets_restores_with_an_empty_one():
    eng, _ = run(noisy_days(1)[:3_000])
    blob = pickle.loads(eng.state())  # noqa: S301 - the test's own checkpoint
    del blob["state"].__dict__["budget"]
    old = Engine.from_state(pickle.dumps(blob), REGISTRY)
    assert isinstance(old.tables.budget, AlertBudget) and not old.tables.budget.hist
    run([api(50_000, T0 + timedelta(days=1))], old)  # and it scores


def _held_engine() -> Engine:
    """An engine past initech's learning period whose noisy.hit budget sits above 3 (200 benign episodes)."""
    budget = AlertBudget()
    for _ in range(200):
        budget.learn(0, "noisy.hit", 3.0, threshold=9.0, rise=1.0, ts=0)
    assert budget.threshold(0, "noisy.hit", events=20_000, per_100k=1.0) > 3.0
    eng = Engine(registry=REGISTRY)
    run([api(i, T0 + timedelta(seconds=i), tenant="initech") for i in range(1, 10)], eng)
    eng.tables.tenant_start = dict.fromkeys(eng.tables.tenant_start, 0)  # past its learning period
    tenant = eng.tables.vocabs.tenant.ids["initech"]
    eng.tables.budget.hist[(tenant, "noisy.hit")] = budget.hist[(0, "noisy.hit")]
    eng.tables.budget.events[tenant] = 20_000.0
    return eng


def _episode(*strengths: float) -> list:
    t = T0 + timedelta(days=2)
    row = dict(SAMPLES["api_usage"], tenant="initech", api_key_id="k7")
    return [decode(json.dumps({**row, "event_id": f"e{7000 + i}", "user_agent": f"strong/{s}",
                               "ts": (t + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")}).encode())
            for i, s in enumerate(strengths)]


def test_a_held_episode_is_lifted_once_by_a_later_hit_that_passes_the_threshold():
    """A weak first finding (kept at info by the budget) does not silence the stronger hits of its episode: the
    first one past the threshold opens one alert, named after its own event, and later hits fold into it."""
    eng = _held_engine()
    alerts = eng.process(_episode(2.5, 2.8, 20, 20))
    assert [(a.severity, a.evidence.event_ids) for a in alerts] == [
        ("info", ["e7000", "e7001"]), ("high", ["e7002", "e7003"])]
    assert "Kept at info by the alert budget" in alerts[0].explanation
    assert "This episode opened at 2026-11-04T00:00:00.000Z with a finding kept at info" in alerts[1].explanation
    assert alerts[1].alert_id != alerts[0].alert_id


def test_a_held_episode_whose_later_hits_stay_weak_stays_info():
    """The benign twin: every later hit below the threshold extends the info episode; nothing pages."""
    alerts = _held_engine().process(_episode(2.5, 2.6, 2.9, 2.7))
    assert [(a.severity, len(a.evidence.event_ids)) for a in alerts] == [("info", 4)]


def test_lifting_is_the_same_whatever_the_batch_cuts_and_survives_a_checkpoint():
    events = _episode(2.5, 2.8, 20, 20)
    want = _held_engine().process(events)
    for cut in (1, 2, 3):
        eng = _held_engine()
        first = eng.process(events[:cut])
        restored = Engine.from_state(eng.state(), REGISTRY)
        got = first + restored.process(events[cut:])
        assert [(a.alert_id, a.severity) for a in got] == [(a.alert_id, a.severity) for a in want], cut


def _first_day_attack(tenant: str, base: int) -> list:
    """Three strong findings (1 in 10^12, each on a key of its own) in ``tenant``'s learning period."""
    return [api(base + i, T0 + timedelta(hours=2 + i), tenant=tenant, user_agent="strong/12") for i in range(3)]


def test_an_attack_on_a_small_tenants_first_day_does_not_keep_a_later_rarer_finding_at_info():
    """The pattern: a quiet tenant whose first day held an attack (learned while nothing alerts) still pages on a
    later finding rarer than the budget's ceiling (1 in 10^6 for 1 alert per 100k), whatever threshold the
    budget extrapolated from that day; and the budget learned the attack as no more than the ceiling."""
    from detectors.budget import ceiling

    quiet = [api(i, T0 + timedelta(minutes=5 * i), tenant="initech") for i in range(1_000)]
    attacked = sorted(quiet + _first_day_attack("initech", 800_000), key=lambda e: e.ts)
    assert ceiling(1.0) == 6.0 and ceiling(0.1) == 7.0 and ceiling(50.0) == 6.0
    later = api(5_000, T0 + timedelta(days=3, hours=3), tenant="initech", user_agent="strong/6.5")
    eng, alerts = run([*attacked, later])
    (hit,) = [a for a in alerts if a.entity == "k5000"]
    assert hit.severity != "info", hit.explanation
    assert all(a.severity == "info" for a in alerts if a.entity != "k5000")  # the first day is info-only
    (hist,) = eng.tables.budget.hist.values()
    assert hist[int(ceiling(1.0) / 0.1) + 1:].sum() == 0  # nothing learned past the ceiling


def test_a_noisy_detectors_ordinary_findings_stay_held_after_a_first_day_attack():
    """The benign twin: a detector firing on one event in twenty of globex, each finding up to 1 in 300,000 (under
    the ceiling), with the same first-day attack, is still held to its budget: a few record highs at most."""
    rng = np.random.default_rng(25)
    noisy = [api(i, day_of(i % EVENTS_PER_DAY, i // EVENTS_PER_DAY, "globex"), tenant="globex",
                 user_agent=f"strong/{rng.uniform(2.0, 5.5):.2f}" if i % 20 == 0 else "sdk/1.0")
             for i in range(4 * EVENTS_PER_DAY)]
    events = sorted(noisy + _first_day_attack("globex", 800_000), key=lambda e: e.ts)
    _, alerts = run(events)
    later = [a for a in alerts if a.first_seen >= "2026-11-03"]
    assert len(later) == 1_500
    assert len(paged(later)) <= 3, [(a.first_seen, a.score) for a in paged(later)]


def test_docstring_examples():
    from detectors import alerting, budget

    assert doctest.testmod(budget).failed == 0
    assert doctest.testmod(alerting).failed == 0
