"""Risk-based alerting: evidence accumulates per principal, with decay, across every kind of event.

The risk family reads no event columns: its hook runs after each new alert of any detector
and raises ``risk.incident`` when a principal's decayed risk or the number of distinct detectors
that fired on it crosses a threshold. ``risk.cross_kind`` is declared here too: the worker's
correlator raises it (detectors/correlation.py), the engine does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.alerting import Finding, principal_name
from detectors.families.common import idle_cutoff
from detectors.registry import Context, Detector, Family, Table, option
from detectors.state import State
from schemas.alerts import Feature

NEW_EPISODE_DECAY = 0.05  # risk decayed below this share of itself starts a new set of detectors


@dataclass(frozen=True)
class RiskConfig:
    risk_tau_s: float = option(21_600.0, "time constant of a principal's risk decay")
    risk_threshold: float = option(2.5, "decayed risk (the sum of alert scores) that makes an incident")
    risk_min_detectors: int = option(2, "distinct detectors on one principal that make an incident")


def escalate(ctx: Context, f: Finding) -> tuple[Finding, list[str]] | None:
    """Add a new alert's finding to its principal's risk; the incident finding and its tags when it crosses."""
    cfg, s = ctx.config, ctx.tables
    risk, last, dets = s.risk.get(f.principal, (0.0, f.ts, set()))
    decay = float(np.exp(-(f.ts - last) / (cfg.risk_tau_s * 1000)))
    risk = risk * decay + f.score
    if decay < NEW_EPISODE_DECAY:
        dets = set()
    dets = dets | {f.detector}
    s.risk[f.principal] = (risk, f.ts, dets)
    if risk >= cfg.risk_threshold or len(dets) >= cfg.risk_min_detectors:
        name = principal_name(s, f.principal)
        key = ("risk.incident", name, f.tenant)
        last_inc = s.cooldown.get(key)
        if last_inc is not None and f.ts - last_inc < ctx.catalog["risk.incident"].cooldown_s * 1000:
            return None
        s.cooldown[key] = f.ts
        inc = Finding("risk.incident", "cross", f.tenant, name, f.ts, f.seq, f.event_id, f.principal,
                      min(1.0, 0.5 + risk / 10),
                      [Feature(name="risk", value=round(risk, 2), baseline=cfg.risk_threshold),
                       Feature(name="detectors", value=float(len(dets)), baseline=float(cfg.risk_min_detectors))],
                      f"{name} accumulated risk {risk:.1f} from {len(dets)} detector(s) "
                      f"({', '.join(sorted(dets))}) within hours.")
        return inc, sorted({t for d in dets for t in ctx.catalog[d].tags})
    return None


def expire(tables: State, day_start: int, config: Any) -> None:
    """Forget the risk of principals idle past the horizon (it has decayed for weeks)."""
    if config.idle_evict_days > 0:
        cutoff = idle_cutoff(day_start, config)
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
            "Every new alert adds its score to its principal's risk, which decays with time constant "
            "`risk_tau_s`. An incident is raised when the risk reaches `risk_threshold` or when "
            "`risk_min_detectors` distinct detectors fired on the principal within one episode (risk not "
            "decayed below 5%). Its tags are the union of its detectors' tags.",
            cooldown_s=21_600),
        Detector(
            "risk.cross_kind", "Risk across streams: one principal's alerts in two or more kinds", "principal",
            ("atlas:AML.T0025",),
            "Raised by the worker's correlator, not the engine: a principal with alerts of two or more event "
            "kinds (api, data, agent) within the correlation window, possibly from different partitions.",
            cooldown_s=21_600, engine=False),
    ),
    tables=(
        Table("risk", "principal id -> (risk, last time, detectors of the episode)",
              "remapped with the principals; dropped once idle past the horizon"),
    ),
)
