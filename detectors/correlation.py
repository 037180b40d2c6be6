"""Cross-kind risk in worker mode: evidence records from every partition engine, correlated per principal.

In ``spyglass replay`` one engine sees every event kind and ``risk.incident`` correlates across
them. The worker runs one engine per topic partition and each topic carries one kind, so a
principal's alerts of different kinds never meet in an engine. Each engine alert with a
principal therefore becomes a small :class:`RiskEvidence` record on the evidence topic, keyed
by ``tenant/principal``, and a :class:`Correlator` per evidence partition raises
``risk.cross_kind``.

The rule is order-independent and idempotent, because evidence from different source partitions
interleaves differently on every run and is re-delivered after crashes: per (tenant, principal)
and fixed event-time window (``ts // window``), the first time the window holds evidence of two
or more distinct kinds, one alert is raised whose id depends only on (tenant, principal, window).
Re-delivered evidence (an alert id already seen) changes nothing. Limitation: kinds that fall on
either side of a window boundary are not correlated, and evidence older than ``horizon`` behind
the newest evidence of its partition is dropped (counted in ``evicted["late"]``).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

import msgspec

from detectors.alerting import iso
from detectors.catalog import CATALOG
from schemas.alerts import Alert, Evidence, Feature, alert_id, plain_number, severity_of

DETECTOR = "risk.cross_kind"
HOUR = 3_600_000
DAY = 86_400_000
MAX_EVIDENCE = 50
MAX_WINDOW_ALERTS = 256  # alert ids a window remembers (re-delivery shortcut)


class RiskEvidence(msgspec.Struct, kw_only=True, frozen=True):
    """One engine alert, as the correlator needs it (the value of an evidence-topic record)."""

    alert_id: str
    tenant: str
    principal: str
    detector: str
    kind: str
    score: float
    ts: Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799_999)]  # event time of the alert's first event, ms
    # (bounded to years 1970-9999: a wild value can neither overflow the alert's times nor crash the writer)
    event_id: str


_enc = msgspec.json.Encoder(enc_hook=plain_number)
_dec = msgspec.json.Decoder(RiskEvidence)


def encode_evidence(e: RiskEvidence) -> bytes:
    return _enc.encode(e)


def decode_evidence(raw: bytes | None) -> RiskEvidence:
    """Raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` for a record that is not evidence."""
    if raw is None:
        raise msgspec.DecodeError("null value")
    if len(raw) > 16 * 1024:  # a few hundred bytes when a worker writes it
        raise msgspec.DecodeError(f"record is {len(raw)} bytes, above the 16384-byte limit")
    try:
        e = _dec.decode(raw)
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None
    if not (e.alert_id and e.tenant and e.principal and e.kind):
        raise msgspec.ValidationError("alert_id, tenant, principal and kind must not be empty")
    return e


def evidence_of(a: Alert, principal: str) -> RiskEvidence:
    """The evidence record of an engine alert raised for ``principal``."""
    ts = int(datetime.fromisoformat(a.first_seen.replace("Z", "+00:00")).timestamp() * 1000)
    return RiskEvidence(alert_id=a.alert_id, tenant=a.tenant, principal=principal, detector=a.detector,
                        kind=a.kind, score=a.score, ts=ts, event_id=a.evidence.event_ids[0])


@dataclass
class Window:
    """What one principal's evidence in one event-time window holds so far."""

    kinds: dict[str, float] = field(default_factory=dict)  # kind -> highest score
    detectors: set[str] = field(default_factory=set)
    alerts: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    first: int = 0
    last: int = 0
    fired: bool = False


class Correlator:
    """Raises ``risk.cross_kind`` from evidence records; the small interface of an engine for the worker."""

    def __init__(self, window_hours: float = 6.0, horizon_days: float = 7.0, *, max_windows: int = 1_000_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.window_ms = int(window_hours * HOUR)
        self.horizon_ms = int(horizon_days * DAY)
        self.max_windows = max_windows  # beyond it the oldest tenth is forgotten (evicted["cap"])
        self.clock = clock  # evidence more than a day ahead of it is refused: it would move the horizon
        self.windows: dict[tuple[str, str, int], Window] = {}  # (tenant, principal, window index) -> Window
        self.newest = -1  # highest evidence ts seen, ms
        self.pruned_to = -(1 << 62)  # windows ending before this were forgotten
        self.evidence_seen = 0
        self.alerts_emitted = 0
        self.evicted: dict[str, int] = {"idle": 0, "late": 0, "cap": 0}
        self.scores: dict[str, float] = {}  # an engine's per-event scores: a correlator scores no events

    def add(self, e: RiskEvidence) -> Alert | None:
        """Take one evidence record; the alert it completes, if any."""
        self.evidence_seen += 1
        spec = CATALOG.get(e.detector)
        if spec is None or spec.kind == "cross":
            return None  # incidents are not evidence of a kind; the detector's own kind is the one counted
        if e.ts > self.clock() * 1000 + DAY:  # a wrong clock upstream must not forget every window here
            raise ValueError(f"evidence time {iso(e.ts)} is more than a day ahead of this worker's clock")
        if e.ts > self.newest:
            self.newest = e.ts
            if self._horizon() > self.pruned_to:  # at most once per window of event time
                self._prune()
        if e.ts < self._horizon():  # its window is forgotten already: cannot be judged the same on every run
            self.evicted["late"] += 1
            return None
        key = (e.tenant, e.principal, e.ts // self.window_ms)
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = Window(first=e.ts, last=e.ts)
            if len(self.windows) > self.max_windows:
                self._cap()
        if e.alert_id in w.alerts:
            return None  # re-delivered
        if len(w.alerts) < MAX_WINDOW_ALERTS:  # only a shortcut: every update below is idempotent anyway
            w.alerts.add(e.alert_id)
        w.kinds[spec.kind] = max(w.kinds.get(spec.kind, 0.0), e.score)
        w.detectors.add(e.detector)
        if len(w.event_ids) < MAX_EVIDENCE:
            w.event_ids.add(e.event_id)
        w.first, w.last = min(w.first, e.ts), max(w.last, e.ts)
        if w.fired or len(w.kinds) < 2:
            return None
        w.fired = True
        self.alerts_emitted += 1
        return self._alert(key, w)

    def process(self, evidence: list[RiskEvidence]) -> list[Alert]:
        return [a for a in (self.add(e) for e in evidence) if a is not None]

    def _horizon(self) -> int:
        return (self.newest - self.horizon_ms) // self.window_ms * self.window_ms

    def _prune(self) -> None:
        horizon = self.pruned_to = self._horizon()
        old = [k for k, w in self.windows.items() if (k[2] + 1) * self.window_ms <= horizon]
        for k in old:
            del self.windows[k]
        self.evicted["idle"] += len(old)

    def _cap(self) -> None:
        """Over ``max_windows``: forget the oldest tenth (a flood of principals; counted, never silent)."""
        drop = sorted(self.windows, key=lambda k: k[2])[:max(1, self.max_windows // 10)]
        for k in drop:
            del self.windows[k]
        self.evicted["cap"] = self.evicted.get("cap", 0) + len(drop)

    def _alert(self, key: tuple[str, str, int], w: Window) -> Alert:
        tenant, principal, index = key
        spec = CATALOG[DETECTOR]
        score = min(1.0, 0.5 + sum(w.kinds.values()) / 4)
        kinds = sorted(w.kinds)
        start = iso(index * self.window_ms)
        return Alert(
            alert_id=alert_id(DETECTOR, tenant, principal, f"bucket-{index}"), tenant=tenant, detector=DETECTOR,
            kind=spec.kind, entity_type="principal", entity=principal, severity=severity_of(score),
            score=round(score, 3), first_seen=iso(w.first), last_seen=iso(w.last), title=spec.title,
            explanation=f"{principal} raised alerts in {len(kinds)} event streams ({', '.join(kinds)}) within the "
                        f"{self.window_ms / HOUR:g}-hour window from {start}: {', '.join(sorted(w.detectors))}.",
            evidence=Evidence(features=[Feature(name="kinds", value=float(len(kinds)), baseline=2.0),
                                        Feature(name="detectors", value=float(len(w.detectors))),
                                        Feature(name="max_score", value=round(max(w.kinds.values()), 3))],
                              event_ids=sorted(w.event_ids)),
            tags=sorted({t for d in w.detectors for t in CATALOG[d].tags} | set(spec.tags)))

    # -- the engine's interface for checkpoints and health ----------------------------------
    def state(self) -> bytes:
        return pickle.dumps({"correlator": 1, "window_ms": self.window_ms, "horizon_ms": self.horizon_ms,
                             "windows": self.windows, "newest": self.newest, "pruned_to": self.pruned_to,
                             "evidence_seen": self.evidence_seen,
                             "alerts_emitted": self.alerts_emitted, "evicted": self.evicted}, protocol=5)

    @classmethod
    def from_state(cls, blob: bytes) -> Correlator:
        d = pickle.loads(blob)  # noqa: S301 - our own checkpoints, written by state()
        if not isinstance(d, dict) or d.get("correlator") != 1:
            raise ValueError("not a correlator state")
        c = cls()
        c.window_ms, c.horizon_ms = d["window_ms"], d["horizon_ms"]
        c.windows, c.newest, c.pruned_to = d["windows"], d["newest"], d.get("pruned_to", c.pruned_to)
        c.evidence_seen, c.alerts_emitted = d["evidence_seen"], d["alerts_emitted"]
        c.evicted = {**c.evicted, **d["evicted"]}
        return c

    def entities(self) -> int:
        return len(self.windows)

    def memory_bytes(self) -> int:
        """A rough count: the windows' sets and dicts (evidence is rare: alerts, not events)."""
        return sum(400 + 80 * (len(w.alerts) + len(w.event_ids) + len(w.detectors) + len(w.kinds))
                   for w in self.windows.values())

