"""Columnar batches: decoded events turned into arrays once, for the Numba kernels.

Strings (keys, principals, IPs, datasets, ...) are interned to dense integer ids by a
:class:`Vocab` that lives in the engine state, so kernels index per-entity arrays
directly and a checkpoint restores the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter

import numpy as np

from schemas.events import AgentExecution, ApiUsage, DataAccess, Event

SENSITIVITY = {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}
PRIVILEGE = {"read": 0, "write": 1, "admin": 2}
RISK = {None: 0, "low": 0, "medium": 1, "high": 2, "critical": 3}
OPERATION = {"read": 0, "write": 1, "delete": 2, "export": 3, "train": 4}


class Vocab:
    """String -> dense int id, append-only (ids are stable for the engine's lifetime)."""

    __slots__ = ("ids", "names")

    def __init__(self, names: list[str] | None = None) -> None:
        self.names: list[str] = list(names or [])
        self.ids: dict[str, int] = {n: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def id(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.names)
            self.names.append(name)
        return i

    def many(self, names: list[str] | list[str | None]) -> np.ndarray:
        """Ids of ``names``, new names added in order of first appearance; -1 for a ``None`` (an optional
        field left out)."""
        ids = list(map(self.ids.get, names))  # one C-level pass; the misses (new or None) are few
        if None in ids:
            for i, x in enumerate(ids):
                if x is None:
                    n = names[i]
                    ids[i] = -1 if n is None else self.id(n)
        return np.array(ids, dtype=np.int64)


@dataclass
class Vocabs:
    """Every interned namespace of the engine."""

    tenant: Vocab = field(default_factory=Vocab)
    key: Vocab = field(default_factory=Vocab)
    principal: Vocab = field(default_factory=Vocab)
    ip: Vocab = field(default_factory=Vocab)
    agent: Vocab = field(default_factory=Vocab)
    dataset: Vocab = field(default_factory=Vocab)
    dept: Vocab = field(default_factory=Vocab)
    token: Vocab = field(default_factory=Vocab)  # scopes, user agents, models, actions, agent types


def _ts_ms(events: list) -> np.ndarray:
    """Event times in epoch milliseconds (truncated, as ``int(ts.timestamp() * 1000)``)."""
    seconds = np.fromiter(map(_TIMESTAMP, map(_TS, events)), dtype=np.float64, count=len(events))
    return (seconds * 1000).astype(np.int64)


_TS, _TENANT, _TIMESTAMP = attrgetter("ts"), attrgetter("tenant"), datetime.timestamp


@dataclass
class ApiColumns:
    ts: np.ndarray
    tenant: np.ndarray
    key: np.ndarray
    principal: np.ndarray
    ip: np.ndarray
    agent_tok: np.ndarray  # user agent
    scope: np.ndarray  # -1 when absent
    model: np.ndarray  # -1 when absent
    auth_fail: np.ndarray  # bool: auth_result != ok
    tokens: np.ndarray  # tokens_in + tokens_out
    endpoint: np.ndarray  # route template (token)
    bytes: np.ndarray  # float: request_bytes + response_bytes
    error: np.ndarray  # bool: status >= 400
    events: list[ApiUsage]
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index in the input batch


@dataclass
class DataColumns:
    ts: np.ndarray
    tenant: np.ndarray
    principal: np.ndarray
    dept: np.ndarray
    dataset: np.ndarray
    owner: np.ndarray
    sensitivity: np.ndarray
    operation: np.ndarray
    rows: np.ndarray  # float
    granted: np.ndarray
    ip: np.ndarray  # -1 when absent
    events: list[DataAccess]
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index in the input batch


@dataclass
class AgentColumns:
    ts: np.ndarray
    tenant: np.ndarray
    agent: np.ndarray
    agent_type: np.ndarray
    principal: np.ndarray
    action: np.ndarray
    privilege: np.ndarray
    risk: np.ndarray
    bypassed: np.ndarray
    unapproved: np.ndarray  # approval not_required or pending
    external: np.ndarray  # triggered_by external_content
    untrusted: np.ndarray
    tokens: np.ndarray
    session: list[str]
    events: list[AgentExecution]
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index in the input batch


@dataclass
class Batch:
    """One batch of events split by kind, each kind in arrival order (``pos``: index in the input)."""

    api: ApiColumns | None
    data: DataColumns | None
    agent: AgentColumns | None

    def __len__(self) -> int:
        return sum(len(c.events) for c in (self.api, self.data, self.agent) if c is not None)


SEP = "\x1f"


def scoped(events: list, attr: str) -> list[str]:
    """Entity names qualified by tenant: the same dataset name in two tenants is two entities."""
    return [f"{t}{SEP}{x}" for t, x in zip(map(_TENANT, events), map(attrgetter(attr), events), strict=True)]


def to_batch(events: list[Event], v: Vocabs, ts: np.ndarray) -> Batch:
    """Split decoded events (``ts``: their times, from :func:`_ts_ms`) by kind and intern strings into columns.

    Events keep their arrival order (no sort by event time): the engine's result must not depend
    on where a stream is cut into batches, and a per-batch sort would make it depend on that
    whenever a stream arrives slightly out of order. The kernels tolerate out-of-order time.
    """
    types = set(map(type, events))
    if len(types) == 1:  # one kind (a worker's partition holds one topic's events): no split
        kind = types.pop()
        parts = {kind: (events, np.arange(len(events), dtype=np.int64))}
    else:
        idx: dict[type, list[int]] = {ApiUsage: [], DataAccess: [], AgentExecution: []}
        for i, t in enumerate(map(type, events)):
            idx[t].append(i)
        parts = {k: ([events[i] for i in p], np.asarray(p, dtype=np.int64)) for k, p in idx.items() if p}
    cols = []
    for kind, build in ((ApiUsage, _api), (DataAccess, _data), (AgentExecution, _agent)):
        if kind in parts:
            evs, pos = parts[kind]
            c = build(evs, ts[pos], v)
            c.pos = pos
            cols.append(c)
        else:
            cols.append(None)
    return Batch(*cols)


def _api(events: list[ApiUsage], ts: np.ndarray, v: Vocabs) -> ApiColumns:
    return ApiColumns(
        ts=ts,
        tenant=v.tenant.many([e.tenant for e in events]),
        key=v.key.many(scoped(events, "api_key_id")),
        principal=v.principal.many(scoped(events, "principal")),
        ip=v.ip.many(scoped(events, "client_ip")),
        agent_tok=v.token.many([e.user_agent for e in events]),
        scope=v.token.many([e.scope_used for e in events]),
        model=v.token.many([e.model for e in events]),
        auth_fail=np.fromiter((e.auth_result != "ok" for e in events), dtype=np.bool_, count=len(events)),
        tokens=np.fromiter(((e.tokens_in or 0) + (e.tokens_out or 0) for e in events), dtype=np.float64,
                           count=len(events)),
        endpoint=v.token.many([e.endpoint for e in events]),
        bytes=np.fromiter(((e.request_bytes or 0) + (e.response_bytes or 0) for e in events), dtype=np.float64,
                          count=len(events)),
        error=np.fromiter((e.status >= 400 for e in events), dtype=np.bool_, count=len(events)),
        events=events,
    )


def _data(events: list[DataAccess], ts: np.ndarray, v: Vocabs) -> DataColumns:
    n = len(events)
    return DataColumns(
        ts=ts,
        tenant=v.tenant.many([e.tenant for e in events]),
        principal=v.principal.many(scoped(events, "principal")),
        dept=v.dept.many(scoped(events, "principal_department")),
        dataset=v.dataset.many(scoped(events, "dataset")),
        owner=v.dept.many(scoped(events, "dataset_owner_department")),
        sensitivity=np.fromiter((SENSITIVITY[e.sensitivity] for e in events), dtype=np.int64, count=n),
        operation=np.fromiter((OPERATION[e.operation] for e in events), dtype=np.int64, count=n),
        rows=np.fromiter((float(e.rows or 0) for e in events), dtype=np.float64, count=n),
        granted=np.fromiter((e.granted for e in events), dtype=np.bool_, count=n),
        ip=v.ip.many([None if e.client_ip is None else f"{e.tenant}{SEP}{e.client_ip}" for e in events]),
        events=events,
    )


def _agent(events: list[AgentExecution], ts: np.ndarray, v: Vocabs) -> AgentColumns:
    n = len(events)
    return AgentColumns(
        ts=ts,
        tenant=v.tenant.many([e.tenant for e in events]),
        agent=v.agent.many(scoped(events, "agent_id")),
        agent_type=v.token.many([e.agent_type for e in events]),
        principal=v.principal.many(scoped(events, "principal")),
        action=v.token.many([e.action for e in events]),
        privilege=np.fromiter((PRIVILEGE[e.privilege] for e in events), dtype=np.int64, count=n),
        risk=np.fromiter((RISK[e.risk_level] for e in events), dtype=np.int64, count=n),
        bypassed=np.fromiter((e.approval == "bypassed" for e in events), dtype=np.bool_, count=n),
        unapproved=np.fromiter((e.approval in ("not_required", "pending") for e in events), dtype=np.bool_, count=n),
        external=np.fromiter((e.triggered_by == "external_content" for e in events), dtype=np.bool_, count=n),
        untrusted=np.fromiter((bool(e.untrusted_input) for e in events), dtype=np.bool_, count=n),
        tokens=np.fromiter(((e.tokens_in or 0) + (e.tokens_out or 0) for e in events), dtype=np.float64, count=n),
        session=[e.session_id for e in events],
        events=events,
    )
