"""The scoring engine: one object, driven by the worker, the replay command and the benchmarks.

``Engine.process(events)`` takes a batch of decoded events (any kinds, any order within
the batch), turns it into columns once, runs every detector's kernels over the columns,
and returns explained alerts. It knows nothing about Kafka or ClickHouse. Its whole state
is plain arrays and dicts: ``state()`` / ``Engine.from_state()`` give identical scores.

Time is event time throughout. Per-entity baselines are learned online; events that
score as anomalous are not learned (a burst cannot teach itself in), and novelty
detectors wait for an entity to warm up, leaning on its peer group (department, agent
type, tenant) meanwhile.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from detectors.catalog import CATALOG
from detectors.columns import (
    SEP,
    AgentColumns,
    ApiColumns,
    Batch,
    DataColumns,
    Parts,
    Vocabs,
    parts_of,
    to_batch,
    ts_ms,
    window,
)
from detectors.compaction import MAX_NEW_PER_EVENT, NAMESPACES, compact, footprint, least_recent
from detectors.governance import UnusedScopes, learn_scopes, unused_scopes
from detectors.kernels import (
    after_mark,
    burst_vs_baseline,
    cusum,
    decayed_count,
    distinct_recent,
    first_seen,
    log_zscore,
    pair,
    session_runaway,
)
from detectors.models.multivariate import Loda
from schemas.alerts import Alert, Evidence, Feature, alert_id, severity_of
from schemas.block import EventBlock
from schemas.events import Event

MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
_NO_TIME = np.iinfo(np.int64).min  # a session never marked
_NO_LENGTHS = np.zeros(1024, dtype=np.int64)  # an agent type's session lengths before its first session


@dataclass(frozen=True)
class EngineConfig:
    """Thresholds and time constants (one configuration for every tenant)."""

    auth_fail_tau_s: float = 60.0
    auth_fail_min: float = 20.0
    key_warm_events: int = 30
    key_warm_hours: float = 6.0
    scope_warm_events: int = 30
    scope_cold_events: int = 10
    scope_peer_share: float = 0.05
    scope_peer_min_keys: int = 20
    rate_tau_fast_s: float = 600.0
    rate_tau_slow_s: float = 86_400.0
    rate_min: float = 40.0
    rate_ratio: float = 8.0
    extraction_min: float = 8.0
    extraction_models: int = 3
    volume_z: float = 6.0
    volume_min_seen: int = 5  # own baseline after 5 reads (variance floored), the department judges before
    volume_peer_z: float = 6.0
    drift_k: float = 0.75
    drift_h: float = 10.0
    off_hours_share: float = 0.4
    off_hours_tenant_share: float = 0.5
    off_hours_prior: float = 24.0
    off_hours_min_events: int = 3
    training_min_writes: int = 3
    denied_tau_s: float = 300.0
    denied_min: float = 4.0
    runaway_tau_s: float = 120.0
    runaway_min: float = 60.0
    runaway_session_steps: int = 30
    runaway_ratio: float = 8.0  # against the daily mean rate: a busy agent peaks at ~2.5x it, and its sessions overlap
    agent_type_warm_events: int = 200
    risk_tau_s: float = 21_600.0
    risk_threshold: float = 2.5
    risk_min_detectors: int = 2
    max_evidence: int = 50
    # api.behaviour_outlier: per-key tumbling windows in event time, one Loda model per tenant
    behaviour: bool = False  # off by default: 1 false alert per ~195k benign events on unseen seeds 71 and 97
    behaviour_window_s: int = 600  # epoch-aligned, so windows do not depend on where the stream starts
    behaviour_quantile: float = 0.9999  # threshold: this quantile of the tenant's learned window scores ...
    behaviour_floor: float = 4.2  # ... but never below this score
    behaviour_min_windows: int = 2000  # scored-and-learned windows of the tenant before it may alert
    behaviour_projections: int = 100
    behaviour_warmup: int = 256  # windows that fit the model's front end (learned, never scored)
    # bounded state (see ``Engine._compact``): in event time, never wall time
    idle_evict_days: float = 30.0  # forget a key, principal, agent, IP or dataset unseen this long (0 = never)
    session_idle_hours: float = 24.0  # forget an agent session's step count and untrusted mark after this
    max_entities: int = 1_000_000  # cap on tracked entities (all five namespaces); least recently seen go first
    cap_check_events: int = 50_000  # the cap is enforced at every multiple of this many events of the stream


# api.behaviour_outlier: the open window of each key (window index, -1: none) and its running sums
BEHAVIOUR_SUMS = {"bw_win": -1.0, "bw_n": 0.0, "bw_fail": 0.0, "bw_err": 0.0, "bw_tok": 0.0, "bw_bytes": 0.0}
# the feature vector of a closed window, in this order
BEHAVIOUR_FEATURES = ("requests", "endpoints", "models", "scopes", "client_ips", "tokens", "bytes")
_HIST_WIDTH, _HIST_BINS = 0.05, 1200  # score histogram: bins of 0.05 up to 60
_B31 = np.int64(1 << 31)


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


class Arrays:
    """Per-entity state arrays of one namespace, grown as its vocabulary grows."""

    def __init__(self, **spec: float) -> None:
        self.spec = spec  # name -> fill value
        self.a: dict[str, np.ndarray] = {k: np.full(0, v, dtype=np.float64) for k, v in spec.items()}

    def fit(self, n: int) -> None:
        cur = next(iter(self.a.values())).size if self.a else 0
        if n <= cur:
            return
        size = max(n, 2 * cur, 64)
        for k, v in self.spec.items():
            new = np.full(size, v, dtype=np.float64)
            new[:cur] = self.a[k]
            self.a[k] = new

    def __getitem__(self, k: str) -> np.ndarray:
        return self.a[k]

    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.a.values())


@dataclass
class State:
    vocabs: Vocabs = field(default_factory=Vocabs)
    key: Arrays = field(default_factory=lambda: Arrays(n=0, first=0, fast=0, fast_last=0, slow=0, slow_last=0,
                                                      since=0, **BEHAVIOUR_SUMS))
    ip: Arrays = field(default_factory=lambda: Arrays(fail=0, fail_last=0))
    principal: Arrays = field(default_factory=lambda: Arrays(
        n=0, first=0, mean=0, var=0.25, seen=0, denied=0, denied_last=0, night=0, night_last=0))
    agent: Arrays = field(default_factory=lambda: Arrays(fast=0, fast_last=0, slow=0, slow_last=0, since=0))
    dataset: Arrays = field(default_factory=lambda: Arrays(writes=0, writers=0, training=0))
    dept: Arrays = field(default_factory=lambda: Arrays(mean=0, var=0.25, seen=0))
    pairs: dict[int, int] = field(default_factory=dict)  # (principal, dataset) -> dense id
    pair: Arrays = field(default_factory=lambda: Arrays(mean=0, var=0.25, seen=0, s=0))
    seen: dict[str, np.ndarray] = field(default_factory=dict)  # novelty sets, sorted int64
    tenant_first: dict[int, int] = field(default_factory=dict)
    tow_tenant: np.ndarray = field(default_factory=lambda: np.zeros((0, 24)))  # hour-of-day histograms (UTC)
    tow_principal: np.ndarray = field(default_factory=lambda: np.zeros((0, 24)))
    type_events: dict[int, int] = field(default_factory=dict)  # agent type -> events seen
    untrusted_sessions: dict[str, int] = field(default_factory=dict)  # session -> ts of last untrusted step
    session_steps: dict[str, int] = field(default_factory=dict)  # session -> steps so far
    type_lengths: dict[int, np.ndarray] = field(default_factory=dict)  # agent type -> sessions reaching n steps
    type_longest: dict[int, int] = field(default_factory=dict)  # agent type -> longest length 2 sessions reached
    runaway_sessions: set[str] = field(default_factory=set)  # sessions flagged as runaway (not learned)
    risk: dict[int, tuple[float, int, set]] = field(default_factory=dict)  # principal -> (risk, last ts, dets)
    cooldown: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (detector, entity, tenant) -> ts
    key_models: dict[int, dict[int, int]] = field(default_factory=dict)  # key -> model -> last ts
    scope_keys: dict[int, int] = field(default_factory=dict)  # (tenant, scope) -> keys that used it
    tenant_keys: dict[int, int] = field(default_factory=dict)  # tenant -> keys seen
    watermark: int = 0  # highest event time seen
    last_seen: dict[str, np.ndarray] = field(default_factory=dict)  # namespace -> last event time per id (int64)
    session_last: dict[str, int] = field(default_factory=dict)  # session -> ts of its latest-arriving step
    scopes: dict[str, np.ndarray] = field(default_factory=dict)  # "granted"/"used": sorted pair(key, scope token)
    behaviour: dict[int, Loda] = field(default_factory=dict)  # tenant -> Loda model of its keys' windows
    behaviour_hist: dict[int, np.ndarray] = field(default_factory=dict)  # tenant -> histogram of learned scores

    def __setstate__(self, d: dict) -> None:
        """The one compatibility path for old checkpoints: a checkpoint written before a field was added
        restores it with its default, and entities restored without a last-seen time count as seen at the
        checkpoint's watermark (so idle eviction starts counting from there)."""
        self.__dict__.update({**State().__dict__, **d})
        for col, fill in BEHAVIOUR_SUMS.items():  # per-key window sums, new columns of an old key table
            if col not in self.key.spec:
                self.key.spec[col] = fill
                n = next(iter(self.key.a.values())).size if self.key.a else 0
                self.key.a[col] = np.full(n, fill, dtype=np.float64)
        for ns in NAMESPACES:
            n = len(getattr(self.vocabs, ns))
            if n and ns not in self.last_seen:
                self.last_seen[ns] = np.full(n, self.watermark, dtype=np.int64)


class Engine:
    """Scores batches of events into explained alerts."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.s = State()
        self.events_seen = 0
        self.alerts_emitted = 0
        self.scores: dict[str, float] = {}  # event_id -> highest detector score, for the last batch only
        self.alert_principals: dict[str, str] = {}  # alert_id -> principal name, for the last batch's alerts only
        self.evicted: dict[str, int] = {"idle": 0, "cap": 0}  # entities forgotten, by reason

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
        batch = to_batch(parts, self.s.vocabs, ts)
        self.events_seen += len(batch)
        findings: list[Finding] = []
        if batch.api is not None:
            findings += self._api(batch.api)
        if batch.data is not None:
            findings += self._data(batch.data)
        if batch.agent is not None:
            findings += self._agent(batch.agent)
        findings.sort(key=lambda f: (f.seq, f.detector, f.entity))
        self.scores = {}
        for f in findings:
            if f.score > self.scores.get(f.event_id, 0.0):
                self.scores[f.event_id] = f.score
        alerts = self._emit(findings)
        self._touch(batch)
        learn_scopes(self.s, batch.api)
        self.s.watermark = max(self.s.watermark, max(int(c.ts.max()) for c in _cols(batch)))
        self.alerts_emitted += len(alerts)
        return alerts

    def state(self) -> bytes:
        """The whole engine state (configuration included) as bytes."""
        return pickle.dumps({"config": asdict(self.config), "state": self.s, "events_seen": self.events_seen,
                             "alerts_emitted": self.alerts_emitted, "evicted": self.evicted}, protocol=5)

    @classmethod
    def from_state(cls, blob: bytes) -> Engine:
        d = pickle.loads(blob)  # noqa: S301 - our own checkpoints, written by state()
        eng = cls(EngineConfig(**d["config"]))
        eng.s = d["state"]
        eng.events_seen = d["events_seen"]
        eng.alerts_emitted = d["alerts_emitted"]
        eng.evicted = dict(d.get("evicted", eng.evicted))  # State's own missing fields: State.__setstate__
        return eng

    def memory_bytes(self) -> int:
        """Bytes held by the per-entity arrays, novelty sets and histograms (not the vocab strings).

        Cheap enough for every metrics scrape; ``footprint()`` counts everything, strings and dicts too.
        """
        s = self.s
        total = sum(a.nbytes() for a in (s.key, s.ip, s.principal, s.agent, s.dataset, s.pair, s.dept))
        total += sum(x.nbytes for x in s.seen.values()) + s.tow_tenant.nbytes + s.tow_principal.nbytes
        total += sum(x.nbytes for x in s.last_seen.values()) + sum(x.nbytes for x in s.scopes.values())
        return total

    def footprint(self) -> dict[str, int]:
        """Bytes held by each part of the state, vocab strings and dict-held state included."""
        return footprint(self.s)

    def entities(self) -> int:
        v = self.s.vocabs
        return len(v.key) + len(v.principal) + len(v.agent) + len(v.ip) + len(v.dataset)

    def unused_scopes(self) -> list[UnusedScopes]:
        """Governance: keys granted scopes they never used over the observed period (not alerts)."""
        return unused_scopes(self.s, _iso)

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
            run = np.maximum(np.maximum.accumulate(ts), self.s.watermark)
            day = run // DAY
            prev = np.concatenate(([self.s.watermark // DAY], day[:-1]))
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
        cfg, s = self.config, self.s
        drop: dict[str, np.ndarray] = {}
        if day_start is not None and cfg.idle_evict_days > 0:
            cutoff = day_start - int(cfg.idle_evict_days * DAY)
            for ns in NAMESPACES:
                n = len(getattr(s.vocabs, ns))
                last = s.last_seen.get(ns)
                if n and last is not None:
                    m = last[:n] < cutoff
                    if m.any():
                        drop[ns] = m
            # time-stamped dict state past every use it has (risk decays in hours, model sets look back 10
            # minutes). Cooldowns are keyed by entity name, not id, and hold the time of an episode's latest
            # hit (each hit extends it): one is kept while it can still fold a hit, whatever the horizon
            live = min(cutoff, day_start - max(sp.cooldown_s for sp in CATALOG.values()) * 1000)
            s.cooldown = {k: t for k, t in s.cooldown.items() if t >= live}
            s.risk = {p: x for p, x in s.risk.items() if x[1] >= cutoff}
            s.key_models = {k: d2 for k, d in s.key_models.items()
                            if (d2 := {m: t for m, t in d.items() if t >= cutoff})}
        if day_start is not None and cfg.session_idle_hours > 0:
            cut = day_start - int(cfg.session_idle_hours * HOUR)
            gone = [sid for sid, t in s.session_last.items() if t < cut]
            for sid in gone:
                del s.session_last[sid]
                s.session_steps.pop(sid, None)
                s.untrusted_sessions.pop(sid, None)
                s.runaway_sessions.discard(sid)
        idle = sum(int(m.sum()) for m in drop.values())
        compact(s, drop)
        self.evicted["idle"] += idle
        if cap and self.entities() > cfg.max_entities:
            over = least_recent(s, self.entities() - (cfg.max_entities - cfg.max_entities // 10))
            compact(s, over)
            self.evicted["cap"] += sum(int(m.sum()) for m in over.values())

    def _touch(self, batch: Batch) -> None:
        """Record each entity's last-seen event time (and each agent session's)."""
        s, v = self.s, self.s.vocabs
        for ns, ids, ts in _entity_columns(batch):
            n = len(getattr(v, ns))
            last = s.last_seen.get(ns)
            if last is None or last.size < n:
                grown = np.full(max(n, 2 * (0 if last is None else last.size), 64), np.iinfo(np.int64).min,
                                dtype=np.int64)
                if last is not None:
                    grown[: last.size] = last
                last = s.last_seen[ns] = grown
            np.maximum.at(last, ids, ts)
        if batch.agent is not None:
            s.session_last.update(zip(batch.agent.session, batch.agent.ts.tolist(), strict=True))

    # -- helpers ----------------------------------------------------------------------------
    def _novel(self, name: str, keys: np.ndarray) -> np.ndarray:
        mask, self.s.seen[name] = first_seen(keys, self.s.seen.get(name, np.zeros(0, dtype=np.int64)))
        return mask

    def _tow(self, hist: np.ndarray, n: int) -> np.ndarray:
        if hist.shape[0] < n:
            grown = np.zeros((max(n, 2 * hist.shape[0], 16), 24))
            grown[: hist.shape[0]] = hist
            return grown
        return hist

    # -- api_usage --------------------------------------------------------------------------
    def _api(self, c: ApiColumns) -> list[Finding]:
        cfg, s, v = self.config, self.s, self.s.vocabs
        s.key.fit(len(v.key))
        s.ip.fit(len(v.ip))
        k = s.key
        out: list[Finding] = []
        n_before = _count(k, c.key, c.ts)
        warm = (n_before >= cfg.key_warm_events) & (c.ts - k["first"][c.key] >= cfg.key_warm_hours * HOUR)

        # new client IP / user agent for a warm key
        new_ip = self._novel("key_ip", pair(c.key, c.ip))
        ua = np.where(c.agent_tok < 0, 0, c.agent_tok)
        new_ua = self._novel("key_ua", pair(c.key, ua))
        for i in np.flatnonzero((new_ip | new_ua) & warm & ~c.auth_fail):
            e = c.events[i]
            what = []
            if new_ip[i]:
                what.append(f"client IP {e.client_ip}")
            if new_ua[i]:
                what.append(f"user agent '{e.user_agent}'")
            score = 0.85 if (new_ip[i] and new_ua[i]) else 0.65
            out.append(self._f("api.new_client", c, i, e.api_key_id, e.principal, score,
                               [Feature(name="new_client_ip", value=float(new_ip[i]), baseline=0.0),
                                Feature(name="new_user_agent", value=float(new_ua[i]), baseline=0.0),
                                Feature(name="key_events_seen", value=float(n_before[i]))],
                               f"API key {e.api_key_id} was used from {' and '.join(what)}, never seen for this key "
                               f"in its {int(n_before[i])} earlier requests."))

        # scope never used by a warm key
        scope = np.where(c.scope < 0, 0, c.scope)
        new_scope = self._novel("key_scope", pair(c.key, scope)) & (c.scope >= 0)
        # a key with a short history of its own starts from its peer group's: a scope (almost) no key of its
        # tenant uses is news for a key of any age past a handful of requests
        peer_users, peer_keys = self._scope_peers(c, new_scope, scope)
        rare = (peer_keys >= cfg.scope_peer_min_keys) & (peer_users < cfg.scope_peer_share * peer_keys)
        young = (n_before >= cfg.scope_cold_events) & (c.ts - k["first"][c.key] >= cfg.key_warm_hours * HOUR)
        for i in np.flatnonzero(new_scope & ~c.auth_fail & (((n_before >= cfg.scope_warm_events) & warm)
                                                            | (rare & young))):
            e = c.events[i]
            sc = e.scope_used or ""
            score = 0.9 if sc.startswith("admin") else (0.75 if sc in ("fine_tune:write", "files:write") else 0.55)
            out.append(self._f("api.new_scope", c, i, e.api_key_id, e.principal, score,
                               [Feature(name="scope_first_use", value=1.0, baseline=0.0),
                                Feature(name="key_events_seen", value=float(n_before[i])),
                                Feature(name="tenant_keys_using_scope", value=float(peer_users[i]),
                                        baseline=float(peer_keys[i]))],
                               f"API key {e.api_key_id} used scope '{sc}' ({e.method} {e.endpoint}) for the first "
                               f"time after {int(n_before[i])} requests that never needed it."))

        # authentication-failure burst per client IP
        fails = decayed_count(c.ip, c.ts, c.auth_fail.astype(np.float64), s.ip["fail"], s.ip["fail_last"],
                              cfg.auth_fail_tau_s * 1000)
        for i in np.flatnonzero(c.auth_fail & (fails >= cfg.auth_fail_min)):
            e = c.events[i]
            out.append(self._f("api.auth_failure_burst", c, i, e.client_ip, e.principal,
                               min(1.0, 0.6 + fails[i] / 200),
                               [Feature(name="auth_failures_per_min", value=round(float(fails[i]), 1),
                                        baseline=0.0)],
                               f"{e.client_ip} failed authentication about {fails[i]:.0f} times in the last minute "
                               f"(latest: {e.auth_result} on key {e.api_key_id})."))

        # request-rate burst per key against its own baseline (learns only non-burst traffic)
        fast, expected = burst_vs_baseline(c.key, c.ts, k["fast"], k["fast_last"], k["slow"], k["slow_last"],
                                           k["since"], cfg.rate_tau_fast_s * 1000, cfg.rate_tau_slow_s * 1000,
                                           cfg.rate_ratio, 1.0, cfg.rate_min)
        burst = (fast >= cfg.rate_min) & (fast >= cfg.rate_ratio * expected) & warm
        new_model = self._novel("key_model", pair(c.key, np.where(c.model < 0, 0, c.model))) & (c.model >= 0)
        # model extraction shows before the rate does: queries spread over models (at least
        # `extraction_models` in 10 minutes) at `rate_ratio` x the key's usual rate, from `extraction_min` requests
        early = ((fast >= cfg.extraction_min) & (fast >= cfg.rate_ratio * expected) & (c.model >= 0) & ~burst
                 & (warm | young))
        recent_models = self._key_models_recent(c, np.flatnonzero((burst & ~new_model) | early))
        for i in np.flatnonzero(burst):
            e = c.events[i]
            ratio = fast[i] / expected[i]
            feats = [Feature(name="requests_per_10min", value=round(float(fast[i]), 1),
                             baseline=round(float(expected[i]), 2), contribution=1.0)]
            out.append(self._f("api.rate_burst", c, i, e.api_key_id, e.principal, min(1.0, 0.5 + ratio / 100), feats,
                               f"API key {e.api_key_id} made about {fast[i]:.0f} requests in 10 minutes, "
                               f"{ratio:.0f}x its usual {expected[i]:.1f}."))
            if new_model[i] or (e.model and recent_models[i] >= 3):
                out.append(self._f("api.model_extraction", c, i, e.api_key_id, e.principal, 0.85, feats + [
                    Feature(name="new_model", value=float(new_model[i]), baseline=0.0)],
                    f"API key {e.api_key_id} is sending a sustained burst of inference queries ({fast[i]:.0f} in "
                    f"10 minutes, {ratio:.0f}x usual) across models it did not use before, a model-extraction "
                    f"pattern."))
        for i in np.flatnonzero(early):
            n_models = int(recent_models[i])
            if n_models < cfg.extraction_models:
                continue
            e = c.events[i]
            ratio = fast[i] / expected[i]
            out.append(self._f("api.model_extraction", c, i, e.api_key_id, e.principal, 0.8, [
                Feature(name="requests_per_10min", value=round(float(fast[i]), 1),
                        baseline=round(float(expected[i]), 2), contribution=1.0),
                Feature(name="models_in_10min", value=float(n_models), baseline=1.0),
                Feature(name="new_model", value=float(new_model[i]), baseline=0.0)],
                f"API key {e.api_key_id} is querying {n_models} models within 10 minutes at {ratio:.0f}x its usual "
                f"rate ({fast[i]:.0f} requests), a model-extraction pattern."))
        self._learn_key_models(c)
        if cfg.behaviour:
            out += self._behaviour(c)
        return out

    def _behaviour(self, c: ApiColumns) -> list[Finding]:
        """api.behaviour_outlier: per key, tumbling event-time windows scored by one Loda model per tenant.

        A key's window closes when the first event of a later window arrives for the key (arrival order;
        a late event of an earlier window counts in the key's open window). The closed window's feature
        vector is scored before it is learned, and learned only if it stays under the tenant's adaptive
        threshold. The alert's event is the one that closed the window: the first moment the window is known
        to be complete, so the result does not depend on batch ends, and an alert is never raised about a
        window that may still grow.
        """
        cfg, s, k = self.config, self.s, self.s.key
        m = len(c.events)
        order = np.argsort(c.key, kind="stable")
        ks, ws = c.key[order], c.ts[order] // (cfg.behaviour_window_s * 1000)
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        sizes = np.diff(np.r_[starts, m])
        ng = starts.size
        gid = np.repeat(np.arange(ng), sizes)
        keys = ks[starts]
        cur = k["bw_win"][keys].astype(np.int64)  # the key's open window, -1: none
        off = gid.astype(np.int64) << 32
        eff = np.maximum(np.maximum.accumulate(ws + off) - off, cur[gid])  # each event's window: running max
        prev = np.r_[np.int64(-1), eff[:-1]]
        prev[starts] = cur
        new_seg = eff != prev
        new_seg[starts] = True
        seg = np.cumsum(new_seg) - 1  # segment (key, window) of each event, in sorted order
        seg_start = np.flatnonzero(new_seg)
        nseg = seg_start.size
        seg_key = ks[seg_start]
        seg_win = eff[seg_start]
        seg_close = np.full(nseg, -1, dtype=np.int64)  # arrival index of the event that closed the segment
        last_of_group = np.r_[starts[1:], m] - 1
        not_last = np.ones(nseg, dtype=np.bool_)
        not_last[seg[last_of_group]] = False
        nxt = np.flatnonzero(not_last)
        seg_close[nxt] = order[seg_start[nxt + 1]]
        sums = np.stack([np.add.reduceat(x[order].astype(np.float64), seg_start)
                         for x in (np.ones(m), c.auth_fail, c.error, c.tokens, c.bytes)], axis=1)
        # the stored open windows: continued by the key's first segment, or closed by its first event
        has = cur >= 0
        cont = has & (eff[starts] == cur)
        closed_old = np.flatnonzero(has & ~cont)
        stored = np.stack([k[col][keys] for col in ("bw_n", "bw_fail", "bw_err", "bw_tok", "bw_bytes")], axis=1)
        sums[seg[starts[cont]]] += stored[cont]
        nw = nseg + closed_old.size  # windows: the segments, then the stored windows closed here
        wid_of_group = np.full(ng, -1, dtype=np.int64)
        wid_of_group[cont] = seg[starts[cont]]
        wid_of_group[closed_old] = nseg + np.arange(closed_old.size)
        w_key = np.r_[seg_key, keys[closed_old]]
        w_win = np.r_[seg_win, cur[closed_old]]
        w_close = np.r_[seg_close, order[starts[closed_old]]]
        w_sums = np.r_[sums, stored[closed_old]]
        # distinct endpoints, models, scopes (tokens tagged by kind) and client IPs of every window
        seen = s.seen
        empty = np.zeros(0, dtype=np.int64)
        old_tok, old_ip = seen.get("key_window", empty), seen.get("key_window_ip", empty)
        wseg = seg[np.argsort(order)]  # arrival index -> window id
        tok = np.concatenate([c.endpoint * 4, np.where(c.model >= 0, c.model * 4 + 1, -1),
                              np.where(c.scope >= 0, c.scope * 4 + 2, -1)])
        tok_w = np.tile(wseg, 3)
        ok = tok >= 0
        distinct = np.zeros((nw, 4), dtype=np.float64)
        new_sets = []
        for old, vals, wids, kinds in ((old_tok, tok[ok], tok_w[ok], True), (old_ip, c.ip, wseg, False)):
            a = old >> 31
            in_batch = np.isin(a, keys)
            g = np.searchsorted(keys, a[in_batch])
            ow = wid_of_group[g]
            live = ow >= 0  # entries of a key without an open window (none, unless restored inconsistently)
            codes = np.unique(np.r_[(wids << 31) | vals, (ow[live] << 31) | (old[in_batch][live] & (_B31 - 1))])
            cw = codes >> 31
            if kinds:
                distinct[:, :3] = np.bincount(cw * 4 + (codes & 3), minlength=nw * 4).reshape(nw, 4)[:, :3]
            else:
                distinct[:, 3] = np.bincount(cw, minlength=nw)
            open_w = np.zeros(nw, dtype=np.bool_)
            open_w[seg[last_of_group]] = True
            keep = codes[open_w[cw]]
            new_sets.append(np.sort(np.r_[old[~in_batch], (w_key[keep >> 31] << 31) | (keep & (_B31 - 1))]))
        seen["key_window"], seen["key_window_ip"] = new_sets
        # the open windows after this batch
        lw = seg[last_of_group]
        k["bw_win"][keys] = seg_win[lw]
        for j, col in enumerate(("bw_n", "bw_fail", "bw_err", "bw_tok", "bw_bytes")):
            k[col][keys] = sums[lw, j]
        # score the closed windows in the order of the events that closed them
        done = np.flatnonzero(w_close >= 0)
        done = done[np.argsort(w_close[done], kind="stable")]
        if done.size == 0:
            return []
        n = w_sums[done, 0]
        # auth failures and errors stay out of the vector: benign keys have them in every tenant, and the
        # per-IP failure burst detector owns them (they are still summed per window, for later use)
        X = np.column_stack([n, distinct[done, 0], distinct[done, 1], distinct[done, 2], distinct[done, 3],
                             w_sums[done, 3], w_sums[done, 4]])
        tenant = c.tenant[w_close[done]]
        out: list[Finding] = []
        for t in np.unique(tenant).tolist():
            rows = np.flatnonzero(tenant == t)
            model = s.behaviour.get(t)
            if model is None:
                model = s.behaviour[t] = Loda(n_projections=cfg.behaviour_projections, warmup=cfg.behaviour_warmup,
                                              seed=1 + t)
                s.behaviour_hist[t] = np.zeros(_HIST_BINS)
            score, thr, flag = model.score_learn_gated(X[rows], s.behaviour_hist[t], _HIST_WIDTH,
                                                       cfg.behaviour_quantile, cfg.behaviour_floor,
                                                       cfg.behaviour_min_windows, one_sided=True)
            for r in np.flatnonzero(flag).tolist():
                j = int(rows[r])
                out.append(self._behaviour_finding(c, model, X[j], int(w_close[done[j]]), int(w_win[done[j]]),
                                                   float(score[r]), float(thr[r])))
        return out

    def _behaviour_finding(self, c: ApiColumns, model: Loda, x: np.ndarray, i: int, win: int, score: float,
                           thr: float) -> Finding:
        z, typical = model.explain(x)
        top = [f for f in np.argsort(-np.abs(z), kind="stable")[:3].tolist() if abs(z[f]) >= 1.0] or \
            [int(np.argmax(np.abs(z)))]
        feats = [Feature(name=BEHAVIOUR_FEATURES[f], value=round(float(x[f]), 3), baseline=round(float(typical[f]), 3),
                         contribution=round(float(z[f]), 2)) for f in top]
        feats.append(Feature(name="loda_score", value=round(score, 2), baseline=round(thr, 2)))
        e = c.events[i]
        w = self.config.behaviour_window_s * 1000
        parts = ", ".join(f"{BEHAVIOUR_FEATURES[f].replace('_', ' ')} {_fmt(x[f])} (typical {_fmt(typical[f])})"
                          for f in top)
        return self._f("api.behaviour_outlier", c, i, e.api_key_id, e.principal,
                       min(0.9, 0.55 + 0.05 * (score - thr)), feats,
                       f"API key {e.api_key_id} behaved unlike its tenant's keys in the window {_iso(win * w)} to "
                       f"{_iso((win + 1) * w)}: {parts}; outlier score {score:.1f} above the tenant's threshold "
                       f"{thr:.1f} (raised on the key's first later request, which closed the window).")

    def _scope_peers(self, c: ApiColumns, new_scope: np.ndarray, scope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """As of each event: keys of its tenant that used its scope before, and keys of its tenant seen before.

        The counts are of tracked keys: compaction takes an evicted key out of them (``compaction.uncount_keys``),
        so a key that comes back is counted once again, not twice.
        """
        s = self.s
        new_key = self._novel("tenant_key", c.key.astype(np.int64))
        ts_key = pair(c.tenant, scope)
        uniq, inv = np.unique(ts_key, return_inverse=True)  # one dict look-up per (tenant, scope), not per event
        users = np.array([s.scope_keys.get(x, 0) for x in uniq.tolist()], dtype=np.int64)[inv]
        users += _earlier(ts_key, new_scope)
        uniq, inv = np.unique(c.tenant, return_inverse=True)
        keys = np.array([s.tenant_keys.get(x, 0) for x in uniq.tolist()], dtype=np.int64)[inv]
        keys += _earlier(c.tenant, new_key)
        for x in ts_key[new_scope].tolist():
            s.scope_keys[x] = s.scope_keys.get(x, 0) + 1
        for x in c.tenant[new_key].tolist():
            s.tenant_keys[x] = s.tenant_keys.get(x, 0) + 1
        return users, keys

    def _key_models_recent(self, c: ApiColumns, at: np.ndarray) -> np.ndarray:
        """Distinct models each event's key queried in the 10 minutes up to it (earlier batches too), at the
        event indices ``at`` (0 elsewhere). One compiled pass over the batch per index: a burst of thousands of
        requests is where this is asked most."""
        out = np.zeros(len(c.key), dtype=np.int64)
        if not at.size:
            return out
        store = self.s.key_models
        prior = [(k, m, t) for k in np.unique(c.key[at]).tolist() for m, t in store.get(k, {}).items()]
        pk, pm, pt = (np.array(x, dtype=np.int64) for x in zip(*prior, strict=True)) if prior else (
            np.zeros(0, dtype=np.int64),) * 3
        out[at] = distinct_recent(c.key.astype(np.int64), c.ts, c.model.astype(np.int64), at, 10 * MIN, pk, pm, pt)
        return out

    def _learn_key_models(self, c: ApiColumns) -> None:
        sel = np.flatnonzero(c.model >= 0)
        if not sel.size:
            return
        km = pair(c.key[sel], c.model[sel])
        uniq, inv = np.unique(km, return_inverse=True)
        last = np.full(uniq.size, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, inv, c.ts[sel])
        store = self.s.key_models
        for kk, t in zip(uniq.tolist(), last.tolist(), strict=True):
            d = store.setdefault(kk >> 31, {})
            m = kk & 0x7FFFFFFF
            if t > d.get(m, -1):
                d[m] = t

    # -- data_access ------------------------------------------------------------------------
    def _data(self, c: DataColumns) -> list[Finding]:
        cfg, s, v = self.config, self.s, self.s.vocabs
        s.principal.fit(len(v.principal))
        s.dataset.fit(len(v.dataset))
        p = s.principal
        out: list[Finding] = []
        p_rank = _rank(c.principal)  # each event's count of earlier events of its principal in the batch
        p_before = _count(p, c.principal, c.ts, p_rank)  # ... and before the batch too
        warm = (p_before + 1 >= 20) & (c.ts - p["first"][c.principal] >= 12 * HOUR)

        # volume far above the principal's baseline (granted reads/exports only)
        g = np.flatnonzero(c.granted)
        if g.size:
            # a cold principal learns every event (z is 0 below `warm`), so its count before each
            # event is its count before the batch plus its earlier events in the batch
            cold = p["seen"][c.principal[g]] + _rank(c.principal[g]) < cfg.volume_min_seen
            z = log_zscore(c.principal[g], c.rows[g], p["mean"], p["var"], p["seen"], 0.02, 4.0, 0.25,
                           cfg.volume_min_seen)
            # peer baseline: until a principal has its own, its department's judges it
            s.dept.fit(len(v.dept))
            dz = log_zscore(c.dept[g], c.rows[g], s.dept["mean"], s.dept["var"], s.dept["seen"], 0.01, 4.0, 0.25,
                            50)
            peer = cold & (dz >= cfg.volume_peer_z)
            for j in np.flatnonzero((z >= cfg.volume_z) | peer):
                i = g[j]
                e = c.events[i]
                base = float(np.expm1(s.dept["mean"][c.dept[i]] if peer[j] else p["mean"][c.principal[i]]))
                out.append(self._f("data.volume_spike", c, i, e.principal, e.principal, min(1.0, 0.4 + z[j] / 20),
                                   [Feature(name="rows", value=float(c.rows[i]), baseline=round(base, 1)),
                                    Feature(name="rows_log_z", value=round(float(dz[j] if peer[j] else z[j]), 2),
                                            baseline=0.0)],
                                   f"{e.principal} {e.operation} {int(c.rows[i]):,} rows of {e.dataset} "
                                   f"({e.sensitivity}), about {c.rows[i] / max(base, 1):.0f}x "
                                   + (f"what their department usually reads per access ({base:,.0f})."
                                      if peer[j] else f"their usual {base:,.0f} per access.")))
            # slow drift per (principal, dataset): CUSUM of the log-volume z-score, baseline frozen above 2 sigma
            pid = self._pair_ids(c.principal[g], c.dataset[g])
            s.pair.fit(len(s.pairs))
            pz = log_zscore(pid, c.rows[g], s.pair["mean"], s.pair["var"], s.pair["seen"], 0.02, 2.0,
                            0.25, 5)
            # a spike (z at the spike threshold) is the spike detector's business: it leaves the drift sum as it
            # is, so one bulk export does not hold the sum up for days of normal reads after it
            cs = cusum(pid, np.where(pz >= cfg.volume_z, cfg.drift_k, pz), s.pair["s"], cfg.drift_k, 4.0)
            for j in np.flatnonzero(cs >= cfg.drift_h):
                i = g[j]
                e = c.events[i]
                out.append(self._f("data.volume_drift", c, i, e.principal, e.principal, 0.7,
                                   [Feature(name="cusum", value=round(float(cs[j]), 2), baseline=0.0),
                                    Feature(name="rows", value=float(c.rows[i]),
                                            baseline=round(float(np.expm1(s.pair["mean"][pid[j]])), 1))],
                                   f"{e.principal}'s reads of {e.dataset} have kept growing above their baseline "
                                   f"(cumulative drift {cs[j]:.1f}); latest {int(c.rows[i]):,} rows."))

        # segmentation: sensitive data of another department, never touched by the principal or its department
        sens = (c.sensitivity >= 2) & c.granted & (c.dept != c.owner)
        new_pd = self._novel("principal_dataset", pair(c.principal, c.dataset))
        new_dd = self._novel("dept_dataset", pair(c.dept, c.dataset))
        hit = sens & new_pd & new_dd & ((c.sensitivity == 3) | warm)
        for i in np.flatnonzero(hit):
            e = c.events[i]
            score = 0.85 if c.sensitivity[i] == 3 else 0.6
            out.append(self._f("data.segmentation", c, i, e.principal, e.principal, score,
                               [Feature(name="sensitivity", value=float(c.sensitivity[i])),
                                Feature(name="department_peers_accessed", value=0.0, baseline=1.0)],
                               f"{e.principal} ({e.principal_department}) {e.operation} {e.sensitivity} dataset "
                               f"{e.dataset} owned by {e.dataset_owner_department}, which nobody in "
                               f"{e.principal_department} had accessed before."))

        # off-hours access to sensitive data (time-of-week profiles of the tenant and the principal)
        s.tow_tenant = self._tow(s.tow_tenant, len(v.tenant))
        s.tow_principal = self._tow(s.tow_principal, len(v.principal))
        # hour of day in UTC: each tenant's and principal's own histogram places their working hours,
        # whatever their time zone (hour-of-week would leave every bucket unseen for a week)
        how = (c.ts // HOUR) % 24
        t_hist, p_hist = s.tow_tenant, s.tow_principal
        # histograms as of each event: the profile before the batch plus the batch's earlier events
        t_tot = t_hist[c.tenant].sum(axis=1) + _rank(c.tenant)
        p_tot = p_hist[c.principal].sum(axis=1) + p_rank
        t_share = (t_hist[c.tenant, how] + _rank(pair(c.tenant, how))) / np.maximum(t_tot, 1) * 24
        p_share = (p_hist[c.principal, how] + _rank(pair(c.principal, how))) / np.maximum(p_tot, 1) * 24
        tenants, t_inv = np.unique(c.tenant, return_inverse=True)  # one dict look-up per tenant, not per event
        for t in tenants.tolist():
            s.tenant_first.setdefault(t, int(c.ts[c.tenant == t][0]))
        t_first = np.array([s.tenant_first[t] for t in tenants.tolist()], dtype=np.int64)[t_inv]
        history = (c.ts - t_first >= DAY) & (t_tot >= 500) & (p_before >= cfg.off_hours_min_events)
        # the principal's own share of this hour, starting from its peer group's (the tenant's) as a prior worth
        # `off_hours_prior` events: a thin profile is judged by the tenant, a rich one by itself (one stray event
        # at this hour does not make it a working hour). The tenant's own share only has to say the hour is not a
        # busy one: service accounts keep a tenant's nights half as busy as its days.
        m = cfg.off_hours_prior
        p_share = (p_share * p_tot / 24 + m * t_share / 24) / (p_tot + m) * 24
        off = history & (t_share < cfg.off_hours_tenant_share) & (p_share < cfg.off_hours_share)
        off_sens = off & (c.sensitivity >= 2) & c.granted
        night = decayed_count(c.principal, c.ts, off_sens.astype(np.float64), p["night"], p["night_last"],
                              float(HOUR))
        new_pip = self._novel("principal_ip", pair(c.principal, np.where(c.ip < 0, 0, c.ip))) & (c.ip >= 0)
        np.add.at(t_hist, (c.tenant, how), 1.0)
        np.add.at(p_hist, (c.principal, how), 1.0)
        # a burst of off-hours reads alone is how some people work; from a new IP it is not
        for i in np.flatnonzero(off_sens & new_pip):
            e = c.events[i]
            out.append(self._f("data.off_hours", c, i, e.principal, e.principal, 0.8 if new_pip[i] else 0.65,
                               [Feature(name="hour_of_week_share", value=round(float(p_share[i]), 3), baseline=1.0),
                                Feature(name="off_hours_sensitive_per_hour", value=round(float(night[i]), 1)),
                                Feature(name="new_client_ip", value=float(new_pip[i]), baseline=0.0)],
                               f"{e.principal} {e.operation} {e.sensitivity} dataset {e.dataset} at an hour when "
                               f"they and their organisation are almost never active"
                               + (f", from a new IP {e.client_ip}." if new_pip[i] else ".")))

        # writes to datasets by a principal who never wrote there (training-data poisoning)
        d = s.dataset
        writes = c.granted & ((c.operation == 1) | (c.operation == 2) | (c.operation == 4))
        wi = np.flatnonzero(writes)
        if wi.size:
            new_writer = self._novel("dataset_writer", pair(c.dataset[wi], c.principal[wi]))
            for j, i in enumerate(wi):
                ds = c.dataset[i]
                e = c.events[i]
                training = d["training"][ds] > 0 or e.purpose == "model-training" or c.operation[i] == 4
                # training data (known as such from its writes' purpose) or a dataset fed by few writers
                # (a pipeline) gets a writer from outside its owning department
                fed = training and d["writers"][ds] <= 2 and d["writes"][ds] >= cfg.training_min_writes
                if new_writer[j] and fed and c.dept[i] != c.owner[i]:
                    out.append(self._f(
                        "data.training_write", c, i, e.principal, e.principal, 0.9 if training else 0.6,
                        [Feature(name="dataset_writers", value=float(d["writers"][ds]), baseline=None),
                         Feature(name="dataset_writes_seen", value=float(d["writes"][ds]))],
                        f"{e.principal} ({e.principal_department}) wrote to training dataset "
                        f"{e.dataset}, which only {int(d['writers'][ds])} other principal(s) had written in "
                        f"{int(d['writes'][ds])} writes."))
                d["writes"][ds] += 1
                if training and not (new_writer[j] and fed and c.dept[i] != c.owner[i]):
                    d["training"][ds] = 1.0
                if new_writer[j]:
                    d["writers"][ds] += 1

        # bursts of denied access (probing)
        denied = decayed_count(c.principal, c.ts, (~c.granted).astype(np.float64), p["denied"], p["denied_last"],
                               cfg.denied_tau_s * 1000)
        for i in np.flatnonzero(~c.granted & (denied >= cfg.denied_min)):
            e = c.events[i]
            out.append(self._f("data.denied_burst", c, i, e.principal, e.principal, min(1.0, 0.5 + denied[i] / 40),
                               [Feature(name="denied_per_5min", value=round(float(denied[i]), 1), baseline=0.0)],
                               f"{e.principal} was denied access {denied[i]:.0f} times in about 5 minutes "
                               f"(latest: {e.dataset}, {e.sensitivity})."))
        return out

    def _pair_ids(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        keys = pair(a, b)
        uniq, inv = np.unique(keys, return_inverse=True)
        ids = np.empty(uniq.size, dtype=np.int64)
        pairs = self.s.pairs
        for j, kk in enumerate(uniq.tolist()):
            i = pairs.get(kk)
            if i is None:
                i = pairs[kk] = len(pairs)
            ids[j] = i
        return ids[inv]

    # -- agent_execution --------------------------------------------------------------------
    def _agent(self, c: AgentColumns) -> list[Finding]:
        cfg, s, v = self.config, self.s, self.s.vocabs
        s.agent.fit(len(v.agent))
        a = s.agent
        out: list[Finding] = []
        # high-risk actions without approval
        hi = c.risk >= 2
        for i in np.flatnonzero((c.bypassed & (c.risk >= 1)) | (hi & c.unapproved)):
            e = c.events[i]
            out.append(self._f("agent.approval_bypass", c, i, e.agent_id, e.principal,
                               0.95 if c.bypassed[i] and c.risk[i] >= 3 else (0.85 if c.bypassed[i] else 0.75),
                               [Feature(name="risk_level", value=float(c.risk[i])),
                                Feature(name="approval_bypassed", value=float(c.bypassed[i]), baseline=0.0)],
                               f"Agent {e.agent_id} ran {e.risk_level}-risk action {e.action} on {e.target_system} "
                               f"with approval '{e.approval}'."))
        # privileged actions triggered by (or right after) untrusted content
        sessions = s.untrusted_sessions
        sid, names = c.block.factor("session_id")  # per event, its session's index in names (first appearance)
        marked = np.array([sessions.get(x, _NO_TIME) for x in names], dtype=np.int64)
        after_untrusted = after_mark(sid, c.ts, c.untrusted, marked, marked != _NO_TIME, HOUR)
        for j in np.unique(sid[c.untrusted]).tolist():
            sessions[names[j]] = int(marked[j])
        priv = c.privilege >= 1
        # agent-type novelty: an action (with privilege) this agent type never took
        new_ta = self._novel("type_action", pair(c.agent_type, c.action))
        types, inv, counts = np.unique(c.agent_type, return_inverse=True, return_counts=True)
        seen_before = np.array([s.type_events.get(t, 0) for t in types.tolist()], dtype=np.int64)
        type_n = seen_before[inv] + _rank(c.agent_type)
        for t, n in zip(types.tolist(), (seen_before + counts).tolist(), strict=True):
            s.type_events[t] = n
        type_warm = type_n >= cfg.agent_type_warm_events
        for i in np.flatnonzero(priv & (c.external | (after_untrusted & new_ta & type_warm))):
            e = c.events[i]
            why = "triggered by external content" if c.external[i] else "right after the session read untrusted input"
            out.append(self._f("agent.untrusted_privileged", c, i, e.agent_id, e.principal,
                               0.95 if c.privilege[i] == 2 else 0.85,
                               [Feature(name="privilege", value=float(c.privilege[i])),
                                Feature(name="triggered_by_external", value=float(c.external[i]), baseline=0.0),
                                Feature(name="after_untrusted_input", value=float(after_untrusted[i]), baseline=0.0)],
                               f"Agent {e.agent_id} ({e.agent_type}) took {e.privilege} action {e.action} on "
                               f"{e.target_system} {why}: a likely prompt injection."))
        for i in np.flatnonzero(priv & new_ta & type_warm):
            e = c.events[i]
            out.append(self._f("agent.new_privileged_action", c, i, e.agent_id, e.principal, 0.7,
                               [Feature(name="type_action_first_use", value=1.0, baseline=0.0),
                                Feature(name="privilege", value=float(c.privilege[i]))],
                               f"Agent {e.agent_id} took {e.privilege} action {e.action} on {e.target_system}, "
                               f"which no {e.agent_type} agent took in {int(type_n[i])} earlier steps."))
        # runaway: a session far longer than any its agent type has run, or an action-rate explosion
        # (the longest length at least two sessions of a type reached: one runaway session cannot raise it)
        steps = s.session_steps
        n_steps = np.array([steps.get(x, 0) for x in names], dtype=np.int64)
        flagged = np.array([x in s.runaway_sessions for x in names], dtype=np.bool_)
        was_flagged = flagged.copy()
        hists = np.stack([s.type_lengths.get(t, _NO_LENGTHS) for t in types.tolist()])
        longest_of = np.array([s.type_longest.get(t, 0) for t in types.tolist()], dtype=np.int64)
        step_n, long_session = session_runaway(sid, inv, type_warm, n_steps, flagged, hists, longest_of,
                                               cfg.runaway_session_steps)
        steps.update(zip(names, n_steps.tolist(), strict=True))
        s.runaway_sessions.update(names[j] for j in np.flatnonzero(flagged & ~was_flagged).tolist())
        for t, h, top in zip(types.tolist(), hists, longest_of.tolist(), strict=True):
            s.type_lengths[t] = h.copy()  # its own array, not a view keeping this batch's stack alive
            if top != s.type_longest.get(t, 0):
                s.type_longest[t] = top
        for i in np.flatnonzero(long_session):
            e = c.events[i]
            longest = s.type_longest.get(int(c.agent_type[i]), 0)
            out.append(self._f("agent.runaway", c, i, e.agent_id, e.principal, min(1.0, 0.6 + step_n[i] / 500),
                               [Feature(name="session_steps", value=float(step_n[i]), baseline=float(longest)),
                                Feature(name="tokens", value=float(c.tokens[i]))],
                               f"Agent {e.agent_id} has taken {step_n[i]} steps in session {e.session_id}; normal "
                               f"{e.agent_type} sessions before ran longer than {longest}."))
        fast, expected = burst_vs_baseline(c.agent, c.ts, a["fast"], a["fast_last"], a["slow"], a["slow_last"],
                                           a["since"], cfg.runaway_tau_s * 1000, 86_400_000.0,
                                           cfg.runaway_ratio, 2.0, cfg.runaway_min)
        for i in np.flatnonzero((fast >= cfg.runaway_min) & (fast >= cfg.runaway_ratio * expected)):
            e = c.events[i]
            out.append(self._f("agent.runaway", c, i, e.agent_id, e.principal, min(1.0, 0.6 + fast[i] / 300),
                               [Feature(name="actions_per_min", value=round(float(fast[i]), 1),
                                        baseline=round(float(expected[i]), 2)),
                                Feature(name="tokens", value=float(c.tokens[i]))],
                               f"Agent {e.agent_id} is running about {fast[i]:.0f} actions a minute, "
                               f"{fast[i] / expected[i]:.0f}x its usual {expected[i]:.1f} (session {e.session_id})."))
        if len(sessions) > 200_000:  # bounded: forget untrusted marks older than a day
            horizon = int(c.ts.max()) - DAY
            s.untrusted_sessions = {k: t for k, t in sessions.items() if t >= horizon}
        if len(steps) > 500_000:  # bounded: keep the newest half of the session step counters
            s.session_steps = dict(list(steps.items())[len(steps) // 2:])
            s.runaway_sessions = {x for x in s.runaway_sessions if x in s.session_steps}
        return out

    # -- findings -> alerts -----------------------------------------------------------------
    def _f(self, detector: str, c: Any, i: int, entity: str, principal: str, score: float,
           features: list[Feature], explanation: str) -> Finding:
        return Finding(detector, CATALOG[detector].kind, int(c.tenant[i]), entity, int(c.ts[i]), int(c.pos[i]),
                       c.event_id[i], self.s.vocabs.principal.id(f"{c.block.cols['tenant'][i]}{SEP}{principal}"),
                       float(score), features,
                       explanation)

    def _emit(self, findings: list[Finding]) -> list[Alert]:
        cfg, s = self.config, self.s
        open_: dict[tuple[str, str, int], Alert] = {}
        out: list[Alert] = []
        for f in findings:
            key = (f.detector, f.entity, f.tenant)
            last = s.cooldown.get(key)
            if last is not None and f.ts - last < CATALOG[f.detector].cooldown_s * 1000:
                # one alert per episode: a hit within the cooldown extends it, so the tail of a long burst
                # (a decayed rate still above threshold after the attack stopped) is not a fresh alert
                s.cooldown[key] = max(last, f.ts)
                cur = open_.get(key)
                if cur is not None:  # fold later hits of this batch into its open alert
                    cur.last_seen = _iso(max(f.ts, last))
                    if len(cur.evidence.event_ids) < cfg.max_evidence:
                        cur.evidence.event_ids.append(f.event_id)
                    cur.score = max(cur.score, round(f.score, 3))
                    cur.severity = severity_of(cur.score)
                continue
            s.cooldown[key] = f.ts
            a = self._alert(f)
            open_[key] = a
            out.append(a)
            name = self._principal_name(f.principal)
            if name:
                self.alert_principals[a.alert_id] = name
            self._risk(f, a, out, open_)
        return out

    def _principal_name(self, principal: int) -> str:
        """The name of a principal id (without its tenant), '' if it has none."""
        names = self.s.vocabs.principal.names
        return names[principal].split(SEP, 1)[1] if 0 <= principal < len(names) else ""

    def _alert(self, f: Finding, detector: str | None = None) -> Alert:
        spec = CATALOG[detector or f.detector]
        tenant = self.s.vocabs.tenant.names[f.tenant]
        return Alert(
            alert_id=alert_id(spec.name, tenant, f.entity, f.event_id), tenant=tenant, detector=spec.name,
            kind=spec.kind, entity_type=spec.entity_type, entity=f.entity, severity=severity_of(f.score),
            score=round(f.score, 3), first_seen=_iso(f.ts), last_seen=_iso(f.ts), title=spec.title,
            explanation=f.explanation, evidence=Evidence(features=f.features, event_ids=[f.event_id]),
            tags=list(spec.tags))

    def _risk(self, f: Finding, a: Alert, out: list[Alert], open_: dict) -> None:
        """Risk-based alerting: evidence accumulates per principal, with decay, across all streams."""
        cfg, s = self.config, self.s
        risk, last, dets = s.risk.get(f.principal, (0.0, f.ts, set()))
        decay = float(np.exp(-(f.ts - last) / (cfg.risk_tau_s * 1000)))
        risk = risk * decay + f.score
        if decay < 0.05:
            dets = set()
        dets = dets | {f.detector}
        s.risk[f.principal] = (risk, f.ts, dets)
        if risk >= cfg.risk_threshold or len(dets) >= cfg.risk_min_detectors:
            name = self._principal_name(f.principal)
            key = ("risk.incident", name, f.tenant)
            last_inc = s.cooldown.get(key)
            if last_inc is not None and f.ts - last_inc < CATALOG["risk.incident"].cooldown_s * 1000:
                return
            s.cooldown[key] = f.ts
            inc = Finding("risk.incident", "cross", f.tenant, name, f.ts, f.seq, f.event_id, f.principal,
                          min(1.0, 0.5 + risk / 10),
                          [Feature(name="risk", value=round(risk, 2), baseline=cfg.risk_threshold),
                           Feature(name="detectors", value=float(len(dets)), baseline=float(cfg.risk_min_detectors))],
                          f"{name} accumulated risk {risk:.1f} from {len(dets)} detector(s) "
                          f"({', '.join(sorted(dets))}) within hours.")
            alert = self._alert(inc)
            alert.tags = sorted({t for d in dets for t in CATALOG[d].tags})
            out.append(alert)
            if name:
                self.alert_principals[alert.alert_id] = name
            open_[key] = alert


def _count(arrays: Arrays, ids: np.ndarray, ts: np.ndarray, rank: np.ndarray | None = None) -> np.ndarray:
    """Warm-up bookkeeping: add a batch to the per-entity ``n`` and ``first`` (first-seen time).

    Returns each event's count of earlier events of its entity (in arrival order); ``rank`` is
    ``_rank(ids)`` when the caller has it already.
    """
    n = arrays["n"]
    uniq, first_ix, counts = np.unique(ids, return_index=True, return_counts=True)
    fresh = n[uniq] == 0
    arrays["first"][uniq[fresh]] = ts[first_ix[fresh]]
    before = n[ids] + (_rank(ids) if rank is None else rank)
    n[uniq] += counts
    return before


def _earlier(ids: np.ndarray, flag: np.ndarray) -> np.ndarray:
    """Each element's count of earlier flagged elements with an equal id in ``ids`` (arrival order)."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    x = flag[order].astype(np.int64)
    cs = np.cumsum(x) - x
    g = ids[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    out = np.empty(ids.size, dtype=np.int64)
    out[order] = cs - np.repeat(cs[starts], np.diff(np.r_[starts, ids.size]))
    return out


def _rank(ids: np.ndarray) -> np.ndarray:
    """Each element's count of earlier equal elements in ``ids`` (0 for the first occurrence)."""
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    _, counts = np.unique(ids[order], return_counts=True)
    rank = np.empty(ids.size, dtype=np.int64)
    rank[order] = np.arange(ids.size) - np.repeat(np.cumsum(counts) - counts, counts)
    return rank


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


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or float(v).is_integer() else f"{v:.2f}"


def _iso(ts_ms: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(ts_ms), "ms"), unit="ms", timezone="UTC"))
