"""Findings to alerts: one alert per episode (cooldowns), alert building, and principal names.

A stage returns ``Finding``s, one per detector hit on an event. The engine sorts a batch's
findings into arrival order and ``emit`` turns them into alerts: the first hit of a
(detector, entity, tenant) opens an episode and becomes an alert; a hit within the detector's
cooldown of the episode's latest hit extends the episode and folds into its alert (evidence,
last-seen time, highest score). Before that, the false-alarm budget (``detectors.budget``) holds
each finding to its (tenant, detector) threshold: below it, the finding is an ``info`` alert. An
episode whose alert is ``info`` (kept there by the budget, the learning period or a weak first
score) is *held*: a later hit of it that would alert on its own (above ``info``, past the budget's
threshold in force, after the learning period) lifts it, once, into a new alert named after that
hit's event and saying why; an attack whose first finding is weak is not silenced by it. After
each new alert above ``info``, the families' escalation hooks run (the risk family's ``risk.incident``).

Severity follows the score, and a finding's score is ``calibration.score_of(surprise, asset)``: how
unusual and what was touched, never the detector's name. ``Finding.cap`` bounds it (a control that
worked is at most ``info``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from detectors.budget import BINS, WIDTH, BudgetGate
from detectors.calibration import one_in, surprise_from_score
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
    related: list[str] | None = None  # other events it rests on (an incident's member alerts), kept as evidence
    title: str | None = None  # what fired, when the detector's title names more than one way to fire
    members: list[str] | None = None  # an incident's member alert ids


def emit(findings: list[Finding], tables: State, catalog: Mapping[str, Spec], max_evidence: int,
         escalations: list[tuple[Any, Escalation]], principals: dict[str, str], learning_ms: int = 0,
         gate: BudgetGate | None = None) -> list[Alert]:
    """Alerts of a batch's findings (in arrival order), folding hits within a cooldown into their episode.

    ``escalations``: (context, hook) pairs run after each new alert above ``info``, whose findings become
    alerts too; ``principals`` gets alert id -> principal name of every alert. A tenant's first
    ``learning_ms`` of event time is its learning period: its findings become ``info`` alerts (stored and
    shown, never paged, never escalated), so a newly deployed engine does not page on its first night.
    ``gate``: the false-alarm budget; a finding below its (tenant, detector) threshold is ``info`` too, and
    each finding that opens an episode teaches the budget (``detectors.budget``).
    """
    open_: dict[tuple[str, str, int], Alert] = {}
    out: list[Alert] = []
    cooldown = tables.cooldown
    held = tables.budget.held_episodes(cooldown)  # episodes whose alert is info: (detector, entity, tenant) -> ts
    for f in findings:
        could_alert = f.cap != "info" and severity_of(f.score) != "info"  # before the learning period's cap
        learning = bool(learning_ms) and f.ts - tables.tenant_start.get(f.tenant, f.ts) < learning_ms
        if learning:
            f.cap = "info"
        key = (f.detector, f.entity, f.tenant)
        last = cooldown.get(key)
        folded = last is not None and f.ts - last < catalog[f.detector].cooldown_s * 1000
        note, value, threshold = "", 0.0, 0.0
        if gate is not None:
            value = budget_value(f)
            threshold = gate.judge(f.tenant, f.detector, f.seq, f.ts, value, could_alert and not folded, learning,
                                   f.surprise is not None)
            if value < threshold and capped(f.score, f.cap) != "info":
                f.cap = "info"
                note = budget_note(threshold, gate.per_100k)
        if folded and key in held and capped(f.score, f.cap) != "info":
            # a held episode's hit that would alert on its own lifts it: a new alert (named after this hit's
            # event, whatever the batch cuts), counted by the budget as the episode it now is
            cooldown[key] = max(last, f.ts)
            since = held.pop(key)
            if gate is not None:
                gate.table.learn(f.tenant, f.detector, value, threshold, gate.rise, f.ts)
            a = build_alert(f, tables, catalog, lift_note(since))
        elif folded:
            # one alert per episode: a hit within the cooldown extends it, so the tail of a long burst
            # (a decayed rate still above threshold after the attack stopped) is not a fresh alert
            cooldown[key] = max(last, f.ts)
            cur = open_.get(key)
            if cur is not None:  # fold later hits of this batch into its open alert (an alert of an earlier
                # batch is out already: its later hits extend the episode only, whatever the batch cuts)
                cur.last_seen = iso(max(f.ts, last))
                if len(cur.evidence.event_ids) < max_evidence:
                    cur.evidence.event_ids.append(f.event_id)
                else:  # cut: count what is left out
                    cur.evidence.events_total = (cur.evidence.events_total or len(cur.evidence.event_ids)) + 1
                cur.score = max(cur.score, round(f.score, 3))
                if key not in held:
                    cur.severity = max(cur.severity, capped(f.score, f.cap), key=SEVERITIES.index)
            continue
        else:
            cooldown[key] = f.ts
            a = build_alert(f, tables, catalog, note)
            if a.severity == "info":
                held[key] = f.ts
            else:
                held.pop(key, None)
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
    at_least_members(out)
    return out


def at_least_members(alerts: list[Alert]) -> None:
    """Raise each incident among ``alerts`` to the severity of its worst member among them (a member's later
    hits in the batch may have raised it after the incident was built)."""
    by_id = {a.alert_id: a for a in alerts}
    for a in alerts:
        members = [by_id[m].severity for m in a.evidence.alert_ids if m in by_id]
        if members:
            a.severity = max([a.severity, *members], key=SEVERITIES.index)


def build_alert(f: Finding, tables: State, catalog: Mapping[str, Spec], note: str = "") -> Alert:
    """The alert a finding opens: its detector's catalogue row, the finding's evidence (and related events).

    Its severity follows its score, at most its cap; its explanation says how unusual the finding was when the
    finding carries a surprise and the family's text does not say so already; ``note`` is appended (why it
    was kept at ``info``).
    """
    spec = catalog[f.detector]
    tenant = tables.vocabs.tenant.names[f.tenant]
    events = list(dict.fromkeys([f.event_id, *(f.related or ())]))
    return Alert(
        alert_id=alert_id(spec.name, tenant, f.entity, f.event_id), tenant=tenant, detector=spec.name,
        kind=spec.kind, entity_type=spec.entity_type, entity=f.entity, severity=capped(f.score, f.cap),
        score=round(f.score, 3), first_seen=iso(f.ts), last_seen=iso(f.ts), title=f.title or spec.title,
        explanation=how_unusual(f.explanation, f.surprise, spec.entity_type) + note,
        evidence=Evidence(features=contributions(f.features), event_ids=events, alert_ids=list(f.members or ())),
        tags=list(spec.tags))


def contributions(features: list[Feature]) -> list[Feature]:
    """``features`` with each one's share of the finding's departure from its baselines (``Feature``).

    A detector that split the contributions itself (any not 1.0) keeps its split; otherwise each feature
    with a baseline counts its distance from it in decades, and one without counts 0 (context).

    Examples:
        >>> [f.contribution for f in contributions([Feature(name="rows", value=9999.0, baseline=9.0),
        ...                                         Feature(name="z", value=9.0, baseline=0.0),
        ...                                         Feature(name="tokens", value=50.0)])]
        [0.75, 0.25, 0.0]
    """
    if any(f.contribution != 1.0 for f in features) or len(features) < 2:
        return features
    dist = [abs(math.log10((1 + abs(f.value)) / (1 + abs(f.baseline))))
            if f.baseline is not None and math.isfinite(f.value) and math.isfinite(f.baseline) else 0.0
            for f in features]
    total = sum(dist)
    if total <= 0:  # nothing departs from a baseline: the compared features share it evenly
        compared = [f.baseline is not None for f in features]
        n = sum(compared) or len(features)
        dist, total = [1.0 if c or not any(compared) else 0.0 for c in compared], float(n)
    return [Feature(name=f.name, value=f.value, baseline=f.baseline, contribution=round(d / total, 3))
            for f, d in zip(features, dist, strict=True)]


# how an explanation names the entity whose model a surprise is measured against
_ENTITY_WORD = {"api_key": "key", "principal": "principal", "agent": "agent", "client_ip": "IP",
                "dataset": "dataset"}


def how_unusual(explanation: str, surprise: float | None, entity_type: str) -> str:
    """``explanation`` saying how unusual its finding was ("about 1 in 20,000 for this key"), once.

    Examples:
        >>> how_unusual("ana read 40x her usual rows.", 4.3, "principal")
        'ana read 40x her usual rows. That is about 1 in 20,000 for this principal.'
        >>> how_unusual("k made 300 calls, about 1 in 1,000 for this key.", 3.0, "api_key")
        'k made 300 calls, about 1 in 1,000 for this key.'
    """
    if surprise is None or "1 in " in explanation:
        return explanation
    text = explanation.rstrip()
    if text and not text.endswith("."):
        text += "."
    return f"{text} That is about {one_in(surprise)} for this {_ENTITY_WORD.get(entity_type, entity_type)}."


def budget_value(f: Finding) -> float:
    """What the false-alarm budget ranks a finding by: its surprise, or (a detector that reports only a score)
    its score read conservatively as one (``calibration.surprise_from_score``), spread over the budget's range."""
    return f.surprise if f.surprise is not None else surprise_from_score(f.score, cap=BINS * WIDTH)


def budget_note(threshold: float, per_100k: float) -> str:
    """Why a finding was kept at ``info``: the threshold its detector's budget sets in its tenant."""
    return (f" Kept at info by the alert budget: to stay near {per_100k:g} alert(s) per 100k of this tenant's "
            f"events, this detector alerts here only above about {one_in(threshold)}.")


def lift_note(since_ms: int) -> str:
    """Why an alert lifts an episode that was ``info``: when the episode opened, and that it was held."""
    return (f" This episode opened at {iso(since_ms)} with a finding kept at info; this later finding of it passes "
            f"the alert threshold, so the episode is raised now.")


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
