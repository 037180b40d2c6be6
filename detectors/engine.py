"""The scoring engine: one object, driven by the worker, the replay command and the benchmarks.

``Engine.process(events)`` takes a batch of decoded events (any kinds, any order within
the batch), turns it into columns once, runs the registered detector families' stages over
the columns (``detectors.registry``, in registry order), and turns their findings into
explained alerts (``detectors.alerting``). It knows nothing about Kafka or ClickHouse. Its
whole state is plain arrays and dicts (``detectors.state``): ``state()`` /
``Engine.from_state()`` give identical scores.

Time is event time throughout. Per-entity baselines are learned online; events that
score as anomalous are not learned (a burst cannot teach itself in), and novelty
detectors wait for an entity to warm up, leaning on its peer group (department, agent
type, tenant) meanwhile.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from detectors.alerting import Finding, emit, iso
from detectors.budget import BudgetGate
from detectors.columns import Batch, Parts, parts_of, to_batch, ts_ms, window
from detectors.compaction import MAX_NEW_PER_EVENT, NAMESPACES, compact, footprint, least_recent
from detectors.families import REGISTRY
from detectors.families.common import DAY, idle_cutoff
from detectors.feedback import Feedback
from detectors.governance import UnusedScopes, learn_scopes, unused_scopes
from detectors.registry import Context, Registry, option
from detectors.state import Arrays, State
from detectors.tuning import Tuning
from schemas.alerts import Alert
from schemas.block import EventBlock
from schemas.events import Event
from schemas.feedback import FeedbackMark

# Arrays and State are re-exported: checkpoints written before they moved to detectors.state name them here
__all__ = ["Arrays", "Engine", "EngineConfig", "EngineLimits", "State"]

_NO_LIMIT = np.iinfo(np.int64).max
_BATCH_PART = {"api_usage": "api", "data_access": "data", "agent_execution": "agent"}  # event kind -> Batch field


@dataclass(frozen=True)
class EngineLimits:
    """The engine's own options (the families' are merged in to make ``EngineConfig``)."""

    max_evidence: int = option(50, "event ids an alert keeps as evidence (later hits of its episode past this "
                                   "are counted in its score and time, not listed)")
    idle_evict_days: float = option(30.0, "forget a key, principal, agent, IP or dataset unseen this long, in "
                                          "event time (0 = never)")
    session_idle_hours: float = option(24.0, "forget an agent session's step count and untrusted mark after this")
    max_entities: int = option(1_000_000, "cap on tracked entities (all five namespaces); least recently seen go "
                                          "first")
    cap_check_events: int = option(50_000, "the cap is enforced at every multiple of this many events of the "
                                           "stream")
    learning_hours: float = option(24.0, "a tenant's learning period, in event time from its first event: the "
                                         "engine learns and scores, and raises nothing above info")
    alert_budget_per_100k: float = option(1.0, "false-alarm budget: alerts above info each detector may raise per "
                                               "100k of a tenant's events; findings below the threshold that keeps "
                                               "it there are info alerts (0 = no budget: every finding alerts)")
    alert_budget_rise: float = option(1.0, "a finding above its budget's threshold is learned as at most this many "
                                           "decades of surprise over it (an attack cannot lift the threshold to "
                                           "its own level)")
    alert_budget_memory_days: float = option(7.0, "time constant, in days of event time, over which the budget "
                                                  "forgets a tenant's findings and events (0 = never)")
    feedback_widen_decades: float = option(1.0, "a finding of a detector and entity an analyst marked false "
                                                "positive is learned as normal up to this many decades (factors "
                                                "of ten) more unusual than the marked alert")
    feedback_risk_boost: float = option(0.1, "score added to findings on an entity per alert of it an analyst "
                                             "confirmed as true positive (at most three)")


# the engine's options and every registered family's, e.g. ``EngineConfig(behaviour=True)``
EngineConfig = REGISTRY.config_class(EngineLimits)


class Engine:
    """Scores batches of events into explained alerts with the families of ``registry``."""

    def __init__(self, config: object | None = None, registry: Registry = REGISTRY,
                 tuning: Tuning | None = None) -> None:
        self.registry = registry
        self.config = config or registry.config_class(EngineLimits)()
        self.tables = State()  # every per-entity array, novelty set and ledger of the families
        self.tables.add_columns(registry.columns())
        self._add_family_tables()
        self.events_seen = 0
        self.alerts_emitted = 0
        self.scores: dict[str, float] = {}  # event_id -> highest detector score, for the last batch only
        self.alert_principals: dict[str, str] = {}  # alert_id -> principal name, for the last batch's alerts only
        self.evicted: dict[str, int] = {"idle": 0, "cap": 0}  # entities forgotten, by reason
        self.feedback = Feedback()  # what analysts taught it (detectors.feedback)
        self.retune(tuning or Tuning())
        self._seen = registry.seen()
        self._stages = [(_BATCH_PART[f.kind], f.stage) for f in registry.families
                        if f.stage is not None and (f.switch is None or getattr(self.config, f.switch))]
        self._escalations = [f.escalate for f in registry.families if f.escalate is not None]
        self._expiries = [f.expire for f in registry.families if f.expire is not None]
        # the latest event time (ms) the watermark may reach, asked once a batch; None: unbounded (replay, eval).
        # A live driver bounds it by its wall clock, so no event dated ahead evicts the state (not checkpointed).
        self.watermark_limit: Callable[[], int] | None = None
        self._limit = _NO_LIMIT

    # -- public API -------------------------------------------------------------------------
    def process(self, events: Sequence[Event] | EventBlock) -> list[Alert]:
        """Score a batch, learn it, and return the alerts it raised (in arrival order).

        The result does not depend on how a stream is cut into batches: every per-entity count,
        profile and warm-up check is taken as of each event, so a worker that restores a
        checkpoint and resumes mid-stream raises exactly the alerts an uninterrupted run does.
        State is compacted (idle entities forgotten, the entity cap enforced) at fixed points of
        the stream, between events, wherever the batches happen to be cut (see ``_cuts``).
        """
        n = len(events)
        if not n:
            return []
        self._limit = _NO_LIMIT if self.watermark_limit is None else max(self.watermark_limit(),
                                                                          self.tables.watermark)
        alerts: list[Alert] = []
        scores: dict[str, float] = {}
        self.alert_principals = {}
        start = 0
        parts = parts_of(events)
        ts = ts_ms(parts, n)  # once: the cuts and the columns both need it
        for i, day_start, cap in [*self._cuts(n, ts), (n, None, False)]:
            if i > start:
                alerts += self._process(window(parts, start, i), ts[start:i])
                for k, v in self.scores.items():
                    if v > scores.get(k, 0.0):
                        scores[k] = v
                start = i
            if i < n:
                self._compact(day_start, cap)
        self.scores = scores
        return alerts

    def _process(self, parts: Parts, ts: np.ndarray) -> list[Alert]:
        """Score and learn events between two compaction points (``ts``: their times)."""
        tables = self.tables
        batch = to_batch(parts, tables.vocabs, ts)
        self.events_seen += len(batch)
        self._start_tenants(batch)
        context = Context(self.config, tables, self._catalog)
        findings: list[Finding] = []
        for part, stage in self._stages:
            columns = getattr(batch, part)
            if columns is not None:
                findings += stage(context, columns)
        findings.sort(key=lambda f: (f.seq, f.detector, f.entity))
        if self.feedback.active:
            findings = self.feedback.judge(findings, tables, self.config.feedback_widen_decades,
                                           self.config.feedback_risk_boost)
        if self.tuning.drops:
            names = tables.vocabs.tenant.names
            findings = [f for f in findings if self.tuning.keep(f.detector, names[f.tenant], f.score)]
        self.scores = {}
        for f in findings:
            if f.score > self.scores.get(f.event_id, 0.0):
                self.scores[f.event_id] = f.score
        cols = _cols(batch)
        tenants = np.concatenate([c.tenant for c in cols])
        gate = None
        if self.config.alert_budget_per_100k > 0 or self.tuning.budgets:
            per_100k_of = None
            if self.tuning.budgets:
                names, tuning, default = tables.vocabs.tenant.names, self.tuning, self.config.alert_budget_per_100k

                def per_100k_of(tenant: int, detector: str) -> float:
                    return tuning.get(detector, names[tenant], "budget_per_100k", default)
            gate = BudgetGate(tables.budget, self.config.alert_budget_per_100k, self.config.alert_budget_rise,
                              tenants, np.concatenate([c.pos for c in cols]), per_100k_of, self._sensitive)
        alerts = emit(findings, tables, self._catalog, self.config.max_evidence,
                      [(context, hook) for hook in self._escalations], self.alert_principals,
                      int(self.config.learning_hours * 3_600_000), gate)
        tables.budget.add_events(tenants)
        self._touch(batch)
        learn_scopes(tables, batch.api)
        tables.watermark = max(tables.watermark, min(max(int(c.ts.max()) for c in cols), self._limit))
        self.alerts_emitted += len(alerts)
        return alerts

    def _add_family_tables(self) -> None:
        """The families' own tables (``Table.factory``) a new or restored state lacks."""
        for t in self.registry.tables().values():
            if t.factory is not None and t.name not in self.tables.family:
                self.tables.family[t.name] = t.factory()

    def _start_tenants(self, batch: Batch) -> None:
        """Record each new tenant's first event time (its first event in arrival order): its learning period."""
        start = self.tables.tenant_start
        firsts: dict[int, tuple[int, int]] = {}
        for c in _cols(batch):
            tenants, first = np.unique(c.tenant, return_index=True)
            for t, i in zip(tenants.tolist(), first.tolist(), strict=True):
                if t not in start and (t not in firsts or int(c.pos[i]) < firsts[t][0]):
                    firsts[t] = (int(c.pos[i]), int(c.ts[i]))
        for t, (_, ts) in firsts.items():
            start[t] = ts

    def state(self) -> bytes:
        """The whole engine state (configuration included) as bytes."""
        return pickle.dumps({"config": asdict(self.config), "state": self.tables, "events_seen": self.events_seen,
                             "alerts_emitted": self.alerts_emitted, "evicted": self.evicted,
                             "feedback": self.feedback, "tuning": self.tuning}, protocol=5)

    @classmethod
    def from_state(cls, blob: bytes, registry: Registry = REGISTRY) -> Engine:
        """The engine ``state()`` wrote (``registry``: the families it ran with)."""
        d = pickle.loads(blob)  # noqa: S301 - our own checkpoints, written by state()
        config_class = registry.config_class(EngineLimits)
        known = {f.name for f in fields(config_class)}  # options removed since the checkpoint was written: dropped
        eng = cls(config_class(**{k: v for k, v in d["config"].items() if k in known}), registry, d.get("tuning"))
        eng.tables = d["state"]  # its missing fields: State.__setstate__
        eng.tables.add_columns(registry.columns())  # columns of families registered since
        eng._add_family_tables()  # and their own tables
        eng.events_seen = d["events_seen"]
        eng.alerts_emitted = d["alerts_emitted"]
        eng.evicted = dict(d.get("evicted", eng.evicted))
        eng.feedback = d.get("feedback") or Feedback()
        return eng

    def retune(self, tuning: Tuning) -> None:
        """Run with this detector configuration from now on (modes, floors, budgets, cooldowns per tenant)."""
        self.tuning = tuning  # detectors.tuning; checkpointed with the state
        self._catalog = self.registry.catalog()
        for name, seconds in tuning.cooldowns().items():
            self._catalog[name] = replace(self._catalog[name], cooldown_s=seconds)
        self._longest_cooldown_ms = max(sp.cooldown_s for sp in self._catalog.values()) * 1000
        self._sensitive = frozenset(name for name, sp in self._catalog.items() if sp.sensitive)

    def apply_feedback(self, mark: FeedbackMark) -> bool:
        """Learn from an analyst's mark on one of this engine's alerts (``detectors.feedback``); False when it
        teaches nothing (a triage-only status, or applied already). Checkpointed with the rest of the state."""
        return self.feedback.apply(mark)

    def memory_bytes(self) -> int:
        """Bytes held by the per-entity arrays, novelty sets and histograms (not the vocab strings).

        Cheap enough for every metrics scrape; ``footprint()`` counts everything, strings and dicts too.
        """
        s = self.tables
        total = sum(a.nbytes() for a in (s.key, s.ip, s.principal, s.agent, s.dataset, s.pair, s.dept))
        total += sum(x.nbytes for x in s.seen.values()) + s.hours_tenant.nbytes + s.hours_principal.nbytes
        total += sum(x.nbytes for x in s.last_seen.values()) + sum(x.nbytes for x in s.scopes.values())
        total += s.oh_pending.nbytes() + sum(x.nbytes for x in s.sessions.c.values())
        return total

    def footprint(self) -> dict[str, int]:
        """Bytes held by each part of the state, vocab strings and dict-held state included."""
        return footprint(self.tables)

    def entities(self) -> int:
        """Tracked entities of the five evictable namespaces (what ``max_entities`` caps)."""
        v = self.tables.vocabs
        return len(v.key) + len(v.principal) + len(v.agent) + len(v.ip) + len(v.dataset)

    def learning_until(self) -> dict[str, int]:
        """Each tenant seen: the event time (epoch ms) its learning period ends (its findings are ``info`` until
        then)."""
        names, period = self.tables.vocabs.tenant.names, int(self.config.learning_hours * 3_600_000)
        return {names[t]: start + period for t, start in self.tables.tenant_start.items()}

    def unused_scopes(self) -> list[UnusedScopes]:
        """Governance: keys granted scopes they never used over the observed period (not alerts)."""
        return unused_scopes(self.tables, iso)

    # -- bounded state ----------------------------------------------------------------------
    def _cuts(self, n_events: int, ts: np.ndarray) -> list[tuple[int, int | None, bool]]:
        """Where in a batch of ``n_events`` to compact: (index to compact before, day start or None, check the cap).

        Positions are fixed by the stream, not by the batch: before the first event whose running
        event-time maximum enters a new UTC day (forget what went idle), and before every
        ``cap_check_events``-th event of the stream (enforce the cap). A check that cannot find
        the cap exceeded (too few events since the batch began) is skipped.
        """
        cfg = self.config
        cuts: dict[int, tuple[int | None, bool]] = {}
        if cfg.idle_evict_days > 0 or cfg.session_idle_hours > 0:
            run = np.minimum(np.maximum(np.maximum.accumulate(ts), self.tables.watermark), self._limit)
            day = run // DAY
            prev = np.concatenate(([self.tables.watermark // DAY], day[:-1]))
            for i in np.flatnonzero(day > prev).tolist():
                cuts[i] = (int(day[i]) * DAY, False)
        if cfg.max_entities > 0 and cfg.cap_check_events > 0:
            every, n = cfg.cap_check_events, self.entities()
            for i in range((-self.events_seen) % every, n_events, every):
                if self.events_seen + i > 0 and n + MAX_NEW_PER_EVENT * i > cfg.max_entities:
                    cuts[i] = (cuts.get(i, (None, False))[0], True)
        return [(i, d, c) for i, (d, c) in sorted(cuts.items())]

    def _compact(self, day_start: int | None, cap: bool) -> None:
        """Forget entities idle since before ``day_start`` minus the horizon; then enforce the cap."""
        cfg, s = self.config, self.tables
        drop: dict[str, np.ndarray] = {}
        if day_start is not None and cfg.idle_evict_days > 0:
            cutoff = idle_cutoff(day_start, cfg)
            for ns in NAMESPACES:
                n = len(getattr(s.vocabs, ns))
                last = s.last_seen.get(ns)
                if n and last is not None:
                    m = last[:n] < cutoff
                    if m.any():
                        drop[ns] = m
            # cooldowns are keyed by entity name, not id, and hold the time of an episode's latest hit (each
            # hit extends it): one is kept while it can still fold a hit, whatever the horizon
            live = min(cutoff, day_start - self._longest_cooldown_ms)
            s.cooldown = {k: t for k, t in s.cooldown.items() if t >= live}
        if day_start is not None:
            s.budget.decay(cfg.alert_budget_memory_days)
            for expire in self._expiries:  # the families' time-stamped state past every use it has
                expire(s, day_start, cfg)
        idle = sum(int(m.sum()) for m in drop.values())
        compact(s, drop, self._seen)
        self.evicted["idle"] += idle
        if cap and self.entities() > cfg.max_entities:
            over = least_recent(s, self.entities() - (cfg.max_entities - cfg.max_entities // 10))
            compact(s, over, self._seen)
            self.evicted["cap"] += sum(int(m.sum()) for m in over.values())

    def _touch(self, batch: Batch) -> None:
        """Record each entity's last-seen event time (an agent session's: the agent family's stage)."""
        s, v = self.tables, self.tables.vocabs
        for ns, ids, ts in _entity_columns(batch):
            n = len(getattr(v, ns))
            last = s.last_seen.get(ns)
            if last is None or last.size < n:
                cur = 0 if last is None else last.size
                grown = np.full(max(n, cur + cur // 4, 64), np.iinfo(np.int64).min,
                                dtype=np.int64)
                if last is not None:
                    grown[: last.size] = last
                last = s.last_seen[ns] = grown
            np.maximum.at(last, ids, ts)


def _entity_columns(batch: Batch) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(namespace, ids, event times) of every evictable entity a batch mentions."""
    out = []
    if batch.api is not None:
        c = batch.api
        out += [("key", c.key, c.ts), ("principal", c.principal, c.ts), ("ip", c.ip, c.ts)]
    if batch.data is not None:
        c2 = batch.data
        has_ip = c2.ip >= 0
        out += [("principal", c2.principal, c2.ts), ("dataset", c2.dataset, c2.ts),
                ("ip", c2.ip[has_ip], c2.ts[has_ip])]
    if batch.agent is not None:
        c3 = batch.agent
        out += [("agent", c3.agent, c3.ts), ("principal", c3.principal, c3.ts)]
    return out


def _cols(batch: Batch) -> list:
    return [c for c in (batch.api, batch.data, batch.agent) if c is not None]
