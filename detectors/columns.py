"""Columnar batches: decoded events turned into arrays once, for the Numba kernels.

Strings (keys, principals, IPs, datasets, ...) are interned to dense integer ids by a
:class:`Vocab` that lives in the engine state, so kernels index per-entity arrays
directly and a checkpoint restores the same ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.block import EventBlock, blocks_of, code, first_appearance
from schemas.events import Event

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


class _KindColumns:
    """What every kind's columns give beside their arrays: ``events``, the structs (decoded when first asked
    for), and ``event_id``, read from the block."""

    block: EventBlock

    @property
    def events(self) -> Sequence[Event]:
        return self.block.events

    @property
    def event_id(self) -> list[str]:
        return self.block.cols["event_id"]


@dataclass
class ApiColumns(_KindColumns):
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
    block: EventBlock  # the contract's columns (event ids, names, ...) and, decoded when asked, the structs
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index in the input batch


@dataclass
class DataColumns(_KindColumns):
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
    block: EventBlock
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index in the input batch


@dataclass
class AgentColumns(_KindColumns):
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
    block: EventBlock
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # index in the input batch
    blocked: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))  # outcome blocked
    failed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))  # outcome error



@dataclass
class Batch:
    """One batch of events split by kind, each kind in arrival order (``pos``: index in the input)."""

    api: ApiColumns | None
    data: DataColumns | None
    agent: AgentColumns | None

    def __len__(self) -> int:
        return sum(len(c.ts) for c in (self.api, self.data, self.agent) if c is not None)


SEP = "\x1f"
_SCOPED = ("{}" + SEP + "{}").format


def scoped(tenants: list[str], names: list[str]) -> list[str]:
    """Entity names qualified by tenant: the same dataset name in two tenants is two entities."""
    return list(map(_SCOPED, tenants, names))


def interned(vocab: Vocab, b: EventBlock, name: str, by_tenant: bool = False) -> np.ndarray:
    """Ids of string column ``name`` of ``b`` in ``vocab`` (-1 where absent; ``by_tenant``: the names
    qualified by tenant, see :func:`scoped`). Each distinct value is interned once, in order of first
    appearance, so new names get the ids interning event by event would give them."""
    codes, names = b.factor(name)
    if by_tenant and names:
        t_codes, tenants = b.factor("tenant")
        if len(tenants) == 1:  # the usual batch: one tenant
            names = [_SCOPED(tenants[0], x) for x in names]
        else:  # distinct (tenant, name) pairs, in order of first appearance
            n = len(names)
            codes, used = first_appearance(np.where(codes >= 0, t_codes.astype(np.int64) * n + codes, -1))
            names = [_SCOPED(tenants[p // n], names[p % n]) for p in used.tolist()]
    if not names:
        return np.full(len(codes), -1, dtype=np.int64)
    ids = np.append(vocab.many(names), -1)  # the last slot: an absent value's code (-1) reads -1
    return ids[codes]


Parts = list[tuple[EventBlock, np.ndarray | None]]  # blocks by kind, each event's index in the batch (None: all)


def parts_of(events: Sequence[Event] | EventBlock) -> Parts:
    """A batch as blocks by kind: a decoded block as it is, structs turned into columns."""
    if isinstance(events, EventBlock):
        return [(events, None)]
    return blocks_of(events)


def ts_ms(parts: Parts, n: int) -> np.ndarray:
    """Event times (epoch milliseconds) in arrival order."""
    if len(parts) == 1 and parts[0][1] is None:
        return parts[0][0].ts_ms()
    ts = np.empty(n, dtype=np.int64)
    for b, pos in parts:
        ts[pos] = b.ts_ms()
    return ts


def window(parts: Parts, start: int, stop: int) -> Parts:
    """The events at positions ``start`` to ``stop`` of the batch, positions counted from ``start``."""
    out: Parts = []
    for b, pos in parts:
        if pos is None:
            out.append((b.slice(start, stop), None))
            continue
        m = (pos >= start) & (pos < stop)
        if m.any():
            out.append((b.take(np.flatnonzero(m)), pos[m] - start))
    return out


def to_batch(parts: Parts, v: Vocabs, ts: np.ndarray) -> Batch:
    """Intern a batch's strings into columns, by kind (``ts``: the batch's times in arrival order).

    Events keep their arrival order (no sort by event time): the engine's result must not depend
    on where a stream is cut into batches, and a per-batch sort would make it depend on that
    whenever a stream arrives slightly out of order. The kernels tolerate out-of-order time.
    """
    cols: dict[str, Any] = {}
    for b, pos in parts:
        p = np.arange(len(b), dtype=np.int64) if pos is None else pos
        c = _BUILD[b.kind](b, ts if pos is None else ts[pos], v)
        c.pos = p
        cols[b.kind] = c
    return Batch(cols.get("api_usage"), cols.get("data_access"), cols.get("agent_execution"))


def _api(b: EventBlock, ts: np.ndarray, v: Vocabs) -> ApiColumns:
    c = b.cols
    return ApiColumns(
        ts=ts,
        tenant=interned(v.tenant, b, "tenant"),
        key=interned(v.key, b, "api_key_id", by_tenant=True),
        principal=interned(v.principal, b, "principal", by_tenant=True),
        ip=interned(v.ip, b, "client_ip", by_tenant=True),
        agent_tok=interned(v.token, b, "user_agent"),
        scope=interned(v.token, b, "scope_used"),
        model=interned(v.token, b, "model"),
        auth_fail=c["auth_result"] != _OK,
        tokens=c["tokens_in"].astype(np.float64) + c["tokens_out"],
        endpoint=interned(v.token, b, "endpoint"),
        bytes=c["request_bytes"].astype(np.float64) + c["response_bytes"],
        error=c["status"] >= 400,
        block=b,
    )


def _data(b: EventBlock, ts: np.ndarray, v: Vocabs) -> DataColumns:
    c = b.cols
    return DataColumns(
        ts=ts,
        tenant=interned(v.tenant, b, "tenant"),
        principal=interned(v.principal, b, "principal", by_tenant=True),
        dept=interned(v.dept, b, "principal_department", by_tenant=True),
        dataset=interned(v.dataset, b, "dataset", by_tenant=True),
        owner=interned(v.dept, b, "dataset_owner_department", by_tenant=True),
        sensitivity=c["sensitivity"].astype(np.int64),
        operation=c["operation"].astype(np.int64),
        rows=c["rows"].astype(np.float64),
        granted=c["granted"],
        ip=interned(v.ip, b, "client_ip", by_tenant=True),
        block=b,
    )


def _agent(b: EventBlock, ts: np.ndarray, v: Vocabs) -> AgentColumns:
    c = b.cols
    approval = c["approval"]
    return AgentColumns(
        ts=ts,
        tenant=interned(v.tenant, b, "tenant"),
        agent=interned(v.agent, b, "agent_id", by_tenant=True),
        agent_type=interned(v.token, b, "agent_type"),
        principal=interned(v.principal, b, "principal", by_tenant=True),
        action=interned(v.token, b, "action"),
        privilege=c["privilege"].astype(np.int64),
        risk=np.maximum(c["risk_level"], 0).astype(np.int64),  # absent counts as low
        bypassed=approval == _BYPASSED,
        unapproved=(approval == _NOT_REQUIRED) | (approval == _PENDING),
        external=c["triggered_by"] == _EXTERNAL,
        untrusted=c["untrusted_input"],
        tokens=c["tokens_in"].astype(np.float64) + c["tokens_out"],
        session=c["session_id"],
        block=b,
        blocked=c["outcome"] == _BLOCKED,
        failed=c["outcome"] == _FAILED,
    )


_BUILD: dict[str, Any] = {"api_usage": _api, "data_access": _data, "agent_execution": _agent}
_OK = code("api_usage", "auth_result", "ok")
_BYPASSED, _NOT_REQUIRED, _PENDING = (code("agent_execution", "approval", a) for a in ("bypassed", "not_required",
                                                                                         "pending"))
_EXTERNAL = code("agent_execution", "triggered_by", "external_content")
_BLOCKED, _FAILED = (code("agent_execution", "outcome", o) for o in ("blocked", "error"))
# the engine's codes are the contract's literal order: checked once here
assert [code("data_access", "sensitivity", x) for x in SENSITIVITY] == list(SENSITIVITY.values())
assert [code("data_access", "operation", x) for x in OPERATION] == list(OPERATION.values())
assert [code("agent_execution", "privilege", x) for x in PRIVILEGE] == list(PRIVILEGE.values())
assert [code("agent_execution", "risk_level", x) for x in ("low", "medium", "high", "critical")] == [0, 1, 2, 3]
