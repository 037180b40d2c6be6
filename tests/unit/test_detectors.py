"""Detectors on small synthetic streams: the pattern alerts on the right entity, its benign twin does not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest

from detectors.catalog import CATALOG
from detectors.engine import Engine, EngineConfig
from schemas.events import EVENT_TYPES, decode

T0 = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
# the contract's optional fields of each event kind (tenant and source of the envelope included)
OPTIONAL = {kind: {f.encode_name for f in msgspec.structs.fields(cls) if not f.required}
            for kind, cls in EVENT_TYPES.items()}


def _ts(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Stream:
    """Builds events of one tenant; ``run`` scores them in time order and returns the alerts."""

    def __init__(self) -> None:
        self.rows: list[tuple[datetime, dict]] = []

    def data(self, t: datetime, principal: str, dataset: str, rows: int, *, dept: str = "finance",
             owner: str = "finance", sensitivity: str = "confidential", ip: str = "10.0.0.1",
             op: str = "read", granted: bool = True, purpose: str | None = None) -> str:
        eid = f"d{len(self.rows)}"
        row = {"event_id": eid, "kind": "data_access", "ts": _ts(t), "tenant": "acme", "principal": principal,
               "principal_department": dept, "dataset": dataset, "dataset_owner_department": owner,
               "sensitivity": sensitivity, "operation": op, "rows": rows, "bytes": rows * 100, "granted": granted,
               "client_ip": ip}
        if purpose:
            row["purpose"] = purpose
        self.rows.append((t, row))
        return eid

    def api(self, t: datetime, key: str, scope: str, *, model: str | None = "llm-small",
            endpoint: str = "/v1/chat/completions", granted: tuple[str, ...] = (), ip: str = "10.1.0.1",
            user_agent: str = "sdk/1.0", auth_result: str = "ok") -> str:
        eid = f"a{len(self.rows)}"
        row = {"event_id": eid, "kind": "api_usage", "ts": _ts(t), "tenant": "acme", "api_key_id": key,
               "principal": f"owner-of-{key}", "client_ip": ip, "user_agent": user_agent, "method": "POST",
               "endpoint": endpoint, "status": 200 if auth_result == "ok" else 401, "auth_result": auth_result,
               "scopes_granted": sorted({scope, *granted}), "scope_used": scope}
        if model:
            row |= {"model": model, "tokens_in": 10, "tokens_out": 20}
        self.rows.append((t, row))
        return eid

    def agent(self, t: datetime, agent: str, session: str, action: str = "search", *, agent_type: str = "helper",
              principal: str = "p", target: str = "kb", privilege: str = "read", risk_level: str = "low",
              approval: str = "not_required", triggered_by: str = "user", untrusted_input: bool = False) -> str:
        eid = f"g{len(self.rows)}"
        self.rows.append((t, {
            "event_id": eid, "kind": "agent_execution", "ts": _ts(t), "tenant": "acme", "agent_id": agent,
            "agent_type": agent_type, "session_id": session, "principal": principal, "action": action,
            "target_system": target, "privilege": privilege, "risk_level": risk_level, "approval": approval,
            "triggered_by": triggered_by, "untrusted_input": untrusted_input, "outcome": "success"}))
        return eid

    def run(self, batch: int = 997, *, minimal: bool = False) -> list:
        """Score the stream; ``minimal`` drops every optional field of the contract from every event first."""
        rows = [r for _, r in sorted(self.rows, key=lambda x: x[0])]
        if minimal:
            rows = [{k: v for k, v in r.items() if k not in OPTIONAL[r["kind"]]} for r in rows]
        events = [decode(json.dumps(r).encode()) for r in rows]
        eng = Engine()
        out = []
        for i in range(0, len(events), batch):
            out += eng.process(events[i: i + batch])
        return out

    def ids(self) -> set[str]:
        return {r["event_id"] for _, r in self.rows}


def _work(rng: np.random.Generator, day: int) -> datetime:
    return T0 + timedelta(days=day, hours=float(rng.uniform(9, 17)))


def _hits(alerts, detector: str, ids: set[str] | None = None) -> list:
    return [a for a in alerts if a.detector == detector and (ids is None or ids & set(a.evidence.event_ids))]


# -- data.volume_drift -------------------------------------------------------------------------
def _drip(grow: bool, minimal: bool = False) -> tuple[list, set[str], datetime]:
    """A week of a principal's normal reads of one dataset, then four extra reads a day for five days."""
    rng = np.random.default_rng(5)
    s = Stream()
    for day in range(12):
        for _ in range(6):
            s.data(_work(rng, day), "ana", "finance/ledger", int(100 * rng.lognormal(0.0, 0.5)) + 1)
    extra: set[str] = set()
    for d in range(5):
        for _ in range(4):
            rows = 200 * 1.4 ** d * rng.uniform(0.8, 1.2) if grow else 100 * rng.lognormal(0.0, 0.5)
            extra.add(s.data(_work(rng, 7 + d), "ana", "finance/ledger", int(rows) + 1))
    return s.run(minimal=minimal), extra, T0 + timedelta(days=7)


def test_slow_drip_growing_a_little_each_day_is_still_caught():
    """Poisoning resistance: reads that grow ~40% a day are not learned as the new normal."""
    alerts, extra, start = _drip(grow=True)
    hits = _hits(alerts, "data.volume_drift", extra)
    assert hits and hits[0].entity == "ana"
    # honest bound: six normal reads a day dilute the drip; it is caught by its fourth day, not within one
    assert datetime.fromisoformat(hits[0].first_seen.replace("Z", "+00:00")) < start + timedelta(days=4)


def test_extra_reads_at_the_usual_volume_are_not_drift():
    alerts, _, _ = _drip(grow=False)
    assert not _hits(alerts, "data.volume_drift")


# -- api.new_scope: a young key starts from its peers' baseline --------------------------------
def _scope(scope: str, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(3)
    s = Stream()
    for k in range(25):  # 25 peer keys: chat, and a fifth of them also list models
        for day in range(3):
            for _ in range(5):
                s.api(_work(rng, day), f"key{k}", "inference:chat")
            if k % 5 == 0:
                s.api(_work(rng, day), f"key{k}", "models:read", model=None, endpoint="/v1/models")
    for h in range(12):  # a young key: 12 requests over a day
        s.api(T0 + timedelta(days=1, hours=2 * h), "young", "inference:chat", granted=("admin:keys", "models:read"))
    t = T0 + timedelta(days=2, hours=10)
    ids = {s.api(t + timedelta(seconds=20 * i), "young", scope, model=None, endpoint="/v1/x",
                 granted=("admin:keys", "models:read")) for i in range(3)}
    return s.run(minimal=minimal), ids


def test_young_key_using_a_scope_no_peer_uses_is_caught():
    alerts, ids = _scope("admin:keys")
    hits = _hits(alerts, "api.new_scope", ids)
    assert hits and hits[0].entity == "young"


def test_young_key_using_a_scope_its_peers_use_is_not_news():
    alerts, ids = _scope("models:read")
    assert not _hits(alerts, "api.new_scope", ids)


# -- data.off_hours: a rich profile judges itself, a service-heavy tenant does not hide the night ----
def _night(ip: str, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(9)
    s = Stream()
    for day in range(3):
        for p in range(20):
            for _ in range(8):
                s.data(_work(rng, day), f"p{p}", "finance/ledger", 50)
        for h in range(24):  # a service account, busy around the clock: the tenant's nights are not empty
            for m in range(0, 60, 10):
                s.data(T0 + timedelta(days=day, hours=h, minutes=m), "svc", "finance/ledger", 500,
                       ip="10.9.9.9", sensitivity="internal")
    s.data(T0 + timedelta(days=1, hours=20), "p0", "finance/ledger", 50)  # one stray late evening
    ids = {s.data(T0 + timedelta(days=3, hours=3, minutes=i), "p0", "finance/ledger", 60, ip=ip) for i in range(3)}
    return s.run(minimal=minimal), ids


def test_night_read_from_a_new_ip_is_caught():
    alerts, ids = _night("203.0.113.7")
    hits = _hits(alerts, "data.off_hours", ids)
    assert hits and hits[0].entity == "p0"


def test_night_read_from_the_usual_ip_is_not_alerted():
    alerts, ids = _night("10.0.0.1")
    assert not _hits(alerts, "data.off_hours", ids)


# -- api.model_extraction: diversity shows before the rate -------------------------------------
def _extraction(models: list[str], minimal: bool = False) -> tuple[list, set[str], datetime]:
    rng = np.random.default_rng(4)
    s = Stream()
    for day in range(2):
        for _ in range(12):
            s.api(_work(rng, day), "k", "inference:chat")
    t = T0 + timedelta(days=2, hours=11)
    ids = set()
    for i in range(40):  # ~13 a minute
        t += timedelta(seconds=float(rng.exponential(4.5)))
        ids.add(s.api(t, "k", "inference:chat", model=models[i % len(models)]))
    return s.run(minimal=minimal), ids, T0 + timedelta(days=2, hours=11)


def test_queries_across_models_are_flagged_within_a_minute():
    alerts, ids, start = _extraction(["llm-small", "llm-large", "code-llm", "embed", "moderation"])
    hits = _hits(alerts, "api.model_extraction", ids)
    assert hits and hits[0].entity == "k"
    assert datetime.fromisoformat(hits[0].first_seen.replace("Z", "+00:00")) <= start + timedelta(seconds=60)


def test_a_fast_run_on_the_keys_own_model_is_not_extraction():
    alerts, ids, _ = _extraction(["llm-small"])
    assert not _hits(alerts, "api.model_extraction", ids)


# -- agent.runaway: one runaway session does not make the next one look normal ------------------
def test_a_second_runaway_session_of_the_same_agent_type_is_caught_as_early():
    rng = np.random.default_rng(2)
    s = Stream()
    for i in range(400):  # normal sessions of 3 to 10 steps
        t = T0 + timedelta(minutes=15 * i)
        for j in range(int(rng.integers(3, 11))):
            s.agent(t + timedelta(seconds=5 * j), f"agt{i % 4}", f"s{i}")
    firsts = []
    for n, when in enumerate((T0 + timedelta(days=5), T0 + timedelta(days=5, hours=6))):
        ids = {s.agent(when + timedelta(seconds=j), f"agt{n}", f"loop{n}") for j in range(200)}
        firsts.append((ids, when))
    alerts = s.run()
    for ids, when in firsts:
        hits = _hits(alerts, "agent.runaway", ids)
        assert hits, "both runaway sessions alert"
        assert datetime.fromisoformat(hits[0].first_seen.replace("Z", "+00:00")) <= when + timedelta(seconds=40)


def test_normal_sessions_are_not_runaway():
    rng = np.random.default_rng(2)
    s = Stream()
    for i in range(400):
        t = T0 + timedelta(minutes=15 * i)
        for j in range(int(rng.integers(3, 11))):
            s.agent(t + timedelta(seconds=5 * j), f"agt{i % 4}", f"s{i}")
    assert not _hits(s.run(), "agent.runaway")
