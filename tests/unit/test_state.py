"""Bounded engine state (idle eviction, the entity cap) and the unused-scopes governance finding."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from detectors.columns import SEP
from detectors.compaction import FIELDS, SEEN, compact
from detectors.engine import Engine, EngineConfig, State
from schemas.events import decode
from schemas.samples import SAMPLES
from streams.simulator.run import Simulation

T0 = datetime(2026, 11, 2, tzinfo=UTC)
NO_EVICTION = EngineConfig(idle_evict_days=0, session_idle_hours=0, max_entities=0)
# small enough that a 7-day run evicts both ways: idle entities daily, and the cap every 2,000 events
TIGHT = EngineConfig(idle_evict_days=1.0, session_idle_hours=2, max_entities=600, cap_check_events=2_000)


@pytest.fixture(scope="module")
def sim():
    s = Simulation(seed=31, events=60_000, days=7, instances=1)
    rows = [r for c in s.chunks() for r in c.rows]
    return s, [decode(json.dumps(r).encode()) for r in rows]


def process(events, engine, size):
    out = []
    for i in range(0, len(events), size):
        out += engine.process(events[i: i + size])
    return out


def ids(alerts):
    return sorted((a.alert_id, a.detector, a.entity) for a in alerts)


def api(i, t, key="key_1", ip="10.0.0.1", granted=None, used="inference:chat", auth="ok", tenant="acme", ua=None):
    row = dict(SAMPLES["api_usage"], event_id=f"e{i}", ts=t.isoformat().replace("+00:00", "Z"), api_key_id=key,
               client_ip=ip, scope_used=used, auth_result=auth, tenant=tenant,
               scopes_granted=granted or ["inference:chat"])
    if ua is not None:
        row["user_agent"] = ua
    return decode(json.dumps(row).encode())


def test_every_novelty_set_is_known_to_compaction(sim):
    """A detector that adds a novelty set must say which namespaces its pairs hold, or compaction drops it."""
    _, events = sim
    eng = Engine()
    process(events, eng, 10_000)
    assert set(eng.tables.seen) <= set(SEEN), set(eng.tables.seen) - set(SEEN)


def test_every_state_field_says_how_compaction_bounds_it():
    """A detector that adds state must say whether it is entity-keyed and how compaction handles it."""
    assert {f.name for f in fields(State)} == set(FIELDS), {f.name for f in fields(State)} ^ set(FIELDS)


def _peer_counts(s):
    """The tenants' peer counts of keys recounted from the novelty sets they follow."""
    v = s.vocabs

    def tenant(k):
        return v.tenant.ids[v.key.names[k].split(SEP, 1)[0]]

    tenant_keys = Counter(tenant(k) for k in s.seen.get("tenant_key", []).tolist())
    ks = s.seen.get("key_scope", np.zeros(0, dtype=np.int64))
    scope_keys = Counter((tenant(k) << 31) | sc for k, sc in zip((ks >> 31).tolist(), (ks & 0x7FFFFFFF).tolist(),
                                                                 strict=True))
    return dict(tenant_keys), dict(scope_keys)


def _real_scopes(counts):
    """Without token 0, which in key_scope may also stand for "no scope"."""
    return {x: n for x, n in counts.items() if x & 0x7FFFFFFF}


@pytest.mark.parametrize("cfg", [NO_EVICTION, TIGHT])
def test_peer_counts_of_keys_follow_eviction(sim, cfg):
    """Keys per tenant and per (tenant, scope) count the keys still tracked: an evicted key leaves them,
    and one that comes back is counted once."""
    _, events = sim
    eng = Engine(cfg)
    process(events, eng, 5_000)
    if cfg is TIGHT:
        assert eng.evicted["idle"] > 0 and eng.evicted["cap"] > 0
    tenant_keys, scope_keys = _peer_counts(eng.tables)
    assert eng.tables.tenant_keys == tenant_keys
    assert _real_scopes(eng.tables.scope_keys) == _real_scopes(scope_keys)
    assert sum(eng.tables.tenant_keys.values()) <= len(eng.tables.vocabs.key)
    # the sessions table: one dense row per session held, numbered in the order of the names
    ses = eng.tables.sessions
    assert list(ses.ids.values()) == list(range(len(ses)))
    assert all(col.size >= len(ses) for col in ses.c.values())


def test_default_bounds_change_nothing_on_a_week(sim):
    _, events = sim
    a = process(events, Engine(), 5_000)
    b = process(events, Engine(NO_EVICTION), 5_000)
    assert len(a) > 10
    assert ids(a) == ids(b)


@pytest.mark.parametrize("sizes", [(5_000, 997), (5_000, 60_000), (1, 3_331)])
def test_eviction_does_not_depend_on_where_the_stream_is_cut_into_batches(sim, sizes):
    _, events = sim
    cfg = TIGHT
    if sizes[0] == 1:  # one event a batch: a sparser week, so it runs in seconds
        events = events[::8]
        cfg = EngineConfig(idle_evict_days=1.0, session_idle_hours=2, max_entities=250, cap_check_events=500)
    ea, eb = Engine(cfg), Engine(cfg)
    a, b = process(events, ea, sizes[0]), process(events, eb, sizes[1])
    assert ea.evicted["idle"] > 0 and ea.evicted["cap"] > 0, ea.evicted
    assert ea.evicted == eb.evicted
    assert ids(a) == ids(b)
    for ns in ("key", "principal", "agent", "ip", "dataset"):
        assert sorted(getattr(ea.tables.vocabs, ns).names) == sorted(getattr(eb.tables.vocabs, ns).names), ns
    assert len(a) > 5


def test_the_cap_bounds_tracked_entities_and_keeps_the_most_recent():
    cfg = EngineConfig(max_entities=1_000, cap_check_events=500)
    eng = Engine(cfg)
    peak = 0
    for b in range(20):  # 4,000 keys, each with its own IP: 8,000 new entities plus one principal
        eng.process([api(b * 200 + j, T0 + timedelta(seconds=b * 200 + j), key=f"k{b * 200 + j}",
                         ip=f"10.1.{b}.{j}") for j in range(200)])
        peak = max(peak, eng.entities())
    assert peak <= cfg.max_entities + 3 * cfg.cap_check_events
    assert eng.evicted["cap"] > 6_000
    keys = set(eng.tables.vocabs.key.names)
    assert "acme\x1fk3999" in keys and "acme\x1fk0" not in keys
    # seen by every event: never the least recent
    assert "acme\x1fana@acme.example" in eng.tables.vocabs.principal.names


def _warm_then_gone(cfg):
    """A key warms up on one IP for two days, goes quiet for 10 days (another key keeps time moving), then
    comes back from a new IP and user agent."""
    eng = Engine(cfg)
    warm = [api(i, T0 + timedelta(minutes=30 * i)) for i in range(100)]
    other = [api(1000 + i, T0 + timedelta(days=2, hours=6 * i), key="key_2", ip="10.0.0.9") for i in range(40)]
    back = [api(5000, T0 + timedelta(days=12), ip="203.0.113.5", ua="curl/8.5")]
    alerts = process(warm + other, eng, 37) + eng.process(back)
    return eng, [a for a in alerts if a.detector == "api.new_client" and a.entity == "key_1"]


def test_an_evicted_entity_comes_back_cold():
    kept, hits = _warm_then_gone(NO_EVICTION)
    assert hits, "without eviction the returning warm key's new IP is an alert"
    eng, hits = _warm_then_gone(EngineConfig(idle_evict_days=7))
    assert not hits, "after eviction the key is new again: cold, no baseline to be new against"
    k = eng.tables.vocabs.key.ids["acme\x1fkey_1"]
    assert eng.tables.key["n"][k] == 1
    assert eng.evicted["idle"] >= 2  # key_1 and its IP
    assert "acme\x1f10.0.0.1" not in eng.tables.vocabs.ip.ids


def test_checkpoint_after_eviction_gives_identical_alerts(sim):
    _, events = sim
    half = len(events) // 2
    eng = Engine(TIGHT)
    process(events[:half], eng, 4_000)
    assert eng.evicted["idle"] > 0 and eng.evicted["cap"] > 0
    restored = Engine.from_state(eng.state())
    assert restored.evicted == eng.evicted
    a = process(events[half:], eng, 4_000)
    b = process(events[half:], restored, 3_000)
    assert a and msgspec.json.encode(a) != b"[]"
    assert ids(a) == ids(b)
    assert eng.unused_scopes() == restored.unused_scopes()


def test_an_old_checkpoint_without_the_new_fields_restores(sim):
    import pickle

    _, events = sim
    eng = Engine()
    process(events[:5_000], eng, 5_000)
    d = pickle.loads(eng.state())  # noqa: S301 - our own
    for f in ("last_seen", "sessions", "scopes",  # bounded state
              "scope_keys", "tenant_keys"):  # the detector fixes
        del d["state"].__dict__[f]
    del d["evicted"]
    restored = Engine.from_state(pickle.dumps(d))
    assert len(restored.tables.last_seen["key"]) == len(restored.tables.vocabs.key)
    assert (restored.tables.last_seen["key"] == restored.tables.watermark).all()
    assert restored.tables.scope_keys == {} and len(restored.tables.sessions) == 0
    assert process(events[5_000:10_000], restored, 5_000) is not None


def test_a_checkpoint_with_the_old_hour_histogram_names_restores(sim):
    import pickle

    _, events = sim
    eng = Engine()
    process(events[:5_000], eng, 5_000)
    d = pickle.loads(eng.state())  # noqa: S301 - our own
    st = d["state"].__dict__
    st["tow_tenant"], st["tow_principal"] = st.pop("hours_tenant"), st.pop("hours_principal")
    restored = Engine.from_state(pickle.dumps(d))
    assert restored.tables.hours_principal.sum() > 0
    assert (restored.tables.hours_principal == eng.tables.hours_principal).all()
    assert (restored.tables.hours_tenant == eng.tables.hours_tenant).all()
    assert not hasattr(restored.tables, "tow_tenant")


def _as_session_dicts(st: dict) -> None:
    """A checkpoint's state as written before the sessions table: one dict (or set) per field, by name."""
    ses = st.pop("sessions")
    names = list(ses.ids)
    rows = [ses.ids[x] for x in names]
    no_time = np.iinfo(np.int64).min
    st["session_last"] = {x: int(ses["last"][r]) for x, r in zip(names, rows, strict=True)}
    st["session_steps"] = {x: int(ses["steps"][r]) for x, r in zip(names, rows, strict=True)}
    st["untrusted_sessions"] = {x: int(ses["marked"][r]) for x, r in zip(names, rows, strict=True)
                                if ses["marked"][r] != no_time}
    st["runaway_sessions"] = {x for x, r in zip(names, rows, strict=True) if ses["runaway"][r]}
    st["family"]["agent_session_chain"] = {x: (int(ses["action"][r]), int(ses["fail_run"][r]))
                                           for x, r in zip(names, rows, strict=True)}


def test_a_checkpoint_with_the_per_field_session_dicts_restores_into_the_table(sim):
    """Sessions held as a dict per field by name (before the sessions table) restore to the same rows, and
    the engine goes on to raise the same alerts as one never checkpointed."""
    import pickle

    _, events = sim
    eng = Engine(TIGHT)
    process(events[:30_000], eng, 5_000)
    before = eng.tables.sessions
    assert len(before) > 50 and before["steps"][: len(before)].max() > 1
    d = pickle.loads(eng.state())  # noqa: S301 - our own
    _as_session_dicts(d["state"].__dict__)
    restored = Engine.from_state(pickle.dumps(d))
    after = restored.tables.sessions
    assert after.ids == before.ids and "agent_session_chain" not in restored.tables.family
    for k in before.c:
        assert np.array_equal(after[k][: len(after)], before[k][: len(before)]), k
    a, b = process(events[30_000:], eng, 5_000), process(events[30_000:], restored, 5_000)
    assert a and ids(a) == ids(b)


# -- governance: unused scopes --------------------------------------------------------------------
def test_unused_scopes_lists_what_a_key_never_used():
    three = ["inference:chat", "files:write", "admin:keys"]
    events = [api(i, T0 + timedelta(minutes=i), key="narrow", granted=three) for i in range(5)]
    events += [api(10 + i, T0 + timedelta(minutes=i), key="full", granted=["inference:chat", "files:read"],
                   used=u) for i, u in enumerate(["inference:chat", "files:read", "inference:chat"])]
    # a scope only tried with failed authentication is not used
    events += [api(20, T0, key="tried", granted=["inference:chat", "files:read"], used="inference:chat"),
               api(21, T0, key="tried", granted=["inference:chat", "files:read"], used="files:read", auth="forbidden")]
    eng = Engine()
    eng.process(events)
    rows = {r.api_key_id: r for r in eng.unused_scopes()}
    assert set(rows) == {"narrow", "tried"}
    r = rows["narrow"]
    assert r.unused == ["admin:keys", "files:write"] and r.used == ["inference:chat"]
    assert (r.granted_count, r.used_count, r.requests, r.tenant) == (3, 1, 5, "acme")
    assert r.first_seen == "2026-11-02T00:00:00.000Z" and r.last_seen == "2026-11-02T00:04:00.000Z"
    assert rows["tried"].unused == ["files:read"]


def test_unused_scopes_match_a_reference_on_simulated_traffic(sim):
    s, events = sim
    granted: dict[tuple[str, str], set] = {}
    used: dict[tuple[str, str], set] = {}
    for e in events:
        if type(e).__struct_config__.tag == "api_usage" and e.scopes_granted:
            granted.setdefault((e.tenant, e.api_key_id), set()).update(e.scopes_granted)
        if type(e).__struct_config__.tag == "api_usage" and e.scope_used and e.auth_result == "ok":
            used.setdefault((e.tenant, e.api_key_id), set()).add(e.scope_used)
    want = {k: sorted(g - used.get(k, set())) for k, g in granted.items() if g - used.get(k, set())}
    eng = Engine()
    process(events, eng, 7_000)
    got = {(r.tenant, r.api_key_id): r.unused for r in eng.unused_scopes()}
    assert len(want) > 5
    assert got == want
    # the simulator's over-permissioned keys: what they were granted and never used is reported
    world = {(k.tenant, k.key_id): k for k in s.world.keys}
    for (tenant, key), unused in got.items():
        assert set(unused) <= set(world[(tenant, key)].granted)


def test_the_scope_ledger_follows_its_keys_through_compaction(sim):
    _, events = sim
    eng = Engine(NO_EVICTION)
    process(events, eng, 10_000)
    before = eng.unused_scopes()
    s = eng.tables
    # evict every other IP and the first key with unused scopes: the ledger is renumbered, not scrambled
    victim = s.vocabs.key.ids[f"{before[0].tenant}\x1f{before[0].api_key_id}"]
    drop_key = np.zeros(len(s.vocabs.key), dtype=np.bool_)
    drop_key[victim] = True
    drop_ip = np.arange(len(s.vocabs.ip)) % 2 == 0
    compact(s, {"key": drop_key, "ip": drop_ip})
    after = eng.unused_scopes()
    assert [(r.tenant, r.api_key_id, r.unused, r.requests) for r in after] == \
        [(r.tenant, r.api_key_id, r.unused, r.requests) for r in before[1:]]


def test_report_scopes_command(tmp_path):
    three = ["inference:chat", "files:write", "admin:keys"]
    path = tmp_path / "e.jsonl"
    rows = [dict(SAMPLES["api_usage"], event_id=f"e{i}", api_key_id=k, scopes_granted=three if k == "narrow"
                 else ["inference:chat"]) for i, k in enumerate(["narrow", "narrow", "full"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    r = subprocess.run([sys.executable, "-m", "streams.cli", "report", "scopes", "--input", str(path)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    out = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["api_key_id"], x["unused"], x["granted_count"], x["used_count"]) for x in out] == \
        [("narrow", ["admin:keys", "files:write"], 3, 1)]
    assert "1 of 2 keys" in r.stderr and "line" not in r.stdout


def test_evictions_reach_the_worker_metric():
    from streams import metrics as m

    def value():
        return m.REGISTRY.get_sample_value("spyglass_entities_evicted_total", {"reason": "cap"}) or 0.0

    before = value()
    m.count_evictions({"idle": 3, "cap": 5}, {"idle": 3, "cap": 12})
    assert value() - before == 7


def test_forgetting_sessions_gives_their_room_back():
    """The sessions table keeps the survivors' rows in order and shrinks to them (a dict never shrinks on its
    own: deleting keys leaves its table at its largest size)."""
    import sys

    from detectors.state import Sessions

    ses = Sessions()
    rows = ses.rows([f"s{i}" for i in range(20_000)])
    ses["steps"][rows] = np.arange(20_000)
    assert ses.rows(["s5", "new"]).tolist() == [5, 20_000]
    keep = np.zeros(len(ses), dtype=np.bool_)
    keep[::100] = True
    gone = ses.keep(keep)
    assert len(gone) == 20_001 - 201 and "s100" not in gone and "s5" in gone
    assert list(ses.ids) == [f"s{i}" for i in range(0, 20_000, 100)] + ["new"]
    assert ses["steps"].tolist() == [*range(0, 20_000, 100), 0]
    assert sys.getsizeof(ses.ids) == sys.getsizeof(dict(ses.ids)) < 20_000
    assert ses.keep(np.ones(len(ses), dtype=np.bool_)) == []


def test_sparse_rows_hold_only_nonzero_rows_and_follow_renumbering():
    from detectors.state import SparseRows

    t = SparseRows(3)
    t.put(np.array([7, 2, 5]), np.array([[1.0, 0, 0], [0, 0, 0], [0, 2.0, 0]]))
    assert t.ids.tolist() == [5, 7] and t.get(np.array([2, 5, 7, 9])).tolist() == [[0, 0, 0], [0, 2, 0],
                                                                                   [1, 0, 0], [0, 0, 0]]
    t.put(np.array([5, 1]), np.array([[0.0, 0, 0], [0, 0, 4.0]]))  # 5 back to zeros: no longer held
    assert t.ids.tolist() == [1, 7] and t.rows.tolist() == [[0, 0, 4], [1, 0, 0]]
    r = np.array([-1, 0, -1, 1, 2, 3, 4, 5, 6, 7])  # ids 0 and 2 dropped, the rest shift down
    t.renumbered(r)
    assert t.ids.tolist() == [0, 5] and t.get(np.array([5])).tolist() == [[1, 0, 0]]
    t.renumbered(np.full(10, -1))
    assert len(t) == 0 and t.rows.shape == (0, 3)


def test_held_back_reads_follow_their_principals_through_eviction(sim):
    """Principals with held-back reads in the sparse table keep them when others are evicted and renumbered."""
    _, events = sim
    eng = Engine(EngineConfig(idle_evict_days=0, session_idle_hours=0, max_entities=0))
    process(events[:40_000], eng, 5_000)
    s = eng.tables
    names = s.vocabs.principal.names
    held = {names[i]: row.tolist() for i, row in zip(s.oh_pending.ids.tolist(), s.oh_pending.rows, strict=True)}
    assert held, "the week holds off-hours episodes with held-back reads"
    drop = np.zeros(len(names), dtype=np.bool_)
    drop[[i for i, n in enumerate(names) if n not in held][::2]] = True  # half the principals without any
    compact(s, {"principal": drop})
    names = s.vocabs.principal.names
    assert {names[i]: row.tolist() for i, row in zip(s.oh_pending.ids.tolist(), s.oh_pending.rows,
                                                     strict=True)} == held
    assert (np.diff(s.oh_pending.ids) > 0).all()


def test_a_checkpoint_with_the_held_back_reads_as_columns_restores(sim):
    """Held-back reads kept as 24 dense principal columns (before the sparse table) restore into it, and the
    engine goes on to raise the same alerts as one never checkpointed."""
    import pickle

    _, events = sim
    eng = Engine()
    process(events[:30_000], eng, 5_000)
    pend = eng.tables.oh_pending
    assert len(pend) > 0
    d = pickle.loads(eng.state())  # noqa: S301 - our own
    st = d["state"].__dict__
    p = st["principal"]
    dense = np.zeros((p.a["first"].size, 24))
    dense[pend.ids] = pend.rows
    for h in range(24):
        p.spec[f"oh_pend{h}"] = 0
        p.a[f"oh_pend{h}"] = dense[:, h].copy()
    del st["oh_pending"]
    restored = Engine.from_state(pickle.dumps(d))
    assert restored.tables.oh_pending.ids.tolist() == pend.ids.tolist()
    assert np.array_equal(restored.tables.oh_pending.rows, pend.rows)
    assert not any(k.startswith("oh_pend") and k != "oh_pend_max" for k in restored.tables.principal.a)
    a, b = process(events[30_000:], eng, 5_000), process(events[30_000:], restored, 5_000)
    assert a and ids(a) == ids(b)
