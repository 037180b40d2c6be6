"""API-usage detectors: credential stuffing, new clients and scopes, rate bursts, model extraction.

They share one feature stage over a batch's ``ApiColumns``: each key's warm-up (requests and
hours since first seen), its novelty sets, and its fast/slow request rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.alerting import Finding
from detectors.columns import ApiColumns
from detectors.families.common import HOUR, MIN, count_before, earlier_flagged, idle_cutoff
from detectors.kernels import burst_vs_baseline, decayed_count, distinct_recent, pair
from detectors.registry import Column, Context, Detector, Family, NoveltySet, Table, option
from detectors.state import State
from schemas.alerts import Feature

MODEL_WINDOW_MS = 10 * MIN  # look-back of "distinct models a key queried recently"
BURST_EXTRACTION_MODELS = 3  # during a rate burst: this many recent models make it a model-extraction pattern


@dataclass(frozen=True)
class ApiConfig:
    auth_fail_tau_s: float = option(60.0, "time constant of the per-IP decayed count of failed authentications")
    auth_fail_min: float = option(20.0, "failed authentications (decayed count) from one IP that make a burst")
    key_warm_events: int = option(30, "requests a key makes before it is judged against its own history")
    key_warm_hours: float = option(6.0, "hours since a key was first seen before it is judged against itself")
    scope_warm_events: int = option(30, "requests of a warm key after which any first use of a scope is news")
    scope_cold_events: int = option(10, "requests of a young key after which its tenant's rare scopes are news")
    scope_peer_share: float = option(0.05, "a scope used by fewer than this share of the tenant's keys is rare")
    scope_peer_min_keys: int = option(20, "keys a tenant needs before its peers' scope usage is trusted")
    rate_tau_fast_s: float = option(600.0, "time constant of a key's current request rate")
    rate_tau_slow_s: float = option(86_400.0, "time constant of a key's baseline request rate")
    rate_min: float = option(40.0, "requests (fast decayed count) below which no rate burst is raised")
    rate_ratio: float = option(8.0, "current rate over baseline rate that makes a burst")
    extraction_min: float = option(8.0, "requests (fast decayed count) from which model spreading is checked")
    extraction_models: int = option(3, "distinct models in 10 minutes that make a model-extraction pattern")


def stage(ctx: Context, c: ApiColumns) -> list[Finding]:
    """Every api_usage detector over one batch (findings in any order; the engine sorts them)."""
    cfg, s, v = ctx.config, ctx.tables, ctx.tables.vocabs
    s.key.fit(len(v.key))
    s.ip.fit(len(v.ip))
    k = s.key
    out: list[Finding] = []
    n_before = count_before(k, c.key, c.ts)
    warm = (n_before >= cfg.key_warm_events) & (c.ts - k["first"][c.key] >= cfg.key_warm_hours * HOUR)

    # new client IP / user agent for a warm key
    new_ip = ctx.novel("key_ip", pair(c.key, c.ip))
    ua = np.where(c.agent_tok < 0, 0, c.agent_tok)
    new_ua = ctx.novel("key_ua", pair(c.key, ua))
    for i in np.flatnonzero((new_ip | new_ua) & warm & ~c.auth_fail):
        e = c.events[i]
        what = []
        if new_ip[i]:
            what.append(f"client IP {e.client_ip}")
        if new_ua[i]:
            what.append(f"user agent '{e.user_agent}'")
        score = 0.85 if (new_ip[i] and new_ua[i]) else 0.65
        out.append(ctx.finding("api.new_client", c, i, e.api_key_id, e.principal, score,
                               [Feature(name="new_client_ip", value=float(new_ip[i]), baseline=0.0),
                                Feature(name="new_user_agent", value=float(new_ua[i]), baseline=0.0),
                                Feature(name="key_events_seen", value=float(n_before[i]))],
                               f"API key {e.api_key_id} was used from {' and '.join(what)}, never seen for this "
                               f"key in its {int(n_before[i])} earlier requests."))

    # scope never used by a warm key
    scope = np.where(c.scope < 0, 0, c.scope)
    new_scope = ctx.novel("key_scope", pair(c.key, scope)) & (c.scope >= 0)
    # a key with a short history of its own starts from its peer group's: a scope (almost) no key of its
    # tenant uses is news for a key of any age past a handful of requests
    peer_users, peer_keys = _scope_peers(ctx, c, new_scope, scope)
    rare = (peer_keys >= cfg.scope_peer_min_keys) & (peer_users < cfg.scope_peer_share * peer_keys)
    young = (n_before >= cfg.scope_cold_events) & (c.ts - k["first"][c.key] >= cfg.key_warm_hours * HOUR)
    for i in np.flatnonzero(new_scope & ~c.auth_fail & (((n_before >= cfg.scope_warm_events) & warm)
                                                        | (rare & young))):
        e = c.events[i]
        sc = e.scope_used or ""
        score = 0.9 if sc.startswith("admin") else (0.75 if sc in ("fine_tune:write", "files:write") else 0.55)
        out.append(ctx.finding("api.new_scope", c, i, e.api_key_id, e.principal, score,
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
        out.append(ctx.finding("api.auth_failure_burst", c, i, e.client_ip, e.principal,
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
    new_model = ctx.novel("key_model", pair(c.key, np.where(c.model < 0, 0, c.model))) & (c.model >= 0)
    # model extraction shows before the rate does: queries spread over models (at least
    # `extraction_models` in 10 minutes) at `rate_ratio` x the key's usual rate, from `extraction_min` requests
    early = ((fast >= cfg.extraction_min) & (fast >= cfg.rate_ratio * expected) & (c.model >= 0) & ~burst
             & (warm | young))
    recent_models = _key_models_recent(ctx, c, np.flatnonzero((burst & ~new_model) | early))
    for i in np.flatnonzero(burst):
        e = c.events[i]
        ratio = fast[i] / expected[i]
        feats = [Feature(name="requests_per_10min", value=round(float(fast[i]), 1),
                         baseline=round(float(expected[i]), 2), contribution=1.0)]
        out.append(ctx.finding("api.rate_burst", c, i, e.api_key_id, e.principal, min(1.0, 0.5 + ratio / 100),
                               feats, f"API key {e.api_key_id} made about {fast[i]:.0f} requests in 10 minutes, "
                                      f"{ratio:.0f}x its usual {expected[i]:.1f}."))
        if new_model[i] or (e.model and recent_models[i] >= BURST_EXTRACTION_MODELS):
            out.append(ctx.finding("api.model_extraction", c, i, e.api_key_id, e.principal, 0.85, feats + [
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
        out.append(ctx.finding("api.model_extraction", c, i, e.api_key_id, e.principal, 0.8, [
            Feature(name="requests_per_10min", value=round(float(fast[i]), 1),
                    baseline=round(float(expected[i]), 2), contribution=1.0),
            Feature(name="models_in_10min", value=float(n_models), baseline=1.0),
            Feature(name="new_model", value=float(new_model[i]), baseline=0.0)],
            f"API key {e.api_key_id} is querying {n_models} models within 10 minutes at {ratio:.0f}x its usual "
            f"rate ({fast[i]:.0f} requests), a model-extraction pattern."))
    _learn_key_models(ctx, c)
    return out


def _scope_peers(ctx: Context, c: ApiColumns, new_scope: np.ndarray,
                 scope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """As of each event: keys of its tenant that used its scope before, and keys of its tenant seen before.

    The counts are of tracked keys: compaction takes an evicted key out of them (``compaction.uncount_keys``),
    so a key that comes back is counted once again, not twice.
    """
    s = ctx.tables
    new_key = ctx.novel("tenant_key", c.key.astype(np.int64))
    ts_key = pair(c.tenant, scope)
    uniq, inv = np.unique(ts_key, return_inverse=True)  # one dict look-up per (tenant, scope), not per event
    users = np.array([s.scope_keys.get(x, 0) for x in uniq.tolist()], dtype=np.int64)[inv]
    users += earlier_flagged(ts_key, new_scope)
    uniq, inv = np.unique(c.tenant, return_inverse=True)
    keys = np.array([s.tenant_keys.get(x, 0) for x in uniq.tolist()], dtype=np.int64)[inv]
    keys += earlier_flagged(c.tenant, new_key)
    for x in ts_key[new_scope].tolist():
        s.scope_keys[x] = s.scope_keys.get(x, 0) + 1
    for x in c.tenant[new_key].tolist():
        s.tenant_keys[x] = s.tenant_keys.get(x, 0) + 1
    return users, keys


def _key_models_recent(ctx: Context, c: ApiColumns, at: np.ndarray) -> np.ndarray:
    """Distinct models each event's key queried in the 10 minutes up to it (earlier batches too), at the
    event indices ``at`` (0 elsewhere). One compiled pass over the batch per index: a burst of thousands of
    requests is where this is asked most."""
    out = np.zeros(len(c.key), dtype=np.int64)
    if not at.size:
        return out
    store = ctx.tables.key_models
    prior = [(k, m, t) for k in np.unique(c.key[at]).tolist() for m, t in store.get(k, {}).items()]
    pk, pm, pt = (np.array(x, dtype=np.int64) for x in zip(*prior, strict=True)) if prior else (
        np.zeros(0, dtype=np.int64),) * 3
    out[at] = distinct_recent(c.key.astype(np.int64), c.ts, c.model.astype(np.int64), at, MODEL_WINDOW_MS,
                              pk, pm, pt)
    return out


def _learn_key_models(ctx: Context, c: ApiColumns) -> None:
    """Record the latest time each key queried each model of the batch."""
    sel = np.flatnonzero(c.model >= 0)
    if not sel.size:
        return
    km = pair(c.key[sel], c.model[sel])
    uniq, inv = np.unique(km, return_inverse=True)
    last = np.full(uniq.size, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(last, inv, c.ts[sel])
    store = ctx.tables.key_models
    for kk, t in zip(uniq.tolist(), last.tolist(), strict=True):
        d = store.setdefault(kk >> 31, {})
        m = kk & 0x7FFFFFFF
        if t > d.get(m, -1):
            d[m] = t


def expire(tables: State, day_start: int, config: Any) -> None:
    """Forget model times of keys idle past the horizon (the look-back is 10 minutes)."""
    if config.idle_evict_days > 0:
        cutoff = idle_cutoff(day_start, config)
        tables.key_models = {k: d2 for k, d in tables.key_models.items()
                             if (d2 := {m: t for m, t in d.items() if t >= cutoff})}


FAMILY = Family(
    name="api",
    kind="api_usage",
    doc="Per-key and per-IP rules over API requests: a key's warm-up, novelty of its clients, scopes and "
        "models, and its request rate against its own slow baseline.",
    config=ApiConfig,
    stage=stage,
    expire=expire,
    detectors=(
        Detector(
            "api.auth_failure_burst", "Authentication-failure burst (credential stuffing)", "client_ip",
            ("atlas:AML.T0012", "owasp-llm:LLM10"),
            "Counts each client IP's failed authentications with exponential decay (time constant "
            "`auth_fail_tau_s`, about a minute). A failed request raises the alert once that count reaches "
            "`auth_fail_min`: one IP trying many keys or passwords in quick succession. The score grows with "
            "the count."),
        Detector(
            "api.new_client", "API key used from a new client IP or user agent", "api_key",
            ("atlas:AML.T0012", "atlas:AML.T0055"),
            "Remembers every client IP and user agent each key has been used from. Once a key is warm "
            "(`key_warm_events` requests over at least `key_warm_hours`), a successfully authenticated "
            "request from an IP or user agent the key never used is raised: a leaked key used from "
            "somewhere else. Both new at once scores higher than either alone."),
        Detector(
            "api.new_scope", "API key used a scope it never used", "api_key",
            ("atlas:AML.T0012", "owasp-llm:LLM06"),
            "Remembers which scopes each key used. A warm key (`scope_warm_events` requests) using a scope "
            "for the first time is raised; a young key (`scope_cold_events` requests) is judged by its "
            "tenant's keys instead: using a scope fewer than `scope_peer_share` of them use (with at least "
            "`scope_peer_min_keys` keys in the tenant) is raised. Admin scopes score highest, write scopes "
            "next."),
        Detector(
            "api.rate_burst", "Request rate far above the key's baseline", "api_key",
            ("atlas:AML.T0034", "owasp-llm:LLM10"),
            "Keeps two decayed request counts per key: a fast one (10 minutes) and a slow baseline (a day) "
            "that does not learn from bursts. A warm key whose fast count is at least `rate_min` and "
            "`rate_ratio` times what its baseline expects is raised; the score grows with the ratio."),
        Detector(
            "api.model_extraction", "Sustained, high-diversity inference queries", "api_key",
            ("atlas:AML.T0024.002", "atlas:AML.T0040", "owasp-llm:LLM10"),
            "Model extraction spreads queries over models faster than usual. Raised when a key runs at "
            "`rate_ratio` times its usual rate (from `extraction_min` requests) across at least "
            "`extraction_models` distinct models within 10 minutes, or when a rate burst also queries a model "
            "the key never used (or three recent models)."),
    ),
    columns=(
        Column("key", "n", 0, "requests seen (warm-up)"),
        Column("key", "first", 0, "first request time (warm-up)"),
        Column("key", "fast", 0, "decayed request count, `rate_tau_fast_s`"),
        Column("key", "fast_last", 0, "time of the fast count's last update"),
        Column("key", "slow", 0, "decayed baseline request count, `rate_tau_slow_s`"),
        Column("key", "slow_last", 0, "time of the baseline's last update"),
        Column("key", "since", 0, "start of the baseline's learning"),
        Column("ip", "fail", 0, "decayed count of failed authentications, `auth_fail_tau_s`"),
        Column("ip", "fail_last", 0, "time of the failure count's last update"),
    ),
    novelty=(
        NoveltySet("key_ip", ("key", "ip"), "client IPs each key was used from"),
        NoveltySet("key_ua", ("key", None), "user agents (tokens) each key was used with"),
        NoveltySet("key_scope", ("key", None), "scopes (tokens) each key used"),
        NoveltySet("key_model", ("key", None), "models (tokens) each key queried"),
        NoveltySet("tenant_key", (None, "key"), "keys counted in their tenant's peer count (bare key ids)"),
    ),
    tables=(
        Table("key_models", "key id -> model -> last time queried (models in the last 10 minutes)",
              "remapped with the keys; entries idle past the horizon dropped"),
        Table("scope_keys", "(tenant, scope) -> tracked keys that used the scope",
              "evicted keys uncounted (compaction.uncount_keys)"),
        Table("tenant_keys", "tenant -> tracked keys", "evicted keys uncounted (compaction.uncount_keys)"),
    ),
)
