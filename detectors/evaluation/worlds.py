"""Scoring alerts against labelled attacks, per world and over many worlds.

The rule (the one the pilot traffic was scored with): an alert above ``info`` counts for an
attack instance when it names one of the instance's entities, in its tenant, while the
instance runs (from its first event to ``grace_s`` after its last), or when its evidence
carries one of the instance's events. Such an alert is *true*; every other alert above
``info`` is *false*. An instance is *caught* when an alert that counts for it names one of
its entities; its time to detect is event time from when it became detectable (its start;
for a slow instance, when it became unusual) to that alert's ``first_seen``. A burst instance
is *in time* when caught within 60 s, a slow one within one simulated day.

Figures: recall (caught / instances), the share in time, the median time to detect, false
alerts per 100k benign events, and precision (true / all alerts above ``info``); per
detector, its alerts, true and false. No I/O: callers bring alerts and labels.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from schemas.alerts import Alert

BURST_S = 60.0
SLOW_S = 86_400.0
GRACE_S = 900.0  # after an instance's last event, alerts naming its entities still count for it


def event_time(s: str) -> float:
    """Seconds since the epoch of an RFC 3339 timestamp."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


@dataclass
class Matched:
    """Which alerts count for which labelled instance, and which alerts are false."""

    hits: list[list[Alert]]  # per label: the alerts that count for it, in first_seen order
    false: list[Alert]
    counted: list[Alert]  # every alert scored (above info)
    attack_events: int


def match(alerts: Iterable[Alert], labels: Sequence[dict], grace_s: float = GRACE_S) -> Matched:
    """Match alerts above ``info`` to labelled instances by entity-in-window or by evidence."""
    owner: dict[str, int] = {}
    for j, lab in enumerate(labels):
        for eid in lab["event_ids"]:
            owner[eid] = j
    by_entity: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    windows = []
    for j, lab in enumerate(labels):
        for x in lab["entities"]:
            by_entity[(lab["tenant"], x["type"], x["id"])].append(j)
        windows.append((event_time(lab["start"]), event_time(lab["end"]) + grace_s))
    hits: list[list[Alert]] = [[] for _ in labels]
    false: list[Alert] = []
    counted: list[Alert] = []
    for a in alerts:
        if a.severity == "info":
            continue
        counted.append(a)
        first, last = event_time(a.first_seen), event_time(a.last_seen)
        mine = {owner[e] for e in a.evidence.event_ids if e in owner}
        mine.update(j for j in by_entity.get((a.tenant, a.entity_type, a.entity), ())
                    if first <= windows[j][1] and last >= windows[j][0])
        if not mine:
            false.append(a)
        for j in mine:
            hits[j].append(a)
    for h in hits:
        h.sort(key=lambda a: a.first_seen)
    return Matched(hits, false, counted, len(owner))


@dataclass(frozen=True)
class AttackResult:
    """How one labelled instance fared."""

    scenario: str
    instance: str
    tenant: str
    speed: str  # "burst" | "slow": its deadline class
    detected: bool  # some alert counts for it (on any entity)
    caught: bool  # an alert that counts for it names one of its entities
    ttd_s: float | None  # time to detect on the right entity (event time)
    detectors: tuple[str, ...]  # detectors whose alerts count for it
    learning: bool = False  # it ended inside its tenant's learning period (where nothing is raised above info)

    @property
    def in_time(self) -> bool:
        limit = BURST_S if self.speed == "burst" else SLOW_S
        return self.caught and self.ttd_s is not None and self.ttd_s <= limit


def attack_results(matched: Matched, labels: Sequence[dict],
                   learning_until: Mapping[str, int] | None = None) -> list[AttackResult]:
    """Per labelled instance: detected, caught on the right entity, time to detect; ``learning_until``: each
    tenant's end of learning period (epoch ms), which marks the instances that ended before it."""
    until = learning_until or {}
    out = []
    for lab, mine in zip(labels, matched.hits, strict=True):
        ents = {(x["type"], x["id"]) for x in lab["entities"]}
        right = [a for a in mine if (a.entity_type, a.entity) in ents]
        since = event_time(lab.get("detect_from") or lab["start"])
        ttd = max(0.0, event_time(right[0].first_seen) - since) if right else None
        out.append(AttackResult(lab["scenario"], lab["instance"], lab["tenant"], lab["speed"], bool(mine),
                                bool(right), ttd, tuple(sorted({a.detector for a in mine})),
                                1000 * event_time(lab["end"]) < until.get(lab["tenant"], 0)))
    return out


@dataclass
class DetectorCount:
    alerts: int = 0
    true: int = 0
    false: int = 0


@dataclass
class Score:
    """The figures of one world, or of several summed (:func:`combine`)."""

    events: int
    benign: int
    attacks: list[AttackResult]
    true_alerts: int
    false_alerts: int
    by_detector: dict[str, DetectorCount] = field(default_factory=dict)

    @property
    def alerts(self) -> int:
        return self.true_alerts + self.false_alerts

    @property
    def caught(self) -> int:
        return sum(r.caught for r in self.attacks)

    @property
    def in_time(self) -> int:
        return sum(r.in_time for r in self.attacks)

    @property
    def recall(self) -> float:
        return self.caught / len(self.attacks) if self.attacks else 0.0

    @property
    def recall_after_learning(self) -> tuple[int, int]:
        """(caught, instances) of the attacks that did not end inside their tenant's learning period."""
        after = [r for r in self.attacks if not r.learning]
        return sum(r.caught for r in after), len(after)

    @property
    def in_time_share(self) -> float:
        return self.in_time / len(self.attacks) if self.attacks else 0.0

    @property
    def median_ttd_s(self) -> float | None:
        ttd = sorted(r.ttd_s for r in self.attacks if r.ttd_s is not None)
        if not ttd:
            return None
        mid = len(ttd) // 2
        return ttd[mid] if len(ttd) % 2 else (ttd[mid - 1] + ttd[mid]) / 2

    @property
    def false_per_100k(self) -> float:
        return 100_000 * self.false_alerts / max(self.benign, 1)

    @property
    def precision(self) -> float | None:
        """The share of alerts above ``info`` that are true (None without alerts)."""
        return self.true_alerts / self.alerts if self.alerts else None

    def figures(self) -> dict[str, object]:
        """The headline figures as plain data."""
        return {"events": self.events, "benign": self.benign, "attacks": len(self.attacks), "caught": self.caught,
                "recall": round(self.recall, 4), "in_time": self.in_time,
                "in_time_share": round(self.in_time_share, 4), "median_ttd_s": self.median_ttd_s,
                "alerts": self.alerts, "true_alerts": self.true_alerts, "false_alerts": self.false_alerts,
                "false_per_100k": round(self.false_per_100k, 3),
                "after_learning": dict(zip(("caught", "attacks"), self.recall_after_learning, strict=True)),
                "precision": None if self.precision is None else round(self.precision, 4),
                "by_detector": {k: vars(v) for k, v in sorted(self.by_detector.items())}}


def score(alerts: Iterable[Alert], labels: Sequence[dict], total_events: int, grace_s: float = GRACE_S,
          learning_until: Mapping[str, int] | None = None) -> Score:
    """Score one world's alerts against its labels; ``total_events`` counts benign and attack events;
    ``learning_until``: see :func:`attack_results`."""
    m = match(alerts, labels, grace_s)
    false_ids = {id(a) for a in m.false}
    by_detector: dict[str, DetectorCount] = defaultdict(DetectorCount)
    for a in m.counted:
        c = by_detector[a.detector]
        c.alerts += 1
        if id(a) in false_ids:
            c.false += 1
        else:
            c.true += 1
    return Score(total_events, total_events - m.attack_events, attack_results(m, labels, learning_until),
                 len(m.counted) - len(m.false), len(m.false), dict(by_detector))


def combine(scores: Iterable[Score]) -> Score:
    """Several worlds as one: instances pooled, alerts and benign events summed."""
    total = Score(0, 0, [], 0, 0, {})
    for s in scores:
        total.events += s.events
        total.benign += s.benign
        total.attacks.extend(s.attacks)
        total.true_alerts += s.true_alerts
        total.false_alerts += s.false_alerts
        for name, c in s.by_detector.items():
            t = total.by_detector.setdefault(name, DetectorCount())
            t.alerts += c.alerts
            t.true += c.true
            t.false += c.false
    return total
