"""Each kind's required fields and mistyped values, for tests to mutate the valid samples with
(``schemas.samples.SAMPLES``)."""

from __future__ import annotations

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
