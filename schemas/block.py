"""Decoded events of one kind, column by column: what the engine scores and the ``events`` table stores.

A Kafka fetch of one topic decodes into one :class:`EventBlock`: a column per contract field, so the
engine and the row builder read whole columns instead of an attribute of every event. The native
decoder (``schemas/native``, Rust) parses raw JSON straight into these columns; without it, or for a
record it leaves to msgspec, the same columns are built from msgspec structs (:func:`block_of`). A
test holds the two to each other on every field.

Column types (:data:`SPECS` gives each field's):

- required strings: ``list[str]``; optional strings: ``list[str | None]``; ``tenant`` and
  ``source`` hold the default tenant and ``""`` where absent;
- literals: ``int8`` codes, the index in the ``Literal``'s own order (``-1`` where absent);
- integers: ``int64`` (0 where absent); floats: ``float64`` (NaN where absent);
- booleans: ``bool`` (False where absent); ``scopes_granted``: ``list[tuple[str, ...]]``;
- ``ts``: ``int64`` epoch microseconds (UTC).

The structs themselves are decoded only when asked for (:attr:`EventBlock.events`): for the few
events an alert explains.

String columns can also be had factorized (:meth:`EventBlock.factor`): their distinct values in order
of first appearance and each event's index among them, which the native decoder gives for free (it
builds one Python string per distinct value anyway). The engine interns names through it, once per
distinct value instead of once per event.
"""

from __future__ import annotations

import operator
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from operator import attrgetter
from typing import Any, Final

import msgspec
import numpy as np

from schemas.errors import EventError
from schemas.events import DEFAULT_TENANT, EVENT_TYPES, MAX_RECORD_BYTES, Event, decode, decode_as

Column = list[Any] | np.ndarray


@dataclass(frozen=True)
class FieldSpec:
    """How one contract field is decoded into its column.

    ``type`` is one of ``str``, ``ostr`` (optional), ``dstr`` (absent: ``default``), ``enum``,
    ``oenum``, ``int``, ``oint``, ``ofloat``, ``bool``, ``obool``, ``strs``, ``ts``. ``lo``/``hi``
    bound a string's length (in characters), an integer's value, or a list's length (``hi``);
    ``values`` are an enum's literals, in code order.
    """

    name: str
    type: str
    lo: int | float | None = None
    hi: int | None = None
    values: tuple[str, ...] = ()


def _literals(cls: type) -> dict[str, tuple[str, ...]]:
    """Each Literal field's values in their declared order (msgspec.inspect sorts them)."""
    out = {}
    for name, hint in typing.get_type_hints(cls).items():
        members = [hint] if typing.get_origin(hint) is typing.Literal else typing.get_args(hint)
        for lit in members:
            if typing.get_origin(lit) is typing.Literal:
                out[name] = typing.get_args(lit)
    return out


def _unwrap(t: Any) -> Any:
    return t.type if isinstance(t, msgspec.inspect.Metadata) else t


def _spec(name: str, t: Any, required: bool, literals: dict[str, tuple[str, ...]]) -> FieldSpec:
    t = _unwrap(t)
    optional = False
    if isinstance(t, msgspec.inspect.UnionType):
        inner = [_unwrap(x) for x in t.types if not isinstance(x, msgspec.inspect.NoneType)]
        optional, t = True, inner[0]
    i = msgspec.inspect
    if isinstance(t, i.DateTimeType):
        return FieldSpec(name, "ts")
    if isinstance(t, i.StrType):
        if not required and not optional:  # str | UNSET: tenant, source
            return FieldSpec(name, "dstr", t.min_length or 0, t.max_length)
        return FieldSpec(name, "ostr" if optional else "str", t.min_length or 0, t.max_length)
    if isinstance(t, i.LiteralType):
        return FieldSpec(name, "oenum" if optional else "enum", values=literals[name])
    if isinstance(t, i.IntType):
        return FieldSpec(name, "oint" if optional else "int", t.ge, t.le)
    if isinstance(t, i.FloatType) and optional:
        return FieldSpec(name, "ofloat", t.ge)
    if isinstance(t, i.BoolType):
        return FieldSpec(name, "obool" if optional else "bool")
    if isinstance(t, i.ListType) and optional and isinstance(_unwrap(t.item_type), i.StrType):
        item = _unwrap(t.item_type)
        return FieldSpec(name, "strs", item.min_length or 0, item.max_length)  # list length: LIST_MAX
    raise TypeError(f"{name}: no column type for {t!r}")  # a new contract type needs one here and natively


def _specs(cls: type) -> tuple[FieldSpec, ...]:
    info = msgspec.inspect.type_info(cls)
    literals = _literals(cls)
    return tuple(_spec(f.name, f.type, f.required, literals) for f in info.fields)


SPECS: Final[dict[str, tuple[FieldSpec, ...]]] = {kind: _specs(cls) for kind, cls in EVENT_TYPES.items()}
LIST_MAX: Final = 256  # scopes_granted: at most this many (the contract's Scopes)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def code(kind: str, field: str, value: str) -> int:
    """The int8 code of an enum field's ``value``."""
    return next(s for s in SPECS[kind] if s.name == field).values.index(value)


# -- the block ----------------------------------------------------------------------------------------
class Factor(typing.NamedTuple):
    """A string column (or a string-list column, as tuples) as codes into ``names`` (-1: absent). ``exact``:
    ``names`` are the values present, in order of first appearance; otherwise (a selection of a block) a superset
    in that order."""

    codes: np.ndarray
    names: list[Any]
    exact: bool

    def compact(self) -> Factor:
        """The exact factor: only the names the codes use, in order of first appearance."""
        codes, used = first_appearance(self.codes)
        return Factor(codes, [self.names[j] for j in used.tolist()], True)


def first_appearance(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``codes`` renumbered 0, 1, ... in order of first appearance (-1, absent, stays -1), and the old code of
    each new one."""
    n, size = codes.size, int(codes.max(initial=-1)) + 1
    first = np.full(size + 1, n, dtype=np.int64)  # each code's first position (n: none); the last slot: absent
    np.minimum.at(first, codes, np.arange(n))  # no sort of the events: one pass, then a sort of the codes used
    used = np.flatnonzero(first[:size] < n)
    used = used[np.argsort(first[used], kind="stable")]
    renum = np.full(size + 1, -1, dtype=np.int64)  # absent (-1) reads the last slot and stays -1
    renum[used] = np.arange(len(used))
    return renum[codes], used


class LazyEvents(Sequence[Event]):
    """The structs of a block's events, decoded from their raw JSON when first asked for."""

    __slots__ = ("_cache", "kind", "raws", "tenant")

    def __init__(self, raws: Sequence[bytes], kind: str, tenant: str) -> None:
        self.raws, self.kind, self.tenant = raws, kind, tenant
        self._cache: dict[int, Event] = {}

    def __len__(self) -> int:
        return len(self.raws)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        ev = self._cache.get(i)
        if ev is None:
            ev = decode(self.raws[i], default_tenant=self.tenant)
            if isinstance(ev, EventError):  # the decoders agree on what is valid: a bug if reached
                raise ValueError(f"a {self.kind} record in a block does not decode: {ev}")
            self._cache[i] = ev
        return ev


class EventBlock:
    """Events of one kind as columns (``cols``, by contract field), their raw JSON and, once scored,
    the highest score each got (``scores``)."""

    __slots__ = ("_events", "cols", "factors", "kind", "raws", "scores", "tenant")

    def __init__(self, kind: str, cols: dict[str, Column], raws: Sequence[bytes] | None,
                 events: Sequence[Event] | None = None, tenant: str = DEFAULT_TENANT,
                 factors: dict[str, Factor] | None = None) -> None:
        self.kind, self.cols, self.raws, self.tenant = kind, cols, raws, tenant
        self._events = events
        self.scores: list[float] | None = None
        self.factors: dict[str, Factor] = factors or {}  # by field; see factor()

    def __len__(self) -> int:
        return len(self.cols["event_id"])

    def __repr__(self) -> str:
        return f"EventBlock({self.kind}, {len(self)} events)"

    @property
    def events(self) -> Sequence[Event]:
        if self._events is None:
            if self.raws is None:
                raise ValueError("a block without raw JSON or structs has no events to give")
            self._events = LazyEvents(self.raws, self.kind, self.tenant)
        return self._events

    def ts_ms(self) -> np.ndarray:
        return self.cols["ts"] // 1000

    def factor(self, name: str) -> tuple[np.ndarray, list[Any]]:
        """String (or string-list) column ``name`` factorized: (each event's code, -1 where absent; the distinct
        values the codes index, in order of first appearance). Interning the values in that order gives new names
        the same ids as interning the column event by event."""
        f = self.factors.get(name)
        if f is None:  # built here (msgspec's blocks): the distinct values, then one lookup per event
            col = self.cols[name]
            distinct = dict.fromkeys(col)
            distinct.pop(None, None)
            names = list(distinct)
            index: dict[Any, int] = dict(zip(names, range(len(names)), strict=True))
            index[None] = -1
            codes = np.fromiter(map(index.__getitem__, col), dtype=np.int64, count=len(col))
            f = self.factors[name] = Factor(codes, names, True)
        elif not f.exact:  # a selection's codes index its parent's values: keep the used ones, renumbered
            f = self.factors[name] = f.compact()
        return f.codes, f.names

    def take(self, idx: Sequence[int] | np.ndarray) -> EventBlock:
        """The events at ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        il = idx.tolist()
        return self._select(lambda v: list(map(v.__getitem__, il)), lambda a: a[idx])

    def slice(self, start: int, stop: int) -> EventBlock:
        if start == 0 and stop >= len(self):
            return self
        cut = operator.itemgetter(slice(start, stop))
        return self._select(cut, cut)

    def _select(self, pick: Callable[[Sequence[Any]], list[Any]],
                pick_array: Callable[[np.ndarray], np.ndarray]) -> EventBlock:
        """A block of the events ``pick`` selects from every list (``pick_array`` from every array)."""
        cols = {k: (pick_array(v) if isinstance(v, np.ndarray) else pick(v)) for k, v in self.cols.items()}
        evs = None if self._events is None or isinstance(self._events, LazyEvents) else pick(self._events)
        factors = {k: Factor(pick_array(f.codes), f.names, False) for k, f in self.factors.items()}
        out = EventBlock(self.kind, cols, None if self.raws is None else pick(self.raws), evs, self.tenant, factors)
        if self.scores is not None:
            out.scores = pick(self.scores)
        return out

    @classmethod
    def concat(cls, blocks: Sequence[EventBlock]) -> EventBlock:
        """Blocks of one kind, one after the other."""
        if len(blocks) == 1:
            return blocks[0]
        first = blocks[0]
        cols = {k: (np.concatenate([b.cols[k] for b in blocks]) if isinstance(v, np.ndarray)
                    else list(chain.from_iterable(b.cols[k] for b in blocks))) for k, v in first.cols.items()}
        raws = None if any(b.raws is None for b in blocks) else list(chain.from_iterable(b.raws for b in blocks))
        evs = None
        if raws is None or all(b._events is not None and not isinstance(b._events, LazyEvents) for b in blocks):
            evs = list(chain.from_iterable(b.events for b in blocks))
        out = cls(first.kind, cols, raws, evs, first.tenant)
        if all(b.scores is not None for b in blocks):
            out.scores = list(chain.from_iterable(b.scores for b in blocks))  # type: ignore[arg-type]
        return out

    def event_keys(self) -> list[tuple[str, str, str]]:
        """(tenant, entity, event id) of each event: what identifies a stored event."""
        from schemas.events import ENTITY_FIELD

        c = self.cols
        return list(zip(c["tenant"], c[ENTITY_FIELD[self.kind]], c["event_id"], strict=True))


# -- building blocks from msgspec structs ----------------------------------------------------------------
def ts_us(ts: datetime) -> int:
    """An event time in µs since the epoch, as a block's ``ts`` column holds it."""
    return (ts - _EPOCH) // _US


def _column(s: FieldSpec, values: list[Any], tenant: str) -> Column:
    t = s.type
    if t in ("str", "ostr"):
        return values
    if t == "dstr":
        default = tenant if s.name == "tenant" else ""
        return [default if not isinstance(v, str) else v for v in values]
    if t in ("enum", "oenum"):
        codes = {v: i for i, v in enumerate(s.values)}
        codes[None] = -1  # type: ignore[index]
        return np.fromiter(map(codes.__getitem__, values), dtype=np.int8, count=len(values))
    if t == "int" or (t == "oint" and None not in values):
        return np.fromiter(values, dtype=np.int64, count=len(values))
    if t == "oint":
        return np.fromiter((v or 0 for v in values), dtype=np.int64, count=len(values))
    if t == "ofloat":
        return np.fromiter((np.nan if v is None else v for v in values), dtype=np.float64, count=len(values))
    if t in ("bool", "obool"):
        return np.fromiter(map(bool, values), dtype=np.bool_, count=len(values))
    if t == "strs":
        return [tuple(v) if v else () for v in values]
    if t == "ts":
        return np.fromiter(map(ts_us, values), dtype=np.int64, count=len(values))
    raise TypeError(t)


def block_from_events(kind: str, events: Sequence[Event], raws: Sequence[bytes] | None,
                      tenant: str = DEFAULT_TENANT) -> EventBlock:
    """A block of decoded structs, all of ``kind`` (``raws``: their JSON, when the block will be stored)."""
    evs = list(events)
    cols = {s.name: _column(s, list(map(attrgetter(s.name), evs)), tenant) for s in SPECS[kind]}
    return EventBlock(kind, cols, None if raws is None else list(raws), evs, tenant)


def blocks_of(events: Sequence[Event], raws: Sequence[bytes] | None = None,
              tenant: str = DEFAULT_TENANT) -> list[tuple[EventBlock, np.ndarray | None]]:
    """Structs of any kinds as one block per kind, with each event's index in ``events`` (``None``: the
    block is all of them, in order)."""
    kinds = [type(e).__struct_config__.tag for e in events]
    present = dict.fromkeys(kinds)
    if len(present) == 1:
        return [(block_from_events(kinds[0], events, raws, tenant), None)]
    out = []
    for kind in present:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        out.append((block_from_events(kind, [events[i] for i in idx], None if raws is None else
                                      [raws[i] for i in idx], tenant), np.asarray(idx, dtype=np.int64)))
    return out


# -- decoding records into a block ----------------------------------------------------------------------
def native_decoder(kind: str) -> Any:
    """The native decoder of ``kind``'s records, or ``None`` when ``spyglass_native`` is not built."""
    try:
        import spyglass_native
    except ImportError:
        return None
    return spyglass_native.Decoder(kind, [(s.name, s.type, s.lo, s.hi, list(s.values)) for s in SPECS[kind]],
                                   MAX_RECORD_BYTES, LIST_MAX)


_DECODERS: dict[str, Any] = {}


def native_available() -> bool:
    """Whether the native decoder (``spyglass_native``, built from schemas/native) is importable."""
    return native_decoder("api_usage") is not None


def decode_block(values: Sequence[bytes | None], kind: str, tenant: str = DEFAULT_TENANT, *,
                 native: bool = True) -> tuple[EventBlock, list[int], list[tuple[int, EventError]]]:
    """Decode a topic's records (all meant to be ``kind``): (the block of the valid ones, their indices in
    ``values``, [(index, error)] of the others). Never raises on bad input.

    The native decoder takes every record it can prove valid; the rest (and all of them without it)
    go to msgspec, which gives a refused record its error naming the field.
    """
    dec = None
    if native:
        dec = _DECODERS.get(kind)
        if dec is None and kind not in _DECODERS:
            dec = _DECODERS[kind] = native_decoder(kind)
    if dec is None:
        rest = range(len(values))
        block, ok = None, []
    else:
        cols, factored, ok, rest = dec.decode(values, tenant)
        # numeric columns come as bytes: copied into writable arrays, as the msgspec path makes them (a read-only
        # array would be another signature of every kernel, compiled again)
        for s in SPECS[kind]:
            v = cols[s.name]
            if isinstance(v, bytes):
                cols[s.name] = np.frombuffer(v, dtype=_DTYPES[s.type]).copy()
        factors = {k: Factor(np.frombuffer(c, dtype=np.int32), names, True) for k, (c, names) in factored.items()}
        block = EventBlock(kind, cols, [values[i] for i in ok], None, tenant, factors)  # type: ignore[misc]
    errors: list[tuple[int, EventError]] = []
    slow: list[int] = []
    slow_events: list[Event] = []
    for i in rest:
        ev = decode_as(values[i], tenant, kind)
        if isinstance(ev, EventError):
            errors.append((i, ev))
        else:
            slow.append(i)
            slow_events.append(ev)
    if slow:
        extra = block_from_events(kind, slow_events, [values[i] for i in slow], tenant)  # type: ignore[misc]
        if block is None or not ok:
            block, ok = extra, slow
        else:  # both kinds of record: back in arrival order
            merged, idx = EventBlock.concat([block, extra]), ok + slow
            order = np.argsort(np.asarray(idx), kind="stable")
            block, ok = merged.take(order), [idx[j] for j in order.tolist()]
    if block is None:
        block = block_from_events(kind, [], [], tenant)
    return block, ok, errors


_DTYPES: Final = {"enum": np.int8, "oenum": np.int8, "int": np.int64, "oint": np.int64, "ofloat": np.float64,
                  "bool": np.bool_, "obool": np.bool_, "ts": np.int64}


def concat_kinds(blocks: Iterable[EventBlock]) -> list[EventBlock]:
    """Blocks of several kinds: one per kind, in order of first appearance."""
    by: dict[str, list[EventBlock]] = {}
    for b in blocks:
        by.setdefault(b.kind, []).append(b)
    return [EventBlock.concat(bs) for bs in by.values()]
