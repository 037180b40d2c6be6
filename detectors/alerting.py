"""Findings to alerts: one alert per episode (cooldowns), alert building, and principal names.

A stage returns ``Finding``s, one per detector hit on an event. The engine sorts a batch's
findings into arrival order and ``emit`` turns them into alerts: the first hit of a
(detector, entity, tenant) opens an episode and becomes an alert; a hit within the detector's
cooldown of the episode's latest hit extends the episode and folds into its alert (evidence,
last-seen time, highest score). After each new alert, the families' escalation hooks run (the
risk family's ``risk.incident``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.columns import SEP
from schemas.alerts import SEVERITIES, Alert, Evidence, Feature, Severity, alert_id, severity_of

if TYPE_CHECKING:
    from detectors.registry import Spec
    from detectors.state import State

# (finding) -> (an escalated finding, its tags), or None
Escalation = Callable[[Any, "Finding"], "tuple[Finding, list[str]] | None"]


@dataclass
class Finding:
    """A detector hit on one event, before cooldown and alert building."""

    detector: str
    kind: str
    tenant: int
    entity: str
    ts: int
    seq: int  # position of the event in the input batch (arrival order)
    event_id: str
    principal: int
    score: float
    features: list[Feature]
    explanation: str
    surprise: float | None = None  # -log10 of the tail probability under the entity's model (detectors.calibration)
    cap: Severity | None = None  # the highest severity this finding may have (e.g. "info": a control that worked)


def emit(findings: list[Finding], tables: State, catalog: Mapping[str, Spec], max_evidence: int,
         escalations: list[tuple[Any, Escalation]], principals: dict[str, str], learning_ms: int = 0) -> list[Alert]:
    """Alerts of a batch's findings (in arrival order), folding hits within a cooldown into their episode.

    ``escalations``: (context, hook) pairs run after each new alert above ``info``, whose findings become
    alerts too; ``principals`` gets alert id -> principal name of every alert. A tenant's first
    ``learning_ms`` of event time is its learning period: its findings become ``info`` alerts (stored and
    shown, never paged, never escalated), so a newly deployed engine does not page on its first night.
    """
    open_: dict[tuple[str, str, int], Alert] = {}
    out: list[Alert] = []
    cooldown = tables.cooldown
    for f in findings:
        if learning_ms and f.ts - tables.tenant_start.get(f.tenant, f.ts) < learning_ms:
            f.cap = "info"
        key = (f.detector, f.entity, f.tenant)
        last = cooldown.get(key)
        if last is not None and f.ts - last < catalog[f.detector].cooldown_s * 1000:
            # one alert per episode: a hit within the cooldown extends it, so the tail of a long burst
            # (a decayed rate still above threshold after the attack stopped) is not a fresh alert
            cooldown[key] = max(last, f.ts)
            cur = open_.get(key)
            if cur is not None:  # fold later hits of this batch into its open alert
                cur.last_seen = iso(max(f.ts, last))
                if len(cur.evidence.event_ids) < max_evidence:
                    cur.evidence.event_ids.append(f.event_id)
                cur.score = max(cur.score, round(f.score, 3))
                cur.severity = max(cur.severity, capped(f.score, f.cap), key=SEVERITIES.index)
            continue
        cooldown[key] = f.ts
        a = build_alert(f, tables, catalog)
        open_[key] = a
        out.append(a)
        name = principal_name(tables, f.principal)
        if name:
            principals[a.alert_id] = name
        if a.severity == "info":
            continue
        for context, hook in escalations:
            raised = hook(context, f)
            if raised is None:
                continue
            inc, tags = raised
            alert = build_alert(inc, tables, catalog)
            alert.tags = tags
            out.append(alert)
            if inc.entity:
                principals[alert.alert_id] = inc.entity
            open_[(inc.detector, inc.entity, inc.tenant)] = alert
    return out


def build_alert(f: Finding, tables: State, catalog: Mapping[str, Spec]) -> Alert:
    """The alert a finding opens: its detector's catalogue row, the finding's evidence."""
    spec = catalog[f.detector]
    tenant = tables.vocabs.tenant.names[f.tenant]
    return Alert(
        alert_id=alert_id(spec.name, tenant, f.entity, f.event_id), tenant=tenant, detector=spec.name,
        kind=spec.kind, entity_type=spec.entity_type, entity=f.entity, severity=capped(f.score, f.cap),
        score=round(f.score, 3), first_seen=iso(f.ts), last_seen=iso(f.ts), title=spec.title,
        explanation=f.explanation, evidence=Evidence(features=f.features, event_ids=[f.event_id]),
        tags=list(spec.tags))


def capped(score: float, cap: Severity | None) -> Severity:
    """The severity of a score, at most ``cap``."""
    sev = severity_of(score)
    return sev if cap is None or SEVERITIES.index(sev) <= SEVERITIES.index(cap) else cap


def principal_name(tables: State, principal: int) -> str:
    """The name of a principal id (without its tenant), '' if it has none."""
    names = tables.vocabs.principal.names
    return names[principal].split(SEP, 1)[1] if 0 <= principal < len(names) else ""


def iso(ts_ms: int) -> str:
    """An event time in milliseconds as ISO 8601 UTC with milliseconds (how alerts write times)."""
    return str(np.datetime_as_string(np.datetime64(int(ts_ms), "ms"), unit="ms", timezone="UTC"))
