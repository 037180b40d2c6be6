"""Bounded engine state: forget idle entities, enforce the entity cap, and renumber what is left.

Entities of five namespaces (API keys, principals, agents, client IPs, datasets) carry a
last-seen event time. Compaction drops the chosen ids everywhere they are used — the vocab,
the per-namespace arrays, the novelty sets, the (principal, dataset) pairs, the principals'
hour-of-day histograms, the risk ledger, the keys' model times and the scope ledger — and
renumbers the survivors densely *in their old order*, so sorted sets stay sorted and an
entity that comes back later is simply new (cold, judged by its peers until it warms up).

Departments, tenants and tokens (scopes, user agents, models, actions, agent types) are
peer groups and vocabularies, few and long-lived, and are never evicted.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from detectors.columns import Vocab

NAMESPACES = ("key", "principal", "agent", "ip", "dataset")
MAX_NEW_PER_EVENT = 3  # most counted entities one event can add (api: key, principal, IP; data: principal, dataset, IP)

# every novelty set of the engine: the namespace of each half of its pair(a, b) keys (None: never evicted);
# tests/unit/test_state.py fails when a detector adds a set that is not listed here
SEEN: dict[str, tuple[str | None, str | None]] = {
    "key_ip": ("key", "ip"),
    "key_ua": ("key", None),
    "key_scope": ("key", None),
    "key_model": ("key", None),
    "principal_dataset": ("principal", "dataset"),
    "dept_dataset": (None, "dataset"),
    "dataset_writer": ("dataset", "principal"),
    "principal_ip": ("principal", "ip"),
    "type_action": (None, None),
}
SCOPES: tuple[str | None, str | None] = ("key", None)  # the scope ledger's pair(key, scope token) sets

_LOW = 0x7FFFFFFF


def remap_ids(r: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Old ids to new ids through ``r`` (-1: dropped); ids outside ``r`` count as dropped."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    ok = (ids >= 0) & (ids < r.size)
    out[ok] = r[ids[ok]]
    return out


def remap_pairs(keys: np.ndarray, ra: np.ndarray | None, rb: np.ndarray | None) -> np.ndarray:
    """A sorted pair(a, b) set with a and/or b renumbered; pairs with a dropped half are dropped."""
    if keys.size == 0 or (ra is None and rb is None):
        return keys
    a, b = keys >> 31, keys & _LOW
    if ra is not None:
        a = remap_ids(ra, a)
    if rb is not None:
        b = remap_ids(rb, b)
    ok = (a >= 0) & (b >= 0)
    return np.sort((a[ok] << 31) | b[ok])


def _take(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows ``keep`` of ``x`` (ids past its end were never given state there)."""
    return x[keep[keep < x.shape[0]]]


def compact(s: Any, drop: dict[str, np.ndarray]) -> None:
    """Drop the ids marked True in ``drop[namespace]`` from every part of the engine state ``s``."""
    v = s.vocabs
    remap: dict[str, np.ndarray] = {}
    for ns, mask in drop.items():
        voc: Vocab = getattr(v, ns)
        keep = np.flatnonzero(~mask)
        r = np.full(mask.size, -1, dtype=np.int64)
        r[keep] = np.arange(keep.size)
        remap[ns] = r
        voc.names = [voc.names[i] for i in keep.tolist()]
        voc.ids = {n: i for i, n in enumerate(voc.names)}
        s.last_seen[ns] = _take(s.last_seen[ns], keep)
        arrays = getattr(s, ns)
        for k, col in arrays.a.items():
            arrays.a[k] = _take(col, keep)
        if ns == "principal":
            s.tow_principal = _take(s.tow_principal, keep)
    if not remap:
        return
    for name in list(s.seen):
        if name not in SEEN:  # a set this module does not know: forgetting it is wrong but never mislabels ids
            del s.seen[name]
            continue
        na, nb = SEEN[name]
        s.seen[name] = remap_pairs(s.seen[name], remap.get(na) if na else None, remap.get(nb) if nb else None)
    for name in list(s.scopes):
        s.scopes[name] = remap_pairs(s.scopes[name], remap.get("key"), None)
    if "principal" in remap or "dataset" in remap:
        _compact_pairs(s, remap.get("principal"), remap.get("dataset"))
    if "principal" in remap:
        r = remap["principal"]
        s.risk = {int(r[p]): x for p, x in s.risk.items() if p < r.size and r[p] >= 0}
    if "key" in remap:
        r = remap["key"]
        s.key_models = {int(r[k]): x for k, x in s.key_models.items() if k < r.size and r[k] >= 0}


def _compact_pairs(s: Any, rp: np.ndarray | None, rd: np.ndarray | None) -> None:
    """The (principal, dataset) pair ids and their arrays, renumbered in their old order."""
    if not s.pairs:
        return
    keys = np.fromiter(s.pairs.keys(), dtype=np.int64, count=len(s.pairs))
    ids = np.fromiter(s.pairs.values(), dtype=np.int64, count=len(s.pairs))
    order = np.argsort(ids)
    keys, ids = keys[order], ids[order]
    a, b = keys >> 31, keys & _LOW
    if rp is not None:
        a = remap_ids(rp, a)
    if rd is not None:
        b = remap_ids(rd, b)
    ok = (a >= 0) & (b >= 0)
    for k, col in s.pair.a.items():
        s.pair.a[k] = _take(col, ids[ok])
    s.pairs = dict(zip(((a[ok] << 31) | b[ok]).tolist(), range(int(ok.sum())), strict=True))


def least_recent(s: Any, n: int) -> dict[str, np.ndarray]:
    """The ``n`` least recently seen entities of all namespaces, as drop masks.

    Ties on last-seen time are broken by (namespace, name), never by id: ids depend on how
    the stream was cut into batches, names do not.
    """
    lasts = [(ns, s.last_seen.get(ns, np.zeros(0, dtype=np.int64))[: len(getattr(s.vocabs, ns))])
             for ns in NAMESPACES]
    allt = np.concatenate([x for _, x in lasts])
    if n <= 0 or allt.size == 0:
        return {}
    n = min(n, allt.size)
    t_star = np.partition(allt, n - 1)[n - 1]
    drop = {ns: last < t_star for ns, last in lasts}
    need = n - sum(int(m.sum()) for m in drop.values())
    tied = sorted((ns, getattr(s.vocabs, ns).names[i], i) for ns, last in lasts
                  for i in np.flatnonzero(last == t_star).tolist())
    for ns, _, i in tied[:need]:
        drop[ns][i] = True
    return {ns: m for ns, m in drop.items() if m.any()}


def footprint(s: Any) -> dict[str, int]:
    """Bytes held by each part of the engine state, strings and dict entries included (``sys.getsizeof``)."""
    size = sys.getsizeof
    v = s.vocabs
    out: dict[str, int] = {}
    out["vocab names and id maps"] = sum(
        size(voc.names) + size(voc.ids) + sum(size(n) for n in voc.names)
        for voc in (getattr(v, f) for f in v.__dataclass_fields__))
    out["per-entity arrays"] = sum(getattr(s, f).nbytes() for f in ("key", "ip", "principal", "agent", "dataset",
                                                                      "dept", "pair"))
    out["last-seen times"] = sum(x.nbytes for x in s.last_seen.values())
    out["novelty sets"] = sum(x.nbytes for x in s.seen.values())
    out["scope ledger"] = sum(x.nbytes for x in s.scopes.values())
    out["hour-of-day histograms"] = s.tow_tenant.nbytes + s.tow_principal.nbytes
    out["(principal, dataset) pair map"] = size(s.pairs) + sum(size(k) + size(i) for k, i in s.pairs.items())
    sessions = set(s.session_steps) | set(s.untrusted_sessions) | set(s.session_last)
    out["agent sessions"] = (size(s.session_steps) + size(s.untrusted_sessions) + size(s.session_last)
                             + sum(size(x) for x in sessions) + 32 * (len(s.session_steps) + len(s.session_last)
                                                                      + len(s.untrusted_sessions)))
    out["cooldowns"] = size(s.cooldown) + sum(size(k) + size(k[1]) + 32 for k in s.cooldown)
    out["risk ledger"] = size(s.risk) + sum(size(x) + size(x[2]) + 64 for x in s.risk.values())
    out["key model times"] = size(s.key_models) + sum(size(d) + 64 * len(d) for d in s.key_models.values())
    out["agent-type tables"] = (sum(x.nbytes for x in s.type_lengths.values()) + size(s.type_events)
                                + size(s.type_longest) + size(s.tenant_first))
    return out
