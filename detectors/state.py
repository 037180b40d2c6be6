"""The engine's state: per-entity arrays by namespace, novelty sets, ledgers, all plain arrays and dicts.

Its fields are shared by the detector families (each family declares the columns, novelty sets
and tables it uses, with how compaction bounds them: ``detectors.registry``). The whole object
pickles; ``Engine.state()`` writes it into a checkpoint.
"""

from __future__ import annotations

import sys
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
        size = max(n, cur + cur // 4, 64)
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


NO_TIME = np.iinfo(np.int64).min  # a session time never set (no untrusted mark)


class Sessions:
    """Agent sessions by name, one row each (in order of their first step), their state in typed columns.

    One name -> row map and one column per field, rather than a dict per field keyed by the session's name:
    the name is held once, and a session's whole state goes in one step when it idles out (``keep``), so the
    map is rebuilt at its live size (a dict never gives back the room of deleted keys).
    """

    # column -> (dtype, value of a new session)
    COLUMNS: dict[str, tuple[type, int]] = {
        "last": (np.int64, NO_TIME),  # time of its latest-arriving step: the idle clock
        "steps": (np.int64, 0),  # steps so far
        "marked": (np.int64, NO_TIME),  # time of its last untrusted-input step
        "runaway": (np.bool_, False),  # flagged as runaway (its steps are not learned)
        "action": (np.int64, -1),  # its last action (token id), -1 before its first
        "fail_run": (np.int64, 0),  # its run of failures of that action
    }

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}  # name -> row
        self.c: dict[str, np.ndarray] = {k: np.full(0, v, dtype=t) for k, (t, v) in self.COLUMNS.items()}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: str) -> np.ndarray:
        return self.c[k]

    def rows(self, names: list[str]) -> np.ndarray:
        """Each name's row; names not held yet get new rows, in the order given."""
        ids = self.ids
        out = np.fromiter((ids.setdefault(x, len(ids)) for x in names), dtype=np.int64, count=len(names))
        n = len(ids)
        cur = self.c["last"].size
        if n > cur:
            size = max(n, cur + cur // 4, 64)
            for k, (t, v) in self.COLUMNS.items():
                grown = np.full(size, v, dtype=t)
                grown[:cur] = self.c[k]
                self.c[k] = grown
        return out

    def keep(self, mask: np.ndarray) -> list[str]:
        """Keep the rows marked True (renumbered in their order), forget the rest; the names forgotten."""
        n = len(self.ids)
        kept = np.flatnonzero(mask[:n])
        if kept.size == n:
            return []
        names = list(self.ids)  # in row order: rows are numbered as names come, and kept in their order
        gone = [names[i] for i in np.flatnonzero(~mask[:n]).tolist()]
        self.ids = {names[i]: j for j, i in enumerate(kept.tolist())}
        for k in self.c:
            self.c[k] = self.c[k][kept]  # a copy at the live size
        return gone

    def nbytes(self) -> int:
        """Bytes held by ``sys.getsizeof``: the map, its names and row numbers, the columns."""
        size = sys.getsizeof
        return (size(self.ids) + sum(size(x) + size(r) for x, r in self.ids.items())
                + sum(a.nbytes for a in self.c.values()))


class SparseRows:
    """Rows of ``width`` floats for the few entities of a namespace whose row is not all zeros (by sorted id).

    For per-entity state that is zero for most entities most of the time (a principal's held-back reads):
    a dense column per value would hold ``width`` floats for every entity.
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self.ids = np.zeros(0, dtype=np.int64)  # sorted
        self.rows = np.zeros((0, width))

    def __len__(self) -> int:
        return int(self.ids.size)

    def get(self, ids: np.ndarray) -> np.ndarray:
        """The rows of ``ids`` (zeros for an id without one), as a new array."""
        out = np.zeros((ids.size, self.width))
        if self.ids.size:
            at = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
            hit = self.ids[at] == ids
            out[hit] = self.rows[at[hit]]
        return out

    def put(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Set the rows of distinct ``ids``; a row of zeros is not held."""
        held = ~np.isin(self.ids, ids)
        nonzero = rows.any(axis=1)
        if not nonzero.any() and held.all():
            return
        new_ids = np.concatenate([self.ids[held], ids[nonzero]])
        order = np.argsort(new_ids, kind="stable")
        self.ids = new_ids[order]
        self.rows = np.concatenate([self.rows[held], rows[nonzero]])[order]

    def renumbered(self, r: np.ndarray) -> None:
        """Ids renumbered through ``r`` (old id -> new id, -1: dropped with its row); order is kept."""
        new = np.where(self.ids < r.size, r[np.minimum(self.ids, r.size - 1)], -1) if self.ids.size else self.ids
        ok = new >= 0
        self.ids, self.rows = new[ok], self.rows[ok]

    def nbytes(self) -> int:
        return self.ids.nbytes + self.rows.nbytes


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
    oh_pending: SparseRows = field(default_factory=lambda: SparseRows(24))  # principal -> held-back reads per hour
    type_events: dict[int, int] = field(default_factory=dict)  # agent type -> events seen
    type_lengths: dict[int, np.ndarray] = field(default_factory=dict)  # agent type -> sessions reaching n steps
    type_longest: dict[int, int] = field(default_factory=dict)  # agent type -> longest length 2 sessions reached
    sessions: Sessions = field(default_factory=Sessions)  # agent sessions: idle clock, steps, marks, chain
    risk: dict[int, tuple[float, int, set]] = field(default_factory=dict)  # principal -> (risk, last ts, dets)
    cooldown: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (detector, entity, tenant) -> ts
    key_models: dict[int, dict[int, int]] = field(default_factory=dict)  # key -> model -> last ts
    scope_keys: dict[int, int] = field(default_factory=dict)  # (tenant, scope) -> keys that used it
    tenant_keys: dict[int, int] = field(default_factory=dict)  # tenant -> keys seen
    watermark: int = 0  # highest event time seen
    last_seen: dict[str, np.ndarray] = field(default_factory=dict)  # namespace -> last event time per id (int64)
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
        old = [d.pop(k, None) for k in _SESSION_DICTS]  # written before the sessions table
        chain = d.get("family", {}).pop("agent_session_chain", None)
        if "sessions" not in d:
            d["sessions"] = _sessions_of(*old, chain, d.get("watermark", 0))
        if "oh_pending" not in d and "principal" in d:  # held-back reads were 24 dense columns
            d["oh_pending"] = _pending_of(d["principal"])
        if "tenant_start" not in d:  # written before learning periods: its tenants are past theirs
            d["tenant_start"] = dict.fromkeys(range(len(d["vocabs"].tenant)), 0) if "vocabs" in d else {}
        self.__dict__.update({**State().__dict__, **d})
        for ns in NAMESPACES:
            n = len(getattr(self.vocabs, ns))
            if n and ns not in self.last_seen:
                self.last_seen[ns] = np.full(n, self.watermark, dtype=np.int64)


_SESSION_DICTS = ("session_last", "session_steps", "untrusted_sessions", "runaway_sessions")


def _sessions_of(last: dict | None, steps: dict | None, marked: dict | None, runaway: set | None,
                 chain: dict | None, watermark: int) -> Sessions:
    """The sessions table from the per-field dicts checkpoints held before it (a session without an idle clock
    counts as seen at the checkpoint's watermark)."""
    last, steps, marked, chain = last or {}, steps or {}, marked or {}, chain or {}
    runaway = runaway or set()
    out = Sessions()
    names = list(dict.fromkeys([*last, *steps, *marked, *chain, *sorted(runaway)]))
    rows = out.rows(names)
    out["last"][rows] = [last.get(x, watermark) for x in names]
    out["steps"][rows] = [steps.get(x, 0) for x in names]
    out["marked"][rows] = [marked.get(x, NO_TIME) for x in names]
    out["runaway"][rows] = [x in runaway for x in names]
    out["action"][rows] = [chain.get(x, (-1, 0))[0] for x in names]
    out["fail_run"][rows] = [chain.get(x, (-1, 0))[1] for x in names]
    return out


def _pending_of(principal: Arrays) -> SparseRows:
    """The held-back reads a checkpoint kept as 24 principal columns (``oh_pend0`` ...), taken out of them."""
    out = SparseRows(24)
    names = [f"oh_pend{h}" for h in range(24)]
    if names[0] in principal.a:
        dense = np.stack([principal.a.pop(x) for x in names], axis=1)
        for x in names:
            principal.spec.pop(x, None)
        out.put(np.arange(dense.shape[0]), dense)
    return out
