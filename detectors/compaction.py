"""Bounded engine state: forget idle entities, enforce the entity cap, and renumber what is left.

Entities of five namespaces (API keys, principals, agents, client IPs, datasets) carry a
last-seen event time. Compaction drops the chosen ids everywhere they are used — the vocab,
the per-namespace arrays, the novelty sets, the (principal, dataset) pairs, the principals'
hour-of-day histograms, the risk ledger, the keys' model times and the scope ledger — and
renumbers the survivors densely *in their old order*, so sorted sets stay sorted and an
entity that comes back later is simply new (cold, judged by its peers until it warms up).
The tenants' peer counts of keys (per tenant, per (tenant, scope)) lose the evicted keys, so
a key that comes back is counted once, as a new key.

Departments, tenants and tokens (scopes, user agents, models, actions, agent types) are
peer groups and vocabularies, few and long-lived, and are never evicted. ``FIELDS`` says how
every field of the engine's ``State`` is bounded and ``SEEN`` which namespaces each novelty set
holds: both are derived from the families' declarations (``detectors.registry``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from detectors.columns import SEP, Vocab
from detectors.families import REGISTRY
from detectors.registry import Registry
from detectors.state import CORE_FIELDS, NAMESPACES, State

__all__ = ["FIELDS", "MAX_NEW_PER_EVENT", "NAMESPACES", "SCOPES", "SEEN", "compact", "footprint", "least_recent"]

MAX_NEW_PER_EVENT = 3  # most counted entities one event can add (api: key, principal, IP; data: principal, dataset, IP)
SCOPES: tuple[str | None, str | None] = ("key", None)  # the scope ledger's pair(key, scope token) sets


def fields_of(registry: Registry) -> dict[str, str]:
    """Every field of ``State`` and how it is kept bounded: the engine's own and the families' tables."""
    return {**CORE_FIELDS, **{name: t.eviction for name, t in registry.tables().items() if t.factory is None}}


# every novelty set of the registered families: the namespace of each half of its pair(a, b) keys (None: never
# evicted); compaction drops a set that is not listed
SEEN: dict[str, tuple[str | None, str | None]] = REGISTRY.seen()
# every field of State and how it is kept bounded (tests/unit/test_state.py fails on a field not listed)
FIELDS: dict[str, str] = fields_of(REGISTRY)

_LOW = 0x7FFFFFFF


def remap_ids(r: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Old ids to new ids through ``r`` (-1: dropped); ids outside ``r`` count as dropped."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    ok = (ids >= 0) & (ids < r.size)
    out[ok] = r[ids[ok]]
    return out


def _remap_pair_keys(keys: np.ndarray, ra: np.ndarray | None,
                     rb: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """pair(a, b) keys with a and/or b renumbered: (the surviving keys, in input order; which survived)."""
    a, b = keys >> 31, keys & _LOW
    if ra is not None:
        a = remap_ids(ra, a)
    if rb is not None:
        b = remap_ids(rb, b)
    ok = (a >= 0) & (b >= 0)
    return (a[ok] << 31) | b[ok], ok


def remap_pairs(keys: np.ndarray, ra: np.ndarray | None, rb: np.ndarray | None) -> np.ndarray:
    """A sorted pair(a, b) set with a and/or b renumbered; pairs with a dropped half are dropped."""
    if keys.size == 0 or (ra is None and rb is None):
        return keys
    return np.sort(_remap_pair_keys(keys, ra, rb)[0])


def _take(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows ``keep`` of ``x`` (ids past its end were never given state there)."""
    return x[keep[keep < x.shape[0]]]


def compact(tables: State, drop: dict[str, np.ndarray],
            seen: Mapping[str, tuple[str | None, str | None]] = SEEN) -> None:
    """Drop the ids marked True in ``drop[namespace]`` from every part of the engine state ``tables``.

    ``seen``: the namespaces of the halves of every novelty set (``Registry.seen()``); a set it does not
    list is dropped.
    """
    v = tables.vocabs
    if "key" in drop:
        uncount_keys(tables, drop["key"])
    remap: dict[str, np.ndarray] = {}
    for ns, mask in drop.items():
        voc: Vocab = getattr(v, ns)
        keep = np.flatnonzero(~mask)
        r = np.full(mask.size, -1, dtype=np.int64)
        r[keep] = np.arange(keep.size)
        remap[ns] = r
        voc.names = [voc.names[i] for i in keep.tolist()]
        voc.ids = {n: i for i, n in enumerate(voc.names)}
        tables.last_seen[ns] = _take(tables.last_seen[ns], keep)
        arrays = getattr(tables, ns)
        for k, col in arrays.a.items():
            arrays.a[k] = _take(col, keep)
        if ns == "principal":
            tables.hours_principal = _take(tables.hours_principal, keep)
            tables.oh_pending.renumbered(r)
    if not remap:
        return
    for name in list(tables.seen):
        if name not in seen:  # a set this module does not know: forgetting it is wrong but never mislabels ids
            del tables.seen[name]
            continue
        na, nb = seen[name]
        tables.seen[name] = remap_pairs(tables.seen[name], remap.get(na) if na else None,
                                        remap.get(nb) if nb else None)
    for name in list(tables.scopes):
        tables.scopes[name] = remap_pairs(tables.scopes[name], remap.get("key"), None)
    if "principal" in remap or "dataset" in remap:
        _compact_pairs(tables, remap.get("principal"), remap.get("dataset"))
    if "principal" in remap:
        r = remap["principal"]
        tables.risk = {int(r[p]): x for p, x in tables.risk.items() if p < r.size and r[p] >= 0}
    if "key" in remap:
        r = remap["key"]
        tables.key_models = {int(r[k]): x for k, x in tables.key_models.items() if k < r.size and r[k] >= 0}


def uncount_keys(tables: State, mask: np.ndarray) -> None:
    """Take the keys marked True in ``mask`` out of their tenant's peer counts, before they are dropped.

    A key counts in ``tenant_keys`` of its tenant (the prefix of its name) once it is in the
    ``tenant_key`` novelty set, and in ``scope_keys`` of (its tenant, a scope) for each of its
    ``key_scope`` pairs. A ``key_scope`` pair of token 0 may also stand for "no scope" (never counted),
    so counts stop at zero.
    """
    gone = np.flatnonzero(mask)
    if gone.size == 0:
        return
    v = tables.vocabs
    tenant_of = {}
    for k in gone.tolist():
        t = v.tenant.ids.get(v.key.names[k].split(SEP, 1)[0])
        if t is not None:
            tenant_of[k] = t
    empty = np.zeros(0, dtype=np.int64)
    counted = gone[np.isin(gone, tables.seen.get("tenant_key", empty))]
    _uncount(tables.tenant_keys, [tenant_of[k] for k in counted.tolist() if k in tenant_of])
    ks = tables.seen.get("key_scope", empty)
    a = ks >> 31
    sel = np.isin(a, gone)
    pairs = zip(a[sel].tolist(), (ks[sel] & _LOW).tolist(), strict=True)
    _uncount(tables.scope_keys, [(tenant_of[k] << 31) | sc for k, sc in pairs if k in tenant_of])


def _uncount(counts: dict[int, int], xs: list[int]) -> None:
    for x in xs:
        n = counts.get(x, 0) - 1
        if n > 0:
            counts[x] = n
        else:
            counts.pop(x, None)


def _compact_pairs(tables: State, rp: np.ndarray | None, rd: np.ndarray | None) -> None:
    """The (principal, dataset) pair ids and their arrays, renumbered in their old order."""
    if not tables.pairs:
        return
    keys = np.fromiter(tables.pairs.keys(), dtype=np.int64, count=len(tables.pairs))
    ids = np.fromiter(tables.pairs.values(), dtype=np.int64, count=len(tables.pairs))
    order = np.argsort(ids)
    keys, ids = keys[order], ids[order]
    kept, ok = _remap_pair_keys(keys, rp, rd)
    for k, col in tables.pair.a.items():
        tables.pair.a[k] = _take(col, ids[ok])
    tables.pairs = dict(zip(kept.tolist(), range(kept.size), strict=True))


def least_recent(tables: State, n: int) -> dict[str, np.ndarray]:
    """The ``n`` least recently seen entities of all namespaces, as drop masks.

    Ties on last-seen time are broken by (namespace, name), never by id: ids depend on how
    the stream was cut into batches, names do not.
    """
    lasts = [(ns, tables.last_seen.get(ns, np.zeros(0, dtype=np.int64))[: len(getattr(tables.vocabs, ns))])
             for ns in NAMESPACES]
    allt = np.concatenate([x for _, x in lasts])
    if n <= 0 or allt.size == 0:
        return {}
    n = min(n, allt.size)
    t_star = np.partition(allt, n - 1)[n - 1]
    drop = {ns: last < t_star for ns, last in lasts}
    need = n - sum(int(m.sum()) for m in drop.values())
    tied = sorted((ns, getattr(tables.vocabs, ns).names[i], i) for ns, last in lasts
                  for i in np.flatnonzero(last == t_star).tolist())
    for ns, _, i in tied[:need]:
        drop[ns][i] = True
    return {ns: m for ns, m in drop.items() if m.any()}


def footprint(tables: State) -> dict[str, int]:
    """Bytes held by each part of the engine state, strings and dict entries included (``sys.getsizeof``)."""
    size = sys.getsizeof
    v = tables.vocabs
    out: dict[str, int] = {}
    out["vocab names and id maps"] = sum(
        size(voc.names) + size(voc.ids) + sum(size(n) for n in voc.names)
        for voc in (getattr(v, f) for f in v.__dataclass_fields__))
    out["per-entity arrays"] = sum(getattr(tables, f).nbytes() for f in ("key", "ip", "principal", "agent",
                                                                           "dataset", "dept", "pair"))
    out["last-seen times"] = sum(x.nbytes for x in tables.last_seen.values())
    out["novelty sets"] = sum(x.nbytes for x in tables.seen.values())
    out["scope ledger"] = sum(x.nbytes for x in tables.scopes.values())
    out["hour-of-day histograms"] = tables.hours_tenant.nbytes + tables.hours_principal.nbytes
    out["held-back reads"] = tables.oh_pending.nbytes()
    out["(principal, dataset) pair map"] = size(tables.pairs) + sum(size(k) + size(i)
                                                                    for k, i in tables.pairs.items())
    out["agent sessions"] = tables.sessions.nbytes()
    out["cooldowns"] = size(tables.cooldown) + sum(size(k) + size(k[1]) + 32 for k in tables.cooldown)
    out["risk ledger"] = size(tables.risk) + sum(size(x) + size(x[2]) + 64 for x in tables.risk.values())
    out["tenant peer counts of keys"] = (size(tables.scope_keys) + size(tables.tenant_keys)
                                         + 64 * (len(tables.scope_keys) + len(tables.tenant_keys)))
    out["key model times"] = size(tables.key_models) + sum(size(d) + 64 * len(d) for d in tables.key_models.values())
    out["agent-type tables"] = (sum(x.nbytes for x in tables.type_lengths.values()) + size(tables.type_events)
                                + size(tables.type_longest))
    out["families' own tables"] = sum(_deep_size(t) for t in tables.family.values())
    return out


def _deep_size(x: object) -> int:
    """``sys.getsizeof`` of ``x`` and of everything it holds (arrays by their data, containers and objects by
    their items and attributes): for the families' own tables, whatever their shape."""
    if isinstance(x, np.ndarray):
        return x.nbytes
    if isinstance(x, dict):
        return sys.getsizeof(x) + sum(_deep_size(k) + _deep_size(v) for k, v in x.items())
    if isinstance(x, (list, tuple, set, frozenset)):
        return sys.getsizeof(x) + sum(_deep_size(v) for v in x)
    if hasattr(x, "__dict__"):
        return sys.getsizeof(x) + _deep_size(vars(x))
    return sys.getsizeof(x)
