"""Risk-based alerting: one principal's alerts of different detectors, weighed by how unusual each was.

The risk family reads no event columns: its hook runs after each new alert above ``info`` (alerts
the learning period or the false-alarm budget kept at ``info`` never count) and raises
``risk.incident`` when a principal's recent alerts together are strong evidence: each detector's
episode counts once, weighted by its calibrated surprise (``Finding.surprise``; a detector that
reports only a score counts for what its score allows at most, ``calibration.surprise_from_score``),
decayed with time; and the evidence must come from two different families (an api key's and a
data read's, say) or include one very surprising finding. Two noisy detectors of one family on one
principal are not an incident. ``risk.cross_kind`` is declared here too: the worker's correlator
raises it (detectors/correlation.py), the engine does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from detectors.alerting import Finding, principal_name
from detectors.calibration import one_in, score_of, surprise_from_score
from detectors.families.common import idle_cutoff
from detectors.registry import Context, Detector, Family, Table, option
from detectors.state import State
from schemas.alerts import Feature, alert_id

FORGET_BELOW = 0.05  # a member alert decayed below this share of its weight no longer counts
ESTIMATED_CAP = 5.0  # the most surprise a detector that reports only a score is credited with


@dataclass(frozen=True)
class RiskConfig:
    risk_tau_s: float = option(21_600.0, "time constant of the decay of a member alert's weight")
    risk_min_surprise: float = option(6.0, "combined surprise (decades: 6 is 1 in a million) of a principal's "
                                           "recent alerts that makes an incident")
    risk_strong_surprise: float = option(6.0, "surprise of one finding strong enough that another detector of "
                                              "its own family suffices to make an incident")


@dataclass(frozen=True)
class Member:
    """One detector's episode in a principal's risk: how unusual it was, when, and its alert's first event."""

    detector: str
    surprise: float
    estimated: bool  # True: read from a score (the detector reports no surprise)
    score: float
    ts: int
    event_id: str
    alert_id: str = ""  # its alert's id (empty in a checkpoint written before ids were kept)

    def weight(self, now: int, tau_ms: float) -> float:
        return self.surprise * math.exp(-max(now - self.ts, 0) / tau_ms)


def member_of(f: Finding, tenant: str) -> Member:
    """A new alert's finding as a member of its principal's risk (``tenant``: its tenant's name)."""
    aid = alert_id(f.detector, tenant, f.entity, f.event_id)  # as detectors.alerting.build_alert names it
    if f.surprise is not None:
        return Member(f.detector, f.surprise, False, f.score, f.ts, f.event_id, aid)
    return Member(f.detector, surprise_from_score(f.score, ESTIMATED_CAP), True, f.score, f.ts, f.event_id, aid)


def escalate(ctx: Context, f: Finding) -> tuple[Finding, list[str]] | None:
    """Add a new alert's finding to its principal's risk; the incident finding and its tags when it is one."""
    cfg, s = ctx.config, ctx.tables
    tau = cfg.risk_tau_s * 1000
    held = s.risk.get(f.principal)
    members: dict[str, Member] = dict(held[2]) if held is not None and isinstance(held[2], dict) else {}
    members = {d: m for d, m in members.items() if m.weight(f.ts, tau) >= FORGET_BELOW * m.surprise}
    new = member_of(f, s.vocabs.tenant.names[f.tenant])
    old = members.get(f.detector)
    if old is None or new.surprise >= old.weight(f.ts, tau):  # one episode of a detector counts once
        members[f.detector] = new
    weights = {d: m.weight(f.ts, tau) for d, m in members.items()}
    total = sum(weights.values())
    s.risk[f.principal] = (total, f.ts, members)
    families = {d.split(".", 1)[0] for d in members}
    strongest = max(weights.values())
    if len(members) < 2 or total < cfg.risk_min_surprise:
        return None
    if len(families) < 2 and strongest < cfg.risk_strong_surprise:
        return None
    name = principal_name(s, f.principal)
    if not name:
        return None
    key = ("risk.incident", name, f.tenant)
    last_inc = s.cooldown.get(key)
    if last_inc is not None and f.ts - last_inc < ctx.catalog["risk.incident"].cooldown_s * 1000:
        return None
    s.cooldown[key] = f.ts
    ranked = sorted(members.values(), key=lambda m: (-weights[m.detector], m.detector))
    parts = [f"{m.detector} (score {m.score:.2f}, counted as {one_in(m.surprise)})" if m.estimated
             else f"{m.detector} (about {one_in(m.surprise)})" for m in ranked]
    # the totals are context (0): the members share the incident between them, by their weight
    features = [Feature(name="combined_surprise", value=round(total, 2), baseline=cfg.risk_min_surprise,
                        contribution=0.0),
                Feature(name="families", value=float(len(families)), baseline=2.0, contribution=0.0)]
    features += [Feature(name=f"{m.detector} surprise", value=round(m.surprise, 2),
                         contribution=round(weights[m.detector] / total, 3)) for m in ranked]
    inc = Finding("risk.incident", "cross", f.tenant, name, f.ts, f.seq, f.event_id, f.principal,
                  max(score_of(total), max(m.score for m in ranked)), features,
                  f"{name} has alerts of {len(ranked)} detectors in {len(families)} "
                  f"famil{'y' if len(families) == 1 else 'ies'} within hours: {', '.join(parts)}; together "
                  f"about {one_in(total)}, past the incident threshold of {one_in(cfg.risk_min_surprise)}.",
                  surprise=total, related=[m.event_id for m in ranked if m.event_id != f.event_id],
                  members=[m.alert_id for m in ranked if m.alert_id])
    return inc, sorted({t for d in members for t in ctx.catalog[d].tags})


def expire(tables: State, day_start: int, config: Any) -> None:
    """Forget the risk of principals whose every member alert has decayed past counting (or idle past the
    horizon, whichever comes first)."""
    cutoff = day_start - int(config.risk_tau_s * 1000 * math.log(1.0 / FORGET_BELOW))
    if config.idle_evict_days > 0:
        cutoff = max(cutoff, idle_cutoff(day_start, config))
    tables.risk = {p: x for p, x in tables.risk.items() if x[1] >= cutoff}


FAMILY = Family(
    name="risk",
    kind="cross",
    doc="Risk-based alerting over every other detector's alerts, per principal.",
    config=RiskConfig,
    escalate=escalate,
    expire=expire,
    detectors=(
        Detector(
            "risk.incident", "Risk accumulated across streams", "principal", ("atlas:AML.T0025",),
            "Every new alert above info (not one the learning period or the alert budget kept at info) joins "
            "its principal's risk, weighted by how unusual its finding was (its surprise: 3 is 1 in a "
            "thousand; a detector that reports only a score counts for at most what that score allows) and "
            "decaying with time constant `risk_tau_s`. Each detector counts once, with its strongest recent "
            "episode, however often it fired. An incident is raised when at least two detectors' weights "
            "add up to `risk_min_surprise` and they come from two different families (say, a key's api "
            "alert and a data read), or one of them alone reached `risk_strong_surprise`. The explanation "
            "lists each member detector and how unusual its alert was, its evidence the member alerts' ids "
            "(`alert_ids`); the tags are the union of theirs. Its score is the calibrated score of the "
            "combined surprise, and at least the strongest member's, so its severity is at least its worst "
            "member's.",
            cooldown_s=21_600),
        Detector(
            "risk.cross_kind", "Risk across streams: one principal's alerts in two or more kinds", "principal",
            ("atlas:AML.T0025",),
            "Raised by the worker's correlator, not the engine: a principal with alerts of two or more event "
            "kinds (api, data, agent) within the correlation window, possibly from different partitions.",
            cooldown_s=21_600, engine=False),
    ),
    tables=(
        Table("risk", "principal id -> (combined weight, last time, detector -> its member alert)",
              "remapped with the principals; dropped once its alerts have decayed past counting (about 3 x "
              "`risk_tau_s`) or idle past the horizon"),
    ),
)
