"""The detector catalogue: stable names, what they watch, and the techniques they map to.

Tags follow MITRE ATLAS (``atlas:AML.T...``) and the OWASP Top 10 for LLM applications
2025 (``owasp-llm:LLM..``) where one fits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str
    entity_type: str
    title: str
    tags: tuple[str, ...]
    cooldown_s: int = 3600  # one alert per episode: hits less than this apart are folded into it
    engine: bool = True  # raised by the engine; False: by the worker's correlator (detectors/correlation.py)


CATALOG: dict[str, Spec] = {s.name: s for s in (
    Spec("api.auth_failure_burst", "api_usage", "client_ip", "Authentication-failure burst (credential stuffing)",
         ("atlas:AML.T0012", "owasp-llm:LLM10")),
    Spec("api.new_client", "api_usage", "api_key", "API key used from a new client IP or user agent",
         ("atlas:AML.T0012", "atlas:AML.T0055")),
    Spec("api.new_scope", "api_usage", "api_key", "API key used a scope it never used",
         ("atlas:AML.T0012", "owasp-llm:LLM06")),
    Spec("api.rate_burst", "api_usage", "api_key", "Request rate far above the key's baseline",
         ("atlas:AML.T0034", "owasp-llm:LLM10")),
    Spec("api.model_extraction", "api_usage", "api_key", "Sustained, high-diversity inference queries",
         ("atlas:AML.T0024.002", "atlas:AML.T0040", "owasp-llm:LLM10")),
    Spec("api.behaviour_outlier", "api_usage", "api_key",
         "API key's 10-minute behaviour is a multivariate outlier for its tenant",
         ("atlas:AML.T0024", "atlas:AML.T0034", "owasp-llm:LLM10")),
    Spec("data.volume_spike", "data_access", "principal", "Data volume far above the principal's baseline",
         ("atlas:AML.T0025", "owasp-llm:LLM02")),
    Spec("data.volume_drift", "data_access", "principal", "Data volume creeping up day after day",
         ("atlas:AML.T0025", "owasp-llm:LLM02"), cooldown_s=86_400),
    Spec("data.segmentation", "data_access", "principal", "Sensitive data of another department accessed",
         ("atlas:AML.T0025", "owasp-llm:LLM02")),
    Spec("data.off_hours", "data_access", "principal", "Sensitive data accessed off hours",
         ("atlas:AML.T0025", "owasp-llm:LLM02")),
    Spec("data.training_write", "data_access", "principal", "Training data written by an unusual principal",
         ("atlas:AML.T0020", "owasp-llm:LLM04")),
    Spec("data.denied_burst", "data_access", "principal", "Burst of denied data access (probing)",
         ("atlas:AML.T0007", "owasp-llm:LLM02")),
    Spec("agent.untrusted_privileged", "agent_execution", "agent",
         "Privileged agent action driven by untrusted content", ("atlas:AML.T0051.001", "owasp-llm:LLM01",
                                                                   "owasp-llm:LLM06")),
    Spec("agent.approval_bypass", "agent_execution", "agent", "High-risk agent action without approval",
         ("atlas:AML.T0053", "owasp-llm:LLM06")),
    Spec("agent.new_privileged_action", "agent_execution", "agent",
         "Agent took a privileged action its type never takes", ("atlas:AML.T0053", "owasp-llm:LLM06")),
    Spec("agent.runaway", "agent_execution", "agent", "Runaway agent: action rate explosion",
         ("atlas:AML.T0034", "owasp-llm:LLM10")),
    Spec("risk.incident", "cross", "principal", "Risk accumulated across streams",
         ("atlas:AML.T0025",), cooldown_s=21_600),
    Spec("risk.cross_kind", "cross", "principal", "Risk across streams: one principal's alerts in two or more kinds",
         ("atlas:AML.T0025",), cooldown_s=21_600, engine=False),
)}
