"""The engine's state: per-entity arrays by namespace, novelty sets, ledgers, all plain arrays and dicts.

Its fields are shared by the detector families (each family declares the columns, novelty sets
and tables it uses, with how compaction bounds them: ``detectors.registry``). The whole object
pickles; ``Engine.state()`` writes it into a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.budget import AlertBudget
from detectors.columns import Vocabs

NAMESPACES = ("key", "principal", "agent", "ip", "dataset")  # entities with a last-seen time: evictable


class Arrays:
    """Per-entity state arrays of one namespace (float64 columns), grown as its vocabulary grows."""

    def __init__(self, **spec: float) -> None:
        self.spec = spec  # column -> fill value of a new entity
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

    def add_column(self, name: str, fill: float) -> None:
        """A column this table lacks (a family registered after it was made), at ``fill`` for every row."""
        if name in self.spec:
            return
        n = next(iter(self.a.values())).size if self.a else 0
        self.spec[name] = fill
        self.a[name] = np.full(n, fill, dtype=np.float64)

    def __getitem__(self, k: str) -> np.ndarray:
        return self.a[k]

    def nbytes(self) -> int:
        return sum(x.nbytes for x in self.a.values())


# every field of State the engine itself keeps (the families' own are their ``Table``s), and how it is bounded
CORE_FIELDS: dict[str, str] = {
    "vocabs": "entity names: evicted ids dropped, survivors renumbered (tenant, dept and token never evicted)",
    "key": "per-key rows (the columns families declare on 'key'): taken with their ids",
    "ip": "per-IP rows: taken with their ids",
    "principal": "per-principal rows: taken with their ids",
    "agent": "per-agent rows: taken with their ids",
    "dataset": "per-dataset rows: taken with their ids",
    "dept": "per-department rows: departments are peer groups, never evicted",
    "pair": "per-(principal, dataset) rows: taken with their pair ids (compaction._compact_pairs)",
    "seen": "novelty sets: remapped through the halves their family declares, an undeclared set dropped",
    "cooldown": "(detector, entity name, tenant) -> ts: names, not ids; dropped once past every cooldown",
    "watermark": "highest event time: not entity-keyed",
    "last_seen": "namespace -> last event time per id: taken with their ids",
    "session_last": "session name -> ts: the session idle clock (the agent family's expire, session_idle_hours)",
    "scopes": "scope ledger (governance), pair(key, scope token): remapped through compaction.SCOPES",
    "tenant_start": "tenant -> first event time (the learning period): tenants are never evicted",
    "budget": "false-alarm budget: per tenant an event count, per (tenant, detector) a fixed-size histogram and a "
              "time; tenants are never evicted and detectors are few: bounded by tenants x detectors",
    "family": "the families' own tables (Table.factory), each bounded as its Table says",
}
# fields that changed name: old checkpoint name -> field
_RENAMED = {"tow_tenant": "hours_tenant", "tow_principal": "hours_principal"}


@dataclass
class State:
    """Every table of the engine; the per-namespace arrays get their columns from the registry."""

    vocabs: Vocabs = field(default_factory=Vocabs)
    key: Arrays = field(default_factory=Arrays)
    ip: Arrays = field(default_factory=Arrays)
    principal: Arrays = field(default_factory=Arrays)
    agent: Arrays = field(default_factory=Arrays)
    dataset: Arrays = field(default_factory=Arrays)
    dept: Arrays = field(default_factory=Arrays)
    pairs: dict[int, int] = field(default_factory=dict)  # (principal, dataset) -> dense id
    pair: Arrays = field(default_factory=Arrays)
    seen: dict[str, np.ndarray] = field(default_factory=dict)  # novelty sets, sorted int64
    hours_tenant: np.ndarray = field(default_factory=lambda: np.zeros((0, 24)))  # hour-of-day histograms (UTC)
    hours_principal: np.ndarray = field(default_factory=lambda: np.zeros((0, 24)))
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
    behaviour: dict[int, Any] = field(default_factory=dict)  # tenant -> Loda model of its keys' windows
    behaviour_hist: dict[int, np.ndarray] = field(default_factory=dict)  # tenant -> histogram of learned scores
    tenant_start: dict[int, int] = field(default_factory=dict)  # tenant -> event time of its first event
    family: dict[str, Any] = field(default_factory=dict)  # a family's own tables by name (Table.factory)
    budget: AlertBudget = field(default_factory=AlertBudget)  # the false-alarm budget (detectors.budget)

    def add_columns(self, columns: dict[str, dict[str, float]]) -> None:
        """Give each namespace's arrays the columns it lacks (``Registry.columns()``), at their fill values."""
        for ns, spec in columns.items():
            arrays = getattr(self, ns)
            for name, fill in spec.items():
                arrays.add_column(name, fill)

    def __setstate__(self, d: dict) -> None:
        """The one compatibility path for old checkpoints: a checkpoint written before a field was added
        restores it with its default, and entities restored without a last-seen time count as seen at the
        checkpoint's watermark (so idle eviction starts counting from there). Columns a family added since
        are filled in by the engine (``add_columns``)."""
        d = {_RENAMED.get(k, k): x for k, x in d.items()}
        d.pop("tenant_first", None)  # no longer kept: a tenant's start is tenant_start
        if "tenant_start" not in d:  # written before learning periods: its tenants are past theirs
            d["tenant_start"] = dict.fromkeys(range(len(d["vocabs"].tenant)), 0) if "vocabs" in d else {}
        self.__dict__.update({**State().__dict__, **d})
        for ns in NAMESPACES:
            n = len(getattr(self.vocabs, ns))
            if n and ns not in self.last_seen:
                self.last_seen[ns] = np.full(n, self.watermark, dtype=np.int64)
