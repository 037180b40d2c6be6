"""Valid sample events of each kind, for tests to mutate."""

from __future__ import annotations

SAMPLES: dict[str, dict] = {
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

REQUIRED: dict[str, list[str]] = {
    "api_usage": ["event_id", "kind", "ts", "api_key_id", "principal", "client_ip", "method", "endpoint", "status",
                  "auth_result"],
    "data_access": ["event_id", "kind", "ts", "principal", "principal_department", "dataset",
                    "dataset_owner_department", "sensitivity", "operation", "granted"],
    "agent_execution": ["event_id", "kind", "ts", "agent_id", "agent_type", "session_id", "principal", "action",
                        "target_system", "privilege", "approval", "triggered_by", "outcome"],
}

# (kind, field, bad value): each must be rejected with an error naming the field
MISTYPED = [
    ("api_usage", "status", "200"),
    ("api_usage", "status", 200.5),
    ("api_usage", "status", 42),
    ("api_usage", "auth_result", "maybe"),
    ("api_usage", "scopes_granted", "inference:chat"),
    ("api_usage", "tokens_in", -1),
    ("api_usage", "tokens_out", True),
    ("api_usage", "latency_ms", "fast"),
    ("api_usage", "api_key_id", 12),
    ("api_usage", "event_id", "x" * 129),
    ("api_usage", "event_id", ""),
    ("data_access", "granted", "yes"),
    ("data_access", "sensitivity", "secret"),
    ("data_access", "operation", "copy"),
    ("data_access", "rows", 1.5),
    ("data_access", "encrypted", 1),
    ("agent_execution", "privilege", "root"),
    ("agent_execution", "approval", "skipped"),
    ("agent_execution", "triggered_by", "moon"),
    ("agent_execution", "risk_level", "extreme"),
    ("agent_execution", "untrusted_input", "true"),
    ("agent_execution", "ts", "2026-11-21T13:45:00"),
    ("agent_execution", "ts", "2026-11-21 13:45"),
    ("agent_execution", "ts", 1763732700),
    ("agent_execution", "tenant", ""),
]
