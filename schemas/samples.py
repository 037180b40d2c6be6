"""Valid example events of every kind: one of each (:data:`SAMPLES`) and a short stream built from them.

The worker warms the engine's compiled kernels on :func:`sample_stream` before its first real batch, and the
tests mutate :data:`SAMPLES` into valid and invalid variants; both need events that pass the contract
without the simulator.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

SAMPLES: dict[str, dict[str, Any]] = {
    "api_usage": {
        "event_id": "evt-api-1", "kind": "api_usage", "ts": "2026-11-21T13:45:00.123Z", "tenant": "acme",
        "source": "api-gateway", "api_key_id": "key_1", "principal": "ana@acme.example", "client_ip": "10.0.0.1",
        "user_agent": "curl/8", "method": "POST", "endpoint": "/v1/chat/completions", "status": 200,
        "latency_ms": 12.5, "request_bytes": 100, "response_bytes": 200, "auth_result": "ok",
        "scopes_granted": ["inference:chat"], "scope_used": "inference:chat", "model": "llm", "tokens_in": 10,
        "tokens_out": 20,
    },
    "data_access": {
        "event_id": "evt-da-1", "kind": "data_access", "ts": "2026-11-21T13:45:00+01:00", "principal": "ana",
        "principal_department": "hr", "dataset": "hr/payroll", "dataset_owner_department": "hr",
        "sensitivity": "restricted", "operation": "read", "rows": 10, "bytes": 1000, "granted": True,
        "client_ip": "10.0.0.2", "via_agent": "agt-1", "purpose": "audit", "encrypted": True,
    },
    "agent_execution": {
        "event_id": "evt-ag-1", "kind": "agent_execution", "ts": "2026-11-21T13:45:00Z", "agent_id": "agt-1",
        "agent_type": "support-assistant", "session_id": "s1", "principal": "ana", "action": "search_kb",
        "target_system": "kb", "privilege": "read", "risk_level": "low", "approval": "not_required",
        "triggered_by": "user", "untrusted_input": False, "outcome": "success", "duration_ms": 5.0,
        "tokens_in": 1, "tokens_out": 2, "parent_event_id": "evt-ag-0",
    },
}


def sample_stream(per_kind: int = 100, start: datetime = datetime(2026, 11, 21, tzinfo=UTC)) -> list[dict[str, Any]]:
    """``per_kind`` events of every kind varied from :data:`SAMPLES`: a few keys, IPs, models, principals,
    datasets, agents and sessions, with failed logins, denied reads, exports and untrusted input among them.

    The first half is spread over eight hours (the entities' baselines warm up), the second comes a second apart
    (a burst on warmed-up entities), so each kind's detectors run their kernels over it, the burst ones too.
    """
    half = per_kind // 2
    rows: list[dict[str, Any]] = []
    for i in range(per_kind):
        at = start + (timedelta(hours=8) * i / half if i < half else timedelta(hours=8, seconds=i - half))
        ts = at.isoformat().replace("+00:00", "Z")
        rows.append(dict(SAMPLES["api_usage"], event_id=f"sample-api-{i}", ts=ts, api_key_id=f"key_{i % 4}",
                         client_ip=f"10.0.{i % 3}.{i % 7}", model=f"llm-{i % 5}", tokens_in=10 + i % 50,
                         status=401 if i % 9 == 0 else 200, auth_result="invalid_credentials" if i % 9 == 0 else "ok",
                         scope_used="inference:chat" if i % 2 else "files:read",
                         scopes_granted=["inference:chat", "files:read"]))
        rows.append(dict(SAMPLES["data_access"], event_id=f"sample-da-{i}", ts=ts, principal=f"p{i % 5}",
                         dataset=f"hr/set-{i % 6}", rows=10 * (1 + i % 40), granted=i % 11 != 0,
                         operation="export" if i % 13 == 0 else "read"))
        rows.append(dict(SAMPLES["agent_execution"], event_id=f"sample-ag-{i}", ts=ts, agent_id=f"agt-{i % 3}",
                         session_id=f"s{i // 20}", action=("search_kb", "send_email", "run_query")[i % 3],
                         privilege="admin" if i % 17 == 0 else "read", untrusted_input=i % 7 == 0,
                         parent_event_id=f"sample-ag-{i - 1}"))
    return rows
