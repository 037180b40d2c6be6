"""Governance findings: not alerts, standing facts an owner should act on.

The scope ledger records, per (tenant, API key), which scopes it was granted (the union of
``scopes_granted`` over its requests) and which it used (``scope_used`` of requests that
authenticated). A key granted scopes it never uses is over-permissioned: the finding lists
them, so the grant can be narrowed before someone else uses it (the ``api.new_scope`` alert).

The ledger is two sorted int64 sets of pair(key id, scope token id) in the engine state, so it
is checkpointed with it and renumbered with it when idle keys are evicted (an evicted key's
grants are forgotten with it).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np

from detectors.columns import SEP, ApiColumns
from detectors.kernels import first_seen, pair
from detectors.state import State

_LOW = 0x7FFFFFFF
_NONE = np.zeros(0, dtype=np.int64)


class UnusedScopes(msgspec.Struct, frozen=True):
    """One key granted scopes it has not used over the observed period."""

    tenant: str
    api_key_id: str
    unused: list[str]
    granted: list[str]
    used: list[str]  # granted scopes it used
    granted_count: int
    used_count: int
    requests: int
    first_seen: str
    last_seen: str




def learn_scopes(tables: State, c: ApiColumns | None) -> None:
    """Add a batch's granted and used scopes to the ledger in ``tables.scopes``."""
    if c is None:
        return
    tok = tables.vocabs.token
    # per event, the index of its granted scopes (a tuple, () when none) among the distinct ones of the batch
    cid, combos = c.block.factor("scopes_granted")
    # every combination's scope tokens in one flat array: combination j is flat[start[j]:start[j] + size[j]]
    toks = [np.unique(tok.many(list(t))) if t else _NONE for t in combos]
    size = np.array([t.size for t in toks], dtype=np.int64)
    flat, start = np.concatenate(toks), np.cumsum(size) - size
    kc = np.unique(pair(c.key, cid))  # each (key, combination) of the batch once
    k, j = kc >> 31, kc & _LOW
    n = size[j]
    if n.sum():  # each key paired with every scope of its combinations
        at = np.repeat(start[j] - (np.cumsum(n) - n), n) + np.arange(n.sum())
        keys = pair(np.repeat(k, n), flat[at])
        _, tables.scopes["granted"] = first_seen(keys, tables.scopes.get("granted", np.zeros(0, dtype=np.int64)))
    used = np.flatnonzero((c.scope >= 0) & ~c.auth_fail)
    if used.size:
        _, tables.scopes["used"] = first_seen(pair(c.key[used], c.scope[used]),
                                              tables.scopes.get("used", np.zeros(0, dtype=np.int64)))


def unused_scopes(tables: State, iso: Callable[[int], str]) -> list[UnusedScopes]:
    """Every key with granted scopes it never used, by tenant then key; ``iso`` formats event times."""
    granted = tables.scopes.get("granted", np.zeros(0, dtype=np.int64))
    used = tables.scopes.get("used", np.zeros(0, dtype=np.int64))
    if granted.size == 0:
        return []
    unused = ~np.isin(granted, used)
    gk, uk = granted >> 31, used >> 31
    names = tables.vocabs.token.names
    keys = tables.vocabs.key.names
    k = tables.key
    last = tables.last_seen.get("key", np.zeros(0, dtype=np.int64))
    out = []
    for key in np.unique(gk[unused]).tolist():
        lo, hi = np.searchsorted(gk, key), np.searchsorted(gk, key, side="right")
        g = granted[lo:hi]
        ulo, uhi = np.searchsorted(uk, key), np.searchsorted(uk, key, side="right")
        use = np.intersect1d(g, used[ulo:uhi])
        tenant, key_id = keys[key].split(SEP, 1)
        out.append(UnusedScopes(
            tenant=tenant, api_key_id=key_id,
            unused=sorted(names[t] for t in (g[unused[lo:hi]] & _LOW).tolist()),
            granted=sorted(names[t] for t in (g & _LOW).tolist()),
            used=sorted(names[t] for t in (use & _LOW).tolist()),
            granted_count=int(g.size), used_count=int(use.size),
            requests=int(k["n"][key]) if key < k["n"].size else 0,
            first_seen=iso(int(k["first"][key])) if key < k["first"].size else "",
            last_seen=iso(int(last[key])) if key < last.size else ""))
    out.sort(key=lambda r: (r.tenant, r.api_key_id))
    return out
