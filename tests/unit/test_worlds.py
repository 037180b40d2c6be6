"""Varied worlds (``--world-seed``) and their scoring (``spyglass eval worlds``)."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict

import msgspec
import numpy as np
import pytest

from detectors.evaluation.worlds import GRACE_S, combine, score
from schemas.alerts import Alert, Evidence, Feature
from schemas.errors import EventError
from schemas.events import decode
from streams.cli.worlds import seeds
from streams.simulator.run import Simulation, encode_lines
from streams.simulator.variants import VARIANTS
from streams.simulator.worlds import draw_traits

# sha256 of the default run (seed 7, 30k events, 3 days: every chunk's JSONL, then the labels): the default
# path (no world seed) must keep producing exactly these bytes.
DEFAULT_DIGEST = "f3b36b39a4ea7aa2cafa92ce243ca5f9004d50cf8e2002b1df5345b9a0b5eb11"
WORLD = 3  # a world with NAT pools, proxied keys, blocked approvals and nightly batches (checked below)
REUSED = ("leaked_api_key", "new_scope_use", "bulk_exfiltration", "approval_bypassed")  # the default scenarios' shapes
ENTITY_FIELDS = {"api_key": ("api_key_id",), "principal": ("principal",), "agent": ("agent_id",),
                 "client_ip": ("client_ip",), "dataset": ("dataset",)}


def _events(sim: Simulation) -> list[dict]:
    return [json.loads(line) for c in sim.chunks() for line in encode_lines(c.rows).splitlines()]


@pytest.fixture(scope="module")
def world() -> tuple[Simulation, list[dict], list[dict]]:
    sim = Simulation(seed=WORLD, world_seed=WORLD, events=60_000, days=4)
    return sim, _events(sim), sim.labels()


def test_default_path_is_unchanged():
    h = hashlib.sha256()
    sim = Simulation(seed=7, events=30_000, days=3)
    for c in sim.chunks():
        h.update(encode_lines(c.rows))
    h.update(msgspec.json.encode(sim.labels()))
    assert h.hexdigest() == DEFAULT_DIGEST
    assert sim.traits is None and "world" not in sim.metadata()


def test_world_seeds_change_the_organisation_not_just_the_draw():
    traits = [draw_traits(s, 5) for s in range(1, 21)]
    assert len({len(t.tenants) for t in traits}) >= 4
    offsets = {x.utc_offset_h for t in traits for x in t.tenants}
    assert min(offsets) < -3 and max(offsets) > 5
    people = [x.people for t in traits for x in t.tenants]
    assert min(people) < 20 and max(people) > 100
    tenants = [x for t in traits for x in t.tenants]
    for habit in ("always_on", "nat_pool", "proxied_key_share", "router_key_share", "batch_service_share",
                  "on_call_share", "joiner_share", "blocked_approval_share", "release_days"):
        values = [bool(getattr(x, habit)) for x in tenants]
        assert any(values) and not all(values), habit  # some tenants have the habit, some do not
    assert len({t.shape.key_alpha for t in traits}) == len(traits)


def test_one_world_seed_is_deterministic_and_another_differs():
    def digest(world_seed: int) -> str:
        sim = Simulation(seed=1, world_seed=world_seed, events=12_000, days=3)
        return hashlib.sha256(b"".join(encode_lines(c.rows) for c in sim.chunks())).hexdigest()

    assert draw_traits(5, 4) == draw_traits(5, 4)
    assert digest(5) == digest(5)
    assert digest(5) != digest(6)


def test_events_decode_and_labels_point_at_their_events(world):
    sim, events, labels = world
    assert len(events) == 60_000 == len({e["event_id"] for e in events})
    for e in events:
        assert not isinstance(decode(json.dumps(e)), EventError), e
    assert {lab["scenario"] for lab in labels} <= set(VARIANTS)
    assert len({lab["scenario"] for lab in labels}) >= 15
    by_id = {e["event_id"]: e for e in events}
    for lab in labels:
        assert lab["world_seed"] == WORLD
        if lab["scenario"] not in REUSED:  # a variant records the shape it drew
            assert lab["params"], lab["instance"]
        assert lab["speed"] in ("burst", "slow") and lab["event_ids"]
        mine = [by_id[i] for i in lab["event_ids"]]
        assert all(e["tenant"] == lab["tenant"] and lab["start"] <= e["ts"] <= lab["end"] for e in mine)
        for ent in lab["entities"]:  # every entity an alert may name occurs in the instance's events
            assert any(e.get(f) == ent["id"] for e in mine for f in ENTITY_FIELDS[ent["type"]]), (lab["instance"], ent)
    slow = [lab for lab in labels if lab["speed"] == "slow"]
    assert slow and all(lab["start"] <= lab["detect_from"] <= lab["end"] for lab in slow)


def test_the_world_is_what_its_traits_say(world):
    sim, events, labels = world
    meta = sim.metadata()["world"]
    assert meta["world_seed"] == WORLD and len(meta["tenants"]) == len(sim.world.tenants)
    tenants = {e["tenant"] for e in events}
    assert tenants == {t["name"] for t in meta["tenants"]}


def _benign(events: list[dict], labels: list[dict]) -> list[dict]:
    attack = {i for lab in labels for i in lab["event_ids"]}
    return [e for e in events if e["event_id"] not in attack]


def test_benign_twins_of_the_tricky_behaviours_exist(world):
    sim, events, labels = world
    benign = _benign(events, labels)
    # a key behind a proxy: a different client IP on (nearly) every call
    proxied = {k.key_id for k in sim.world.keys if k.ip_pool}
    ips: dict[str, set[str]] = defaultdict(set)
    calls: Counter[str] = Counter()
    for e in benign:
        if e["kind"] == "api_usage" and e["api_key_id"] in proxied:
            ips[e["api_key_id"]].add(e["client_ip"])
            calls[e["api_key_id"]] += 1
    busiest = max(calls, key=calls.__getitem__)
    assert calls[busiest] >= 50 and len(ips[busiest]) >= 0.7 * min(calls[busiest], 256)
    # a NAT tenant: its people's data access comes from many addresses
    nat = {t.name for t in sim.world.tenants if t.nat_pool}
    assert nat and len({e["client_ip"] for e in benign if e["kind"] == "data_access" and e["tenant"] in nat}) > 50
    # approvals that were pending or denied and ended blocked: the control working, not an attack
    blocked = [e for e in benign if e["kind"] == "agent_execution" and e["approval"] in ("pending", "denied")]
    assert blocked and all(e["outcome"] == "blocked" for e in blocked)
    # nightly batch reads by service accounts, far larger than the same accounts' daytime reads
    batch = [e for e in benign if e.get("purpose") == "nightly-batch"]
    assert batch and all(e["principal"].startswith("svc-") for e in batch)
    day = [e["rows"] for e in benign if e["kind"] == "data_access" and e["principal"] in {b["principal"] for b in batch}
           and e.get("purpose") != "nightly-batch" and e["rows"]]
    assert np.median([e["rows"] for e in batch]) > 10 * np.median(day)


# --- scoring ----------------------------------------------------------------------------------------------------
def _alert(n: int, detector: str, entity_type: str, entity: str, ts: str, evidence: list[str],
           severity: str = "high", tenant: str = "acme") -> Alert:
    return Alert(alert_id=f"a{n}", tenant=tenant, detector=detector, kind="api_usage", entity_type=entity_type,
                 entity=entity, severity=severity, score=0.8, first_seen=ts, last_seen=ts, title="t",
                 explanation="e.", evidence=Evidence(features=[Feature(name="f", value=1.0)], event_ids=evidence),
                 tags=[])


LABELS = [
    {"scenario": "rate_burst", "instance": "rate_burst-0", "tenant": "acme", "speed": "burst",
     "entities": [{"type": "api_key", "id": "k1"}], "start": "2026-11-03T10:00:00.000Z",
     "end": "2026-11-03T10:30:00.000Z", "event_ids": ["e1", "e2", "e3"]},
    {"scenario": "slow_drip_exfiltration", "instance": "slow_drip_exfiltration-0", "tenant": "acme",
     "speed": "slow", "entities": [{"type": "principal", "id": "ana"}], "start": "2026-11-03T09:00:00.000Z",
     "end": "2026-11-06T15:00:00.000Z", "detect_from": "2026-11-05T09:00:00.000Z", "event_ids": ["d1", "d2"]},
    {"scenario": "access_probing", "instance": "access_probing-0", "tenant": "acme", "speed": "burst",
     "entities": [{"type": "principal", "id": "bo"}], "start": "2026-11-04T10:00:00.000Z",
     "end": "2026-11-04T10:05:00.000Z", "event_ids": ["p1"]},
]


def test_scoring_counts_true_false_and_precision_on_a_hand_made_example():
    alerts = [
        # names the key inside the window, 30 s after the start, no attack event in evidence: true, caught in time
        _alert(1, "api.rate_burst", "api_key", "k1", "2026-11-03T10:00:30.000Z", ["b9"]),
        # the attack's event as evidence but another entity: true, does not catch it
        _alert(2, "risk.incident", "principal", "carl", "2026-11-03T10:01:00.000Z", ["e2"]),
        # names the key after the window and its grace: false
        _alert(3, "api.rate_burst", "api_key", "k1", "2026-11-03T11:00:00.000Z", ["b10"]),
        # the same key name in another tenant: false
        _alert(4, "api.rate_burst", "api_key", "k1", "2026-11-03T10:10:00.000Z", ["b11"], tenant="globex"),
        # info: neither true nor false
        _alert(5, "api.new_client", "api_key", "zz", "2026-11-03T12:00:00.000Z", ["b12"], severity="info"),
        # the slow attack caught 2 h after it became unusual: in time (within a day)
        _alert(6, "data.volume_drift", "principal", "ana", "2026-11-05T11:00:00.000Z", ["d2"]),
        # an unrelated false alert
        _alert(7, "data.off_hours", "principal", "dan", "2026-11-04T02:00:00.000Z", ["b13"]),
        # probing caught on the right entity but 10 min after its start: late
        _alert(8, "data.denied_burst", "principal", "bo", "2026-11-04T10:06:00.000Z", ["b14"]),
    ]
    s = score(alerts, LABELS, total_events=100_006)
    assert (s.true_alerts, s.false_alerts, s.alerts) == (4, 3, 7)
    assert s.precision == pytest.approx(4 / 7)
    assert s.benign == 100_000 and s.false_per_100k == pytest.approx(3.0)
    assert [(r.caught, r.in_time) for r in s.attacks] == [(True, True), (True, True), (True, False)]
    assert [r.ttd_s for r in s.attacks] == [30.0, 7200.0, 360.0]
    assert s.recall == 1.0 and s.in_time_share == pytest.approx(2 / 3) and s.median_ttd_s == 360.0
    assert {k: (v.alerts, v.true, v.false) for k, v in s.by_detector.items()} == {
        "api.rate_burst": (3, 1, 2), "risk.incident": (1, 1, 0), "data.volume_drift": (1, 1, 0),
        "data.off_hours": (1, 0, 1), "data.denied_burst": (1, 1, 0)}
    assert GRACE_S < 3600 - 1800  # alert 3 is outside the grace period by construction

    missed = score([alerts[1]], LABELS, total_events=100_006)
    assert [r.detected for r in missed.attacks] == [True, False, False]
    assert missed.recall == 0.0 and missed.precision == 1.0 and missed.median_ttd_s is None

    both = combine([s, missed])
    assert len(both.attacks) == 6 and both.caught == 3 and both.false_alerts == 3 and both.true_alerts == 5
    assert both.by_detector["risk.incident"].true == 2
    assert combine([score([], LABELS, 10)]).precision is None


def test_attacks_that_end_inside_the_learning_period_are_told_apart():
    """The rate burst ends 10:30 on 3 Nov; acme learns until 11:00 that day: only that instance is marked, and the
    recall after learning counts the other two. Without the engine's learning ends nothing is marked."""
    from detectors.evaluation.worlds import event_time

    until = {"acme": int(1000 * event_time("2026-11-03T11:00:00.000Z")), "globex": 0}
    s = score([_alert(6, "data.volume_drift", "principal", "ana", "2026-11-05T11:00:00.000Z", ["d2"])], LABELS,
              total_events=100, learning_until=until)
    assert [r.learning for r in s.attacks] == [True, False, False]
    assert s.recall_after_learning == (1, 2)
    assert s.figures()["after_learning"] == {"caught": 1, "attacks": 2}
    assert score([], LABELS, 100).recall_after_learning == (0, 3)


def test_the_engine_tells_each_tenant_s_learning_end():
    from detectors.engine import Engine, EngineConfig
    from streams.simulator.run import Simulation

    sim = Simulation(seed=3, world_seed=3, events=20_000, days=2, instances=1)
    engine = Engine(EngineConfig(learning_hours=6.0))
    first: dict[str, int] = {}
    for chunk in sim.chunks():
        rows = [decode(r) for r in encode_lines(chunk.rows).splitlines()]
        for ev in rows:
            t = int(ev.ts.timestamp() * 1000)
            first[ev.tenant] = min(first.get(ev.tenant, t), t)
        engine.process(rows)
    assert engine.learning_until() == {t: ms + 6 * 3_600_000 for t, ms in first.items()}


def test_world_seed_ranges():
    assert seeds("1..5") == [1, 2, 3, 4, 5]
    assert seeds("101..103,7") == [101, 102, 103, 7]
