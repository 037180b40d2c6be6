"""api.behaviour_outlier: per-key event-time windows scored by one streaming Loda model per tenant."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from detectors.compaction import compact
from detectors.engine import Engine, EngineConfig
from schemas.events import ApiUsage, decode

T0 = datetime(2026, 11, 2, tzinfo=UTC)
# small warm-up so a short synthetic stream reaches the alerting phase
CFG = EngineConfig(behaviour=True, behaviour_min_windows=300, behaviour_warmup=64)
KEYS = [f"key_{k:02d}" for k in range(30)]


def ev(i: int, t: datetime, key: str, *, model: str = "gpt-small", endpoint: str = "/v1/chat", tokens: int = 300,
       ip: str = "10.0.0.1") -> ApiUsage:
    row = {"kind": "api_usage", "event_id": f"e{i}", "ts": t.isoformat().replace("+00:00", "Z"), "tenant": "acme",
           "api_key_id": key, "principal": f"svc-{key}", "client_ip": ip, "method": "POST", "endpoint": endpoint,
           "status": 200, "auth_result": "ok", "user_agent": "sdk/1.0", "request_bytes": 800, "response_bytes": 1500,
           "scopes_granted": ["inference:chat"], "scope_used": "inference:chat", "model": model,
           "tokens_in": tokens // 2, "tokens_out": tokens - tokens // 2}
    e = decode(msgspec.json.encode(row))
    assert isinstance(e, ApiUsage)
    return e


def stream(attack: bool) -> tuple[list[ApiUsage], str]:
    """30 keys with a few requests per 10 minutes for 20 hours; then key_07 misbehaves (or not) for one window
    and one later request of key_07 closes it. Returns the events and the id of that closing request."""
    rng = np.random.default_rng(5)
    out: list[ApiUsage] = []
    n = 0
    for w in range(120):
        t = T0 + timedelta(minutes=10 * w)
        for key in KEYS:
            for _ in range(int(rng.integers(1, 5))):
                out.append(ev(n, t + timedelta(seconds=float(rng.uniform(0, 590))), key,
                              tokens=int(rng.integers(100, 600))))
                n += 1
    out.sort(key=lambda e: e.ts)
    t = T0 + timedelta(minutes=10 * 120)
    for j in range(400 if attack else 3):
        out.append(ev(n, t + timedelta(seconds=j), "key_07", model=f"model-{j % 9}" if attack else "gpt-small",
                      endpoint=f"/v1/{['chat', 'embed', 'complete', 'score', 'rank'][j % 5]}" if attack else "/v1/chat",
                      tokens=9_000 if attack else 300, ip=f"203.0.113.{j % 6}" if attack else "10.0.0.1"))
        n += 1
    closing = ev(n, t + timedelta(minutes=12), "key_07")
    return out + [closing], closing.event_id


def _pattern(attack: bool) -> tuple[list, set[str]]:
    events, closing = stream(attack)
    return run(events)[1], {closing}


# the detector's pattern and its benign twin (tests/unit/test_registry.py holds every detector to having both)
PATTERNS = {"api.behaviour_outlier": lambda: _pattern(True)}
BENIGN = {"api.behaviour_outlier": lambda: _pattern(False)}


def run(events, engine=None, size=1_000):
    engine = engine or Engine(CFG)
    alerts = []
    for i in range(0, len(events), size):
        alerts += engine.process(events[i: i + size])
    return engine, alerts


def behaviour(alerts):
    return [a for a in alerts if a.detector == "api.behaviour_outlier"]


def test_a_key_far_off_its_tenant_alerts_on_that_key_at_the_closing_event():
    events, closing = stream(attack=True)
    _, alerts = run(events)
    hits = behaviour(alerts)
    assert [a.entity for a in hits] == ["key_07"]
    a = hits[0]
    assert a.evidence.event_ids == [closing]  # raised by the request that closed the window
    names = {f.name for f in a.evidence.features}
    assert names & {"models", "endpoints", "tokens", "requests", "client_ips"} and "loda_score" in names
    assert "key_07" in a.explanation and "typical" in a.explanation


def test_a_benign_twin_raises_nothing():
    events, _ = stream(attack=False)
    _, alerts = run(events)
    assert behaviour(alerts) == []


@pytest.mark.parametrize("size", [97, 4_000])
def test_batch_cuts_and_checkpoints_do_not_change_the_alerts(size):
    events, _ = stream(attack=True)
    _, a = run(events, size=1_000)
    _, b = run(events, size=size)
    ids = [(x.alert_id, x.detector) for x in a]
    assert behaviour(a) and ids == [(x.alert_id, x.detector) for x in b]
    # whole alerts of this detector (other detectors fold later hits of a batch into an open alert, so their
    # evidence lists depend on the cut; their ids do not)
    assert msgspec.json.encode(behaviour(a)) == msgspec.json.encode(behaviour(b))
    half = len(events) // 2 + 13
    eng, first = run(events[:half], size=size)
    eng = Engine.from_state(eng.state())
    _, rest = run(events[half:], eng, size=size)
    assert [(x.alert_id, x.detector) for x in first + rest] == ids
    assert msgspec.json.encode(behaviour(first + rest)) == msgspec.json.encode(behaviour(a))


def test_an_alerted_window_is_not_learned():
    events, _ = stream(attack=True)
    eng, _ = run(events)
    model = eng.tables.behaviour[0]
    learned = model._acc[0]
    eng2, _ = run(stream(attack=False)[0])
    assert learned == eng2.tables.behaviour[0]._acc[0] - 1  # the benign twin learned its last window, the attack not


def test_compaction_drops_an_evicted_keys_open_window():
    events, _ = stream(attack=True)
    eng, _ = run(events[:-1])  # key_07's attack window is still open
    s = eng.tables
    k7 = s.vocabs.key.ids["acme\x1fkey_07"]
    assert s.key["bw_n"][k7] == 400 and (s.seen["key_window"] >> 31 == k7).any()
    n_open = int((s.seen["key_window"] >> 31 == k7).sum())
    before = s.seen["key_window"].size
    mask = np.zeros(len(s.vocabs.key), dtype=np.bool_)
    mask[k7] = True
    compact(s, {"key": mask})
    assert "acme\x1fkey_07" not in s.vocabs.key.ids
    assert s.seen["key_window"].size == before - n_open
    assert (s.seen["key_window"] >> 31).max() < len(s.vocabs.key)
    assert s.key["bw_n"].size >= len(s.vocabs.key)


def test_an_old_checkpoint_without_the_detectors_state_restores():
    events, _ = stream(attack=True)
    eng, _ = run(events[:3_000])
    d = pickle.loads(eng.state())  # noqa: S301 - our own
    st = d["state"]
    for f in ("behaviour", "behaviour_hist"):
        del st.__dict__[f]
    for name in ("key_window", "key_window_ip"):
        st.seen.pop(name, None)
    for col in [c for c in st.key.spec if c.startswith("bw_")]:
        del st.key.spec[col]
        del st.key.a[col]
    restored = Engine.from_state(pickle.dumps(d))
    assert restored.tables.behaviour == {} and (restored.tables.key["bw_win"] == -1).all()
    run(events[3_000:], restored)


def test_the_pattern_alerts_on_its_closing_event_and_its_twin_does_not():
    for table, want in ((PATTERNS, True), (BENIGN, False)):
        alerts, ids = table["api.behaviour_outlier"]()
        assert bool([a for a in behaviour(alerts) if ids & set(a.evidence.event_ids)]) == want
