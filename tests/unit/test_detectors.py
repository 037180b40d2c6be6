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

    last_ids: set[str] = set()  # event ids of the stream scored last (any instance)

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
        Stream.last_ids = {r["event_id"] for r in rows}
        eng = Engine()
        out = []
        for i in range(0, len(events), batch):
            out += eng.process(events[i: i + batch])
        return out


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
def _night(ip: str, minimal: bool = False, reads: int = 3) -> tuple[list, set[str]]:
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
    ids = {s.data(T0 + timedelta(days=3, hours=3, minutes=i), "p0", "finance/ledger", 60, ip=ip)
           for i in range(reads)}
    return s.run(minimal=minimal), ids


def test_night_read_from_a_new_ip_is_caught():
    alerts, ids = _night("203.0.113.7")
    hits = _hits(alerts, "data.off_hours", ids)
    assert hits and hits[0].entity == "p0"


def test_night_read_from_the_usual_ip_is_not_alerted():
    """One read alone, from the usual address (a run of them a minute apart is caught: test_family_data3)."""
    alerts, ids = _night("10.0.0.1", reads=1)
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


def _helper_sessions() -> Stream:
    """400 normal sessions of 3 to 10 steps of four helper agents."""
    rng = np.random.default_rng(2)
    s = Stream()
    for i in range(400):
        t = T0 + timedelta(minutes=15 * i)
        for j in range(int(rng.integers(3, 11))):
            s.agent(t + timedelta(seconds=5 * j), f"agt{i % 4}", f"s{i}")
    return s


def _runaway(minimal: bool = False) -> tuple[list, set[str]]:
    """Normal sessions of four helper agents, then one session looping 200 steps in 200 seconds."""
    s = _helper_sessions()
    when = T0 + timedelta(days=5)
    ids = {s.agent(when + timedelta(seconds=j), "agt0", "loop") for j in range(200)}
    return s.run(minimal=minimal), ids


def test_normal_sessions_are_not_runaway():
    assert not _hits(_helper_sessions().run(), "agent.runaway")


# -- shared warm-up histories ------------------------------------------------------------------
def _key_history(s: Stream, rng: np.random.Generator, key: str, days: int = 3, per_day: int = 15) -> None:
    """A key's ordinary use: `per_day` chat requests a working day, from its one client (warm after a day)."""
    for day in range(days):
        for _ in range(per_day):
            s.api(_work(rng, day), key, "inference:chat")


def _reads(s: Stream, rng: np.random.Generator, principal: str, dataset: str, *, days: int = 5, per_day: int = 6,
           dept: str = "finance", owner: str = "finance", sensitivity: str = "confidential") -> None:
    """A principal's ordinary reads of one dataset: about 100 rows each, in working hours."""
    for day in range(days):
        for _ in range(per_day):
            s.data(_work(rng, day), principal, dataset, int(100 * rng.lognormal(0.0, 0.5)) + 1, dept=dept,
                   owner=owner, sensitivity=sensitivity)


def _agent_history(s: Stream, sessions: int = 60) -> None:
    """Helper agents' ordinary sessions (300 steps: the agent type is warm): search, read an e-mail (untrusted
    content), update a ticket (a write), and now and then an approved high-risk refund."""
    for i in range(sessions):
        t = T0 + timedelta(days=i % 3, hours=9 + (i // 3) * 0.4)
        a, sid, p = f"agt{i % 4}", f"s{i}", f"p{i % 5}"
        s.agent(t, a, sid, principal=p)
        s.agent(t + timedelta(seconds=5), a, sid, "read_email", principal=p, untrusted_input=True)
        s.agent(t + timedelta(seconds=10), a, sid, principal=p)
        s.agent(t + timedelta(seconds=15), a, sid, "update_ticket", principal=p, target="tickets", privilege="write",
                risk_level="medium")
        if i % 6 == 0:
            s.agent(t + timedelta(seconds=20), a, sid, "refund", principal=p, target="billing", privilege="write",
                    risk_level="high", approval="approved")
        else:
            s.agent(t + timedelta(seconds=20), a, sid, principal=p)


def _first_hit(alerts, detector: str, ids: set[str], entity: str):
    hits = _hits(alerts, detector, ids)
    assert hits, f"{detector} did not alert on the injected events"
    assert hits[0].entity == entity
    assert ids & set(hits[0].evidence.event_ids)
    return hits[0]


# -- api.new_client: a warm key used from a new IP and user agent ------------------------------
def _new_client(ip: str, ua: str, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(11)
    s = Stream()
    _key_history(s, rng, "k")
    _key_history(s, rng, "other")
    t = T0 + timedelta(days=3, hours=10)
    ids = {s.api(t + timedelta(seconds=30 * i), "k", "inference:chat", ip=ip, user_agent=ua) for i in range(3)}
    return s.run(minimal=minimal), ids


def test_warm_key_used_from_a_new_client_is_caught():
    alerts, ids = _new_client("198.51.100.9", "curl/8.5")
    hit = _first_hit(alerts, "api.new_client", ids, "k")
    assert hit.entity_type == "api_key" and "198.51.100.9" in hit.explanation


def test_warm_key_used_from_its_usual_client_is_not_alerted():
    alerts, _ = _new_client("10.1.0.1", "sdk/1.0")
    assert not _hits(alerts, "api.new_client")


# -- api.auth_failure_burst: credential stuffing from one IP -----------------------------------
def _stuffing(spacing_s: float, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(12)
    s = Stream()
    for k in range(5):
        _key_history(s, rng, f"key{k}", per_day=10)
    t = T0 + timedelta(days=3, hours=10)
    ids = {s.api(t + timedelta(seconds=spacing_s * i), f"guess{i % 7}", "inference:chat", ip="203.0.113.5",
                 user_agent="python-requests/2.31", auth_result="invalid_credentials") for i in range(40)}
    return s.run(minimal=minimal), ids


def test_burst_of_auth_failures_from_one_ip_is_caught():
    alerts, ids = _stuffing(1.0)
    hit = _first_hit(alerts, "api.auth_failure_burst", ids, "203.0.113.5")
    assert hit.entity_type == "client_ip"


def test_the_same_failures_spread_over_hours_are_not_a_burst():
    alerts, _ = _stuffing(600.0)  # a client retrying a stale key every 10 minutes
    assert not _hits(alerts, "api.auth_failure_burst")


# -- api.rate_burst: a key's request rate far above its baseline --------------------------------
def _rate(spacing_s: float, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(13)
    s = Stream()
    _key_history(s, rng, "k")
    t = T0 + timedelta(days=3, hours=10)
    ids = {s.api(t + timedelta(seconds=spacing_s * i), "k", "inference:chat") for i in range(120)}
    return s.run(minimal=minimal), ids


def test_request_burst_far_above_the_keys_baseline_is_caught():
    alerts, ids = _rate(3.0)  # 120 requests in 6 minutes, against ~15 a day
    _first_hit(alerts, "api.rate_burst", ids, "k")
    assert not _hits(alerts, "api.model_extraction"), "one model at a high rate is a burst, not extraction"


def test_the_same_requests_over_a_working_day_are_not_a_burst():
    alerts, _ = _rate(240.0)  # 120 requests over 8 hours
    assert not _hits(alerts, "api.rate_burst")


# -- data.volume_spike: one read far above the principal's usual volume -------------------------
def _spike(rows: int, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(14)
    s = Stream()
    _reads(s, rng, "ana", "finance/ledger")
    _reads(s, rng, "ben", "finance/ledger")
    ids = {s.data(T0 + timedelta(days=5, hours=10), "ana", "finance/ledger", rows)}
    return s.run(minimal=minimal), ids


def test_read_far_above_the_principals_volume_is_caught():
    alerts, ids = _spike(400_000)
    hit = _first_hit(alerts, "data.volume_spike", ids, "ana")
    assert hit.entity_type == "principal"


def test_read_at_the_usual_volume_is_not_a_spike():
    alerts, _ = _spike(120)
    assert not _hits(alerts, "data.volume_spike")


# -- data.segmentation: another department's sensitive data, new to the principal's department ---
def _segmentation(dataset: str, owner: str, sensitivity: str, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(15)
    s = Stream()
    _reads(s, rng, "bob", "marketing/campaigns", days=3, per_day=8, dept="marketing", owner="marketing")
    # a colleague of bob's reads finance's budget every day: the department's established cross-team use
    _reads(s, rng, "carol", "finance/budget", days=3, per_day=8, dept="marketing", owner="finance")
    _reads(s, rng, "hana", "hr/payroll", days=3, dept="hr", owner="hr", sensitivity="restricted")
    ids = {s.data(T0 + timedelta(days=3, hours=11), "bob", dataset, 80, dept="marketing", owner=owner,
                  sensitivity=sensitivity)}
    return s.run(minimal=minimal), ids


def test_sensitive_data_of_another_department_nobody_in_yours_touched_is_caught():
    alerts, ids = _segmentation("hr/payroll", "hr", "restricted")
    _first_hit(alerts, "data.segmentation", ids, "bob")


def test_another_departments_data_your_department_already_uses_is_not_segmentation():
    alerts, _ = _segmentation("finance/budget", "finance", "confidential")
    assert not _hits(alerts, "data.segmentation")


# -- data.training_write: a writer from outside the owning department on a training pipeline -----
def _training(writer: str, dept: str, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(16)
    s = Stream()
    for day in range(3):  # the pipeline writes training data; the team reads it
        for _ in range(4):
            s.data(_work(rng, day), "etl", "ml/train-set", 1000, dept="ml", owner="ml", op="write",
                   purpose="model-training")
        s.data(_work(rng, day), "ml-eng", "ml/train-set", 200, dept="ml", owner="ml")
        s.data(_work(rng, day), "mallory", "sales/leads", 50, dept="sales", owner="sales")
    ids = {s.data(T0 + timedelta(days=3, hours=10), writer, "ml/train-set", 500, dept=dept, owner="ml", op="write")}
    return s.run(minimal=minimal), ids


def test_write_to_training_data_from_outside_its_department_is_caught():
    alerts, ids = _training("mallory", "sales")
    _first_hit(alerts, "data.training_write", ids, "mallory")


def test_write_to_training_data_by_its_own_team_is_not_alerted():
    alerts, _ = _training("ml-eng", "ml")
    assert not _hits(alerts, "data.training_write")


# -- data.denied_burst: probing ------------------------------------------------------------------
def _denied(spacing_s: float, minimal: bool = False) -> tuple[list, set[str]]:
    rng = np.random.default_rng(17)
    s = Stream()
    _reads(s, rng, "eve", "finance/ledger")
    t = T0 + timedelta(days=5, hours=10)
    ids = {s.data(t + timedelta(seconds=spacing_s * i), "eve", f"hr/file{i}", 0, owner="hr",
                  sensitivity="restricted", granted=False) for i in range(8)}
    return s.run(minimal=minimal), ids


def test_burst_of_denied_access_is_caught():
    alerts, ids = _denied(10.0)  # 8 denials in 70 seconds
    _first_hit(alerts, "data.denied_burst", ids, "eve")


def test_occasional_denials_are_not_a_burst():
    alerts, _ = _denied(7200.0)  # 8 denials over 14 hours
    assert not _hits(alerts, "data.denied_burst")


# -- agent.approval_bypass ------------------------------------------------------------------------
def _bypass(approval: str, minimal: bool = False) -> tuple[list, set[str]]:
    s = Stream()
    _agent_history(s)
    ids = {s.agent(T0 + timedelta(days=3, hours=10), "agt1", "x1", "refund", target="billing", privilege="write",
                   risk_level="high", approval=approval)}
    return s.run(minimal=minimal), ids


def test_high_risk_action_with_approval_bypassed_is_caught():
    alerts, ids = _bypass("bypassed")
    hit = _first_hit(alerts, "agent.approval_bypass", ids, "agt1")
    assert hit.entity_type == "agent"


def test_approved_high_risk_action_is_not_alerted():
    alerts, _ = _bypass("approved")
    assert not _hits(alerts, "agent.approval_bypass")


# -- agent.untrusted_privileged: prompt injection --------------------------------------------------
def _untrusted_trigger(triggered_by: str, minimal: bool = False) -> tuple[list, set[str]]:
    s = Stream()
    _agent_history(s)
    ids = {s.agent(T0 + timedelta(days=3, hours=10), "agt2", "x2", "update_ticket", target="tickets",
                   privilege="write", risk_level="medium", triggered_by=triggered_by)}
    return s.run(minimal=minimal), ids


def test_the_same_action_triggered_by_the_user_is_not_alerted():
    alerts, _ = _untrusted_trigger("user")
    assert not _hits(alerts, "agent.untrusted_privileged")


def _untrusted_session(action: str, minimal: bool = False) -> tuple[list, set[str]]:
    s = Stream()
    _agent_history(s)
    t = T0 + timedelta(days=3, hours=10)
    s.agent(t, "agt3", "x3", "read_email", untrusted_input=True)
    ids = {s.agent(t + timedelta(seconds=5), "agt3", "x3", action, target="crm", privilege="write",
                   risk_level="medium")}
    return s.run(minimal=minimal), ids


def test_a_routine_write_after_untrusted_input_is_not_alerted():
    alerts, _ = _untrusted_session("update_ticket")
    assert not _hits(alerts, "agent.untrusted_privileged")


# -- agent.new_privileged_action ------------------------------------------------------------------
def _new_action(action: str, privilege: str, minimal: bool = False) -> tuple[list, set[str]]:
    s = Stream()
    _agent_history(s)
    ids = {s.agent(T0 + timedelta(days=3, hours=10), "agt2", "x4", action, target="db", privilege=privilege,
                   risk_level="medium", approval="approved")}
    return s.run(minimal=minimal), ids


def test_privileged_action_the_agent_type_takes_routinely_is_not_alerted():
    alerts, _ = _new_action("update_ticket", "write")
    assert not _hits(alerts, "agent.new_privileged_action")


# -- risk.incident: one principal's signals across streams ------------------------------------------
def _incident(approval: str, minimal: bool = False) -> tuple[list, set[str]]:
    """ana's one bulk read, then half an hour later an agent acting for her runs a high-risk refund."""
    rng = np.random.default_rng(21)
    s = Stream()
    _reads(s, rng, "ana", "finance/ledger")
    _agent_history(s)
    t = T0 + timedelta(days=5, hours=10)
    ids = {s.data(t, "ana", "finance/ledger", 400_000),
           s.agent(t + timedelta(minutes=30), "agt1", "x5", "refund", principal="ana", target="billing",
                   privilege="write", risk_level="high", approval=approval)}
    return s.run(minimal=minimal), ids


def test_signals_of_two_detectors_on_one_principal_make_an_incident():
    alerts, ids = _incident("bypassed")
    hit = _first_hit(alerts, "risk.incident", ids, "ana")
    assert hit.entity_type == "principal" and hit.kind == "cross"
    assert {"data.volume_spike", "agent.approval_bypass"} <= {a.detector for a in alerts}


def test_one_detectors_alert_alone_is_not_an_incident():
    alerts, _ = _incident("approved")
    assert _hits(alerts, "data.volume_spike")
    assert not _hits(alerts, "risk.incident")


def _api_family(name: str):
    """A pattern of the API family's own tests (tests/unit/test_family_api.py), imported when first used."""
    import tests.unit.test_family_api as api

    return getattr(api, name)


# -- conformance: every detector that is on by default ----------------------------------------------
def _agent_family():
    """The agent family's patterns (tests/unit/test_family_agent.py, which imports this module's helpers)."""
    from tests.unit import test_family_agent

    return test_family_agent


PATTERNS = {  # detector -> its injected pattern: (minimal) -> (alerts, injected event ids)
    "api.new_client": lambda m: _new_client("198.51.100.9", "curl/8.5", m),
    "api.new_scope": lambda m: _scope("admin:keys", m),
    "api.auth_failure_burst": lambda m: _stuffing(1.0, m),
    "api.rate_burst": lambda m: _rate(3.0, m),
    "api.model_extraction": lambda m: _extraction(["llm-small", "llm-large", "code-llm", "embed", "moderation"],
                                                  m)[:2],
    "data.volume_spike": lambda m: _spike(400_000, m),
    "data.volume_drift": lambda m: _drip(True, m)[:2],
    "data.segmentation": lambda m: _segmentation("hr/payroll", "hr", "restricted", m),
    "data.off_hours": lambda m: _night("203.0.113.7", m),
    "data.training_write": lambda m: _training("mallory", "sales", m),
    "data.denied_burst": lambda m: _denied(10.0, m),
    "agent.untrusted_privileged": lambda m: _agent_family().injection(("create_api_key", "export_contacts",
                                                                       "read_secrets"), m),
    "agent.approval_bypass": lambda m: _bypass("bypassed", m),
    "agent.new_privileged_action": lambda m: _agent_family().injection(("create_api_key", "export_contacts",
                                                                        "read_secrets"), m),
    "agent.runaway": lambda m: _runaway(m),
    "agent.tool_loop": lambda m: _agent_family().loop(True, m),
    "risk.incident": lambda m: _incident("bypassed", m),
    "api.auth_failure_spread": lambda m: _api_family("spread_pattern")(m),
    "api.denial_of_wallet": lambda m: _api_family("wallet_pattern")(m),
    "api.unknown_key": lambda m: _api_family("unknown_pattern")(m),
}



BENIGN = {  # detector -> its pattern's benign twin: () -> (alerts, the twin's event ids; None: the whole stream)
    "api.new_client": lambda: (_new_client("10.1.0.1", "sdk/1.0")[0], None),
    "api.new_scope": lambda: _scope("models:read"),
    "api.auth_failure_burst": lambda: (_stuffing(600.0)[0], None),
    "api.rate_burst": lambda: (_rate(240.0)[0], None),
    "api.model_extraction": lambda: _extraction(["llm-small"])[:2],
    "data.volume_spike": lambda: (_spike(120)[0], None),
    "data.volume_drift": lambda: (_drip(False)[0], None),
    "data.segmentation": lambda: (_segmentation("finance/budget", "finance", "confidential")[0], None),
    "data.off_hours": lambda: _night("10.0.0.1", reads=1),
    "data.training_write": lambda: (_training("ml-eng", "ml")[0], None),
    "data.denied_burst": lambda: (_denied(7200.0)[0], None),
    "agent.untrusted_privileged": lambda: (_agent_family().untrusted_work()[0], None),
    "agent.approval_bypass": lambda: (_bypass("approved")[0], None),
    "agent.new_privileged_action": lambda: (_new_action("update_ticket", "write")[0], None),
    "agent.runaway": lambda: (_helper_sessions().run(), None),
    "agent.tool_loop": lambda: (_agent_family().loop(False)[0], None),
    "risk.incident": lambda: (_incident("approved")[0], None),
    "api.auth_failure_spread": lambda: _api_family("spread_pattern")(minutes=4 * 24 * 60, tries=6),
    "api.denial_of_wallet": lambda: _api_family("wallet_pattern")(scale=1.0),
    "api.unknown_key": lambda: _api_family("unknown_pattern")(hour=11.0),
}
# risk.cross_kind is the worker's correlator's (tests/unit/test_correlation.py), not the engine's
ON_BY_DEFAULT = [d for d, spec in CATALOG.items()
                 if spec.engine and (d != "api.behaviour_outlier" or EngineConfig().behaviour)]
# detectors whose pattern is carried by an optional field: without it there is nothing to see
NEEDS_OPTIONAL = {
    "api.new_client": "user_agent (a new IP alone, on a short history, is not rare enough for the key)",
    "api.denial_of_wallet": "tokens_in / tokens_out",
    "api.new_scope": "scope_used",
    "api.model_extraction": "model",
    "data.volume_spike": "rows",
    "data.volume_drift": "rows",
    "data.off_hours": "client_ip (the read comes from a new IP)",
    "data.training_write": "purpose (what marks the dataset as training data here; operation 'train' would too)",
    "agent.approval_bypass": "risk_level",
    "agent.untrusted_privileged": "untrusted_input (the sessions' untrusted context its type's habits are learned in)",
    "risk.incident": "rows and risk_level (its two signals)",
}


def test_every_detector_on_by_default_has_a_pattern():
    assert set(PATTERNS) == set(ON_BY_DEFAULT)
    assert set(NEEDS_OPTIONAL) <= set(PATTERNS)
    assert set(BENIGN) == set(PATTERNS)


@pytest.mark.parametrize("detector", ON_BY_DEFAULT)
def test_benign_twins_stay_quiet(detector):
    alerts, ids = BENIGN[detector]()
    assert not _hits(alerts, detector, ids)


def _check_contract(alerts) -> None:
    """Every alert names its detector's kind and entity type, explains itself, scores in [0, 1] and points at
    events of the stream that was scored."""
    for a in alerts:
        assert a.detector in CATALOG and a.kind == CATALOG[a.detector].kind
        assert a.entity and a.entity_type == CATALOG[a.detector].entity_type
        assert a.explanation.strip() and a.title
        assert 0.0 <= a.score <= 1.0
        assert a.evidence.event_ids and a.evidence.features
        assert set(a.evidence.event_ids) <= Stream.last_ids


@pytest.mark.parametrize("detector", ON_BY_DEFAULT)
def test_pattern_alerts_meet_the_contract(detector):
    alerts, ids = PATTERNS[detector](False)
    hits = _hits(alerts, detector, ids)
    assert hits
    _check_contract(alerts)


@pytest.mark.parametrize("detector", ON_BY_DEFAULT)
def test_missing_optional_fields_are_tolerated(detector):
    """The same stream with every optional field of the contract omitted scores without error; the alerts
    it raises keep the contract, and a pattern that does not live in an optional field is still caught."""
    alerts, ids = PATTERNS[detector](True)
    _check_contract(alerts)
    if detector not in NEEDS_OPTIONAL:
        assert _hits(alerts, detector, ids), f"{detector} needs no optional field, yet missed its pattern"
