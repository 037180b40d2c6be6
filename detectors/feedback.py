"""Analyst feedback the engine learns from: a false positive widens what is normal for its entity, a true
positive raises the entity's risk.

A mark (``schemas.feedback.FeedbackMark``) names an alert's detector, tenant, entity and score. The engine
keeps, per (tenant, detector, entity), the most unusual behaviour an analyst called normal, and per
(tenant, entity) how many of its alerts were confirmed. Every later finding passes :meth:`Feedback.judge`
before alerts are built:

- a finding of a (tenant, detector, entity) marked ``false_positive`` that is no more unusual than the
  marked alert plus ``feedback_widen_decades`` (a decade is a factor of ten in how rare it is) is learned
  as normal: it raises nothing and scores 0, as an ordinary event does. More unusual behaviour still alerts;
- a finding on an entity (or of a principal) with confirmed alerts scores ``feedback_risk_boost`` higher per
  confirmation (at most three) and says so in its explanation.

How unusual a finding is, is read from its score on the calibration's one scale
(``calibration.surprise_from_score``), the only measure an alert and a finding share. The state is plain
dicts, checkpointed with the engine's; it is bounded (``MAX_MARKS``, oldest first out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from detectors.alerting import Finding, principal_name
from detectors.calibration import surprise_from_score
from schemas.feedback import FeedbackMark

if TYPE_CHECKING:
    from detectors.state import State

MAX_MARKS = 100_000  # accepted patterns and confirmed entities kept each; the oldest go first
MAX_RISK_STEPS = 3  # confirmations counted per entity
SURPRISE_CAP = 24.0  # decades: the calibration's range


def rarity(score: float) -> float:
    """How unusual a score says a finding was, in decades of surprise (one scale for alerts and findings)."""
    return surprise_from_score(score, cap=SURPRISE_CAP)


@dataclass
class Feedback:
    """What analysts taught one engine."""

    accepted: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (tenant, detector, entity) ->
    #                                                                             rarity called normal
    confirmed: dict[tuple[str, str], int] = field(default_factory=dict)  # (tenant, entity) -> true positives
    applied: dict[str, str] = field(default_factory=dict)  # alert id -> status applied (a re-delivery is a no-op)
    learned: int = 0  # findings learned as normal since the engine started
    raised: int = 0  # findings raised for a confirmed entity

    def apply(self, mark: FeedbackMark) -> bool:
        """Learn from ``mark``; False when it teaches nothing (a triage-only status, or applied already)."""
        if mark.status not in ("false_positive", "true_positive") or self.applied.get(mark.alert_id) == mark.status:
            return False
        previous = self.applied.pop(mark.alert_id, None)
        self.applied[mark.alert_id] = mark.status
        if mark.status == "false_positive":
            key = (mark.tenant, mark.detector, mark.entity)
            self.accepted[key] = max(self.accepted.pop(key, 0.0), rarity(mark.score))
            if previous == "true_positive":
                self._unconfirm(mark)
        else:
            who = (mark.tenant, mark.entity)
            self.confirmed[who] = min(self.confirmed.pop(who, 0) + 1, MAX_RISK_STEPS)
        for table in (self.accepted, self.confirmed, self.applied):
            while len(table) > MAX_MARKS:
                del table[next(iter(table))]
        return True

    def _unconfirm(self, mark: FeedbackMark) -> None:
        who = (mark.tenant, mark.entity)
        n = self.confirmed.get(who, 0) - 1
        if n > 0:
            self.confirmed[who] = n
        else:
            self.confirmed.pop(who, None)

    @property
    def active(self) -> bool:
        return bool(self.accepted or self.confirmed)

    def judge(self, findings: list[Finding], tables: State, widen_decades: float, risk_boost: float) -> list[Finding]:
        """``findings`` without those learned as normal; findings on confirmed entities raised."""
        tenants = tables.vocabs.tenant.names
        out = []
        for f in findings:
            tenant = tenants[f.tenant]
            limit = self.accepted.get((tenant, f.detector, f.entity))
            if limit is not None and rarity(f.score) <= limit + widen_decades:
                self.learned += 1
                continue
            steps = self.confirmed.get((tenant, f.entity)) or self.confirmed.get(
                (tenant, principal_name(tables, f.principal)), 0)
            if steps and risk_boost > 0:
                f.score = min(0.999, f.score + risk_boost * steps)
                f.explanation = (f.explanation.rstrip() + f" Risk raised: an analyst confirmed {steps} earlier "
                                 f"alert(s) on this entity as true positive.")
                f.surprise = None if f.surprise is None else max(f.surprise, rarity(f.score))
                self.raised += 1
            out.append(f)
        return out
