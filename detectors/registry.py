"""The detector registry: detector families, each declared in one place, found by name.

A ``Family`` is the unit of detection: the event kind it reads, the detectors (stable names) it
raises, its configuration, the state it keeps (each part with the way compaction bounds it) and
its stage, one function over a batch's columns that returns findings. Rules of one kind share
their features (a key's warm-up, its rate), so a family holds several detectors over one shared
feature stage rather than one class per rule.

Everything that lists detectors is derived from a ``Registry``: the catalogue
(``detectors.catalog.CATALOG``), the engine configuration (``detectors.engine.EngineConfig``),
the compaction tables (``detectors.compaction.SEEN`` and ``FIELDS``) and the reference
(docs/detectors.md, ``python -m detectors.reference``). Adding a detector is one family entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.alerting import Finding
from detectors.columns import SEP
from detectors.kernels import first_seen
from detectors.state import NAMESPACES, State

# per-entity arrays of these namespaces are taken with their ids when compaction drops entities
ARRAY_NAMESPACES = (*NAMESPACES, "dept", "pair")
_ARRAY_EVICTION = {
    **{ns: f"taken with their {ns} ids (idle eviction, the entity cap)" for ns in NAMESPACES},
    "dept": "never evicted: departments are peer groups, few and long-lived",
    "pair": "taken with their (principal, dataset) pair ids when either half goes",
}


def option(default: Any, doc: str) -> Any:
    """A configuration field with its one-line doc (shown in docs/detectors.md)."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Spec:
    """One detector's catalogue row: what alerts name and tag (``detectors.catalog.CATALOG``)."""

    name: str
    kind: str
    entity_type: str
    title: str
    tags: tuple[str, ...]
    cooldown_s: int = 3600  # one alert per episode: hits less than this apart are folded into it
    engine: bool = True  # raised by the engine; False: by the worker's correlator (detectors/correlation.py)
    sensitive: bool = False  # every finding is on a sensitive asset: see Detector.sensitive


@dataclass(frozen=True)
class Detector:
    """A detector of a family: its stable name, what its alerts say, and how it decides (for analysts)."""

    name: str
    title: str
    entity_type: str
    tags: tuple[str, ...]
    decides: str  # one paragraph: what it catches and how it decides, in an analyst's words
    cooldown_s: int = 3600
    default_on: bool = True  # False: only when its family's switch (a config field) is on
    engine: bool = True  # False: raised outside the engine (the worker's correlator)
    # every finding is on a sensitive asset (another department's restricted or confidential data): a calibrated
    # finding at 1 in 10,000 or rarer alerts even where its tenant's budget is spent (budget.sensitive_ceiling)
    sensitive: bool = False


@dataclass(frozen=True)
class Column:
    """A per-entity column a family adds to a namespace's arrays (float64, ``fill`` for a new entity)."""

    namespace: str
    name: str
    fill: float
    doc: str

    @property
    def eviction(self) -> str:
        return _ARRAY_EVICTION.get(self.namespace, "")


@dataclass(frozen=True)
class NoveltySet:
    """A novelty set (sorted pair(a, b) keys): the namespaces of its halves (None: a token, never evicted)."""

    name: str
    halves: tuple[str | None, str | None]
    doc: str

    @property
    def eviction(self) -> str:
        gone = [ns for ns in self.halves if ns]
        return (f"pairs with an evicted {' or '.join(gone)} dropped, the rest renumbered" if gone
                else "never evicted: both halves are tokens")


@dataclass(frozen=True)
class Table:
    """A field of the engine's ``State`` a family owns, and how it stays bounded."""

    name: str
    doc: str
    eviction: str
    # made by this factory and kept in ``State.family[name]``; None: a field of ``State`` itself (older tables).
    # Keep a factory table keyed by tenant or token, or bound it in the family's ``expire``: compaction does not
    # renumber entity ids inside it
    factory: Callable[[], Any] | None = None


@dataclass(frozen=True)
class Family:
    """A detector family: one kind's detectors, their configuration, their state and their stage."""

    name: str
    kind: str  # the event kind its stage reads ("api_usage", ...); "cross": none (alert-level)
    doc: str
    detectors: tuple[Detector, ...]
    config: type | None = None  # a dataclass of its options (``option`` fields), merged into EngineConfig
    stage: Callable[[Context, Any], list[Finding]] | None = None  # (context, the kind's columns) -> findings
    escalate: Callable[[Context, Finding], tuple[Finding, list[str]] | None] | None = None  # after each alert
    expire: Callable[[State, int, Any], None] | None = None  # (tables, day start, config) at each new UTC day
    columns: tuple[Column, ...] = ()
    novelty: tuple[NoveltySet, ...] = ()
    tables: tuple[Table, ...] = ()
    switch: str | None = None  # a bool config field that turns the family on (its detectors are optional)


class Registry:
    """Families by name, in the order their stages run; the catalogue, configuration and state tables."""

    def __init__(self, families: Iterable[Family] = ()) -> None:
        self._families: dict[str, Family] = {}
        self._configs: dict[type, type] = {}
        for f in families:
            self.register(f)

    def register(self, family: Family) -> None:
        """Add a family (after the others); its names must not collide with a registered one's."""
        if family.name in self._families:
            raise ValueError(f"family {family.name!r} is registered already")
        taken = set(self.catalog())
        for d in family.detectors:
            if d.name in taken:
                raise ValueError(f"detector {d.name!r} of family {family.name!r} is registered already")
        self._families[family.name] = family
        self._check()
        self._configs.clear()

    def with_families(self, *families: Family) -> Registry:
        """A new registry: these families' and then the given ones (this registry is left as it is)."""
        return Registry([*self._families.values(), *families])

    @property
    def families(self) -> tuple[Family, ...]:
        return tuple(self._families.values())

    def catalog(self) -> dict[str, Spec]:
        return {d.name: Spec(d.name, f.kind, d.entity_type, d.title, d.tags, d.cooldown_s, d.engine, d.sensitive)
                for f in self._families.values() for d in f.detectors}

    def columns(self) -> dict[str, dict[str, float]]:
        """Namespace -> column -> fill value, over every family."""
        out: dict[str, dict[str, float]] = {ns: {} for ns in ARRAY_NAMESPACES}
        for f in self._families.values():
            for c in f.columns:
                out[c.namespace][c.name] = c.fill
        return out

    def seen(self) -> dict[str, tuple[str | None, str | None]]:
        """Novelty set -> the namespaces of its pair halves (``detectors.compaction.SEEN``)."""
        return {s.name: s.halves for f in self._families.values() for s in f.novelty}

    def tables(self) -> dict[str, Table]:
        return {t.name: t for f in self._families.values() for t in f.tables}

    def config_class(self, base: type, name: str = "EngineConfig", module: str = "detectors.engine") -> type:
        """A frozen dataclass of ``base``'s fields and then every family's config fields (names unique)."""
        cls = self._configs.get(base)
        if cls is None:
            specs: dict[str, tuple[str, Any, Any]] = {}
            for part in (base, *(f.config for f in self._families.values() if f.config is not None)):
                for fl in dataclasses.fields(part):
                    if fl.name in specs:
                        raise ValueError(f"config field {fl.name!r} of {part.__name__} is declared twice")
                    specs[fl.name] = (fl.name, fl.type, field(default=fl.default, metadata=fl.metadata))
            cls = dataclasses.make_dataclass(name, list(specs.values()), frozen=True)
            cls.__module__ = module
            cls.__doc__ = "Thresholds and time constants of the engine and every detector family (all tenants)."
            self._configs[base] = cls
        return cls

    def _check(self) -> None:
        cols: set[tuple[str, str]] = set()
        names: set[str] = set()
        for f in self._families.values():
            for c in f.columns:
                if c.namespace not in ARRAY_NAMESPACES:
                    raise ValueError(f"column {c.name!r} of {f.name!r}: no namespace {c.namespace!r}")
                if (c.namespace, c.name) in cols:
                    raise ValueError(f"column {c.namespace}.{c.name} is declared twice")
                cols.add((c.namespace, c.name))
            for s in f.novelty:
                if s.name in names:
                    raise ValueError(f"novelty set {s.name!r} is declared twice")
                names.add(s.name)


class Context:
    """What a stage sees: the configuration, the engine's state, novelty look-ups and the finding builder."""

    def __init__(self, config: Any, tables: State, catalog: Mapping[str, Spec]) -> None:
        self.config = config
        self.tables = tables
        self.catalog = catalog

    def novel(self, name: str, keys: np.ndarray) -> np.ndarray:
        """Which ``keys`` the novelty set ``name`` has not seen (earlier keys of the batch count); learns them."""
        tables = self.tables
        mask, tables.seen[name] = first_seen(keys, tables.seen.get(name, np.zeros(0, dtype=np.int64)))
        return mask

    def finding(self, detector: str, c: Any, i: int, entity: str, principal: str, score: float,
                features: list, explanation: str) -> Finding:
        """A hit of ``detector`` on event ``i`` of columns ``c`` about ``entity`` (``principal``: its owner).

        Feature values come from numpy columns; they are made plain floats here, since the alert's encoders
        (msgspec) refuse numpy scalars and one such value would stop the writer."""
        for f in features:
            f.value = float(f.value)
            if f.baseline is not None:
                f.baseline = float(f.baseline)
            f.contribution = float(f.contribution)
        return Finding(detector, self.catalog[detector].kind, int(c.tenant[i]), entity, int(c.ts[i]), int(c.pos[i]),
                       c.event_id[i],
                       self.tables.vocabs.principal.id(f"{c.block.cols['tenant'][i]}{SEP}{principal}"),
                       float(score), features, explanation)
