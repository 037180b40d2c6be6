"""API-usage detectors: credential stuffing, new clients and scopes, rate bursts, model extraction.

They share one feature stage over a batch's ``ApiColumns``: each key's warm-up (requests and
hours since first seen), its novelty sets, and its fast/slow request rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.alerting import Finding
from detectors.calibration import one_in, score_of
from detectors.columns import ApiColumns
from detectors.families.common import DAY, HOUR, MIN, count_before, earlier_flagged, fmt, idle_cutoff
from detectors.kernels import (
    APPEAR_BINS,
    KR_FAIL_C,
    KR_FAIL_E,
    KR_FAIL_S,
    KR_GAP_RATE,
    KR_GAP_RATE_LONG,
    KR_LEVEL,
    KR_P_HOUR,
    KR_P_NEW,
    KR_RATE_C,
    KR_RATE_E,
    KR_RATE_S,
    KR_RATE_W,
    KR_SURGE,
    KR_TOK_BASE,
    KR_TOK_RUN,
    KR_TOK_Z,
    KR_WAKE_N,
    TN_COLS,
    appearance_model,
    decayed_count,
    distinct_recent,
    gap_scan_nb,
    group_log_residual,
    key_rate_model,
    pair,
    scope_run,
    token_run_model,
    token_scope_model,
)
from detectors.registry import Column, Context, Detector, Family, NoveltySet, Table, option
from detectors.state import State
from schemas.alerts import Feature
from schemas.block import code

MODEL_WINDOW_MS = 10 * MIN  # look-back of "distinct models a key queried recently"
RATE_WINDOWS_S = (60.0, 600.0, 3600.0)  # a key's request count is judged over these time constants at once
WINDOW_NAMES = ("minute", "10 minutes", "hour")
# a key's last k+1 requests are judged as a cluster for each of these k: the first ones for api.rate_burst (a burst
# of 4 to 17 requests), all of them for api.model_extraction (its outputs or models are evidence of their own, so
# two or three requests close together are enough rate evidence to add to them)
GAP_KS_BURST = (3, 5, 8, 12, 16)
GAP_KS = (*GAP_KS_BURST, 1, 2)
GAP_DEPTH = max(GAP_KS)  # request times each key keeps for that (key columns gap0..)
ASSET = {"admin": 3, "write": 2}  # a scope's weight in severity (calibration.score_of); others 0
_RATE_LIMITED = code("api_usage", "auth_result", "rate_limited")


@dataclass(frozen=True)
class ApiConfig:
    auth_fail_tau_s: float = option(60.0, "time constant of the per-IP decayed count of failed authentications")
    auth_fail_min: float = option(20.0, "failed authentications (decayed count) from one IP that make a burst")
    key_warm_hours: float = option(6.0, "hours since a key was first seen before it is judged against itself")
    scope_cold_events: int = option(10, "floor: requests of a key before its first use of a scope is judged")
    scope_run_after: int = option(20, "floor: requests a key made on the same scopes before taking up a new one for "
                                      "its run of requests on it to count (young keys take up their own scopes "
                                      "around their tenth request and then use them)")
    scope_surprise: float = option(3.0, "surprise of a key's first use of an unprivileged scope (its own rate of "
                                        "taking up scopes, times the share of its tenant's keys using the scope) "
                                        "that raises api.new_scope (a floor: the false-alarm budget decides)")
    client_surprise: float = option(5.0, "surprise (-log10 probability) of a new client IP / user agent, judged by "
                                         "the key's own novelty rate, that raises api.new_client")
    client_prior_weight: float = option(5.0, "requests' worth of the tenant's novelty rate a key's own is shrunk to")
    rate_surprise: float = option(6.0, "surprise of a key's request count against its expected count that raises "
                                       "api.rate_burst (and keeps the requests out of its baseline)")
    rate_min_requests: float = option(6.0, "floor: requests (decayed count) in the window below which no burst is "
                                           "raised")
    rate_tau_slow_s: float = option(86_400.0, "time constant of a key's and a tenant's baseline request rate")
    rate_tau_week_s: float = option(604_800.0, "time constant of a tenant's weekly request rate: while its rate of "
                                                "the last day is below the week's (a weekend), every key is expected "
                                                "at its rate times that ratio, so the lull does not make the next "
                                                "weekday a burst (0: off)")
    rate_prior_events: float = option(3.0, "requests' worth of its tenant's per-key rate a key's own is shrunk to")
    rate_nb_size: float = option(10.0, "the most requests a key's rate is trusted as resting on (negative-binomial "
                                       "size): hour-scale counts of real traffic vary more than a Poisson's")
    rate_floor_per_hour: float = option(0.5, "floor: the least request rate a key is expected to have, per hour")
    rhythm_tau_days: float = option(7.0, "time constant of a tenant's and a key's learned hour-of-day rhythm")
    rhythm_prior_events: float = option(48.0, "requests' worth of its tenant's hour-of-day rhythm a key's own is "
                                              "shrunk toward (a young key follows its tenant's)")
    rate_level_floor: float = option(0.02, "floor: the least share of its average rate a key is expected to have "
                                           "at its quietest hour")
    token_surprise: float = option(7.0, "summed surprise of a run of requests far above the key's usual tokens "
                                        "that raises api.denial_of_wallet")
    token_run_z: float = option(2.5, "z-score of log tokens from which a request counts toward a run")
    token_min_sd: float = option(0.5, "floor: the least spread (log tokens) a key's requests are judged with "
                                      "(request sizes of real traffic vary by a factor of 1.6 and more)")
    token_alpha: float = option(0.02, "weight of each request in a key's mean and spread of log(output / input "
                                      "tokens) (about the last 50 requests; api.model_extraction's long outputs)")
    token_gate: float = option(4.0, "z-score of log tokens from which a request is not learned into the key's "
                                    "distribution (lower: the spread shrinks on itself)")
    token_prior_events: float = option(20.0, "requests' worth of its endpoint peers' distribution of log(output / "
                                             "input tokens) a key's own is shrunk toward (a young key is judged by "
                                             "its peers)")
    token_route_alpha: float = option(0.01, "weight of each request in its tenant's typical log tokens per endpoint "
                                            "(the norm a key's tokens are judged relative to)")
    token_route_step: float = option(1.0, "the most (log tokens) one request moves its endpoint's norm, times its "
                                          "weight: a run of huge requests cannot drag the norm")
    extraction_rate_surprise: float = option(2.0, "floor: rate surprise from which a key's rate counts toward "
                                                  "model extraction")
    extraction_surprise: float = option(6.0, "rate surprise plus long-output or new-model surprise that raises "
                                             "api.model_extraction")
    extraction_evidence: float = option(3.0, "floor: the long-output or new-model surprise that counts as evidence")
    extraction_run_evidence: float = option(4.5, "floor: the surprise of a run of long outputs that counts as "
                                                 "evidence (more than one request's: among a key's thousands of "
                                                 "requests, one output 3 spreads above its usual is common)")
    extraction_min_requests: float = option(3.0, "floor: requests (decayed count, or the cluster's) below which no "
                                                 "model extraction is raised (fewer than api.rate_burst's: the "
                                                 "outputs or models are evidence of their own)")
    extraction_models: int = option(3, "distinct models in 10 minutes from which spreading over models is checked")
    stuffing_surprise: float = option(6.0, "surprise of a tenant's failed authentications against its own failure "
                                           "rate that raises api.auth_failure_spread")
    stuffing_min_failures: float = option(4.5, "floor: failures (decayed count over 10 minutes) below which no "
                                               "spread is raised")
    stuffing_floor_share: float = option(0.01, "floor: the least share of a tenant's requests expected to fail")
    unknown_surprise: float = option(5.5, "surprise of a key appearing (new, or dormant) in its tenant at a quiet "
                                          "hour, plus that of its calls since, that raises api.unknown_key")
    unknown_min_calls: int = option(2, "floor: calls a (re)appearing key makes before it is judged")
    unknown_dormant_days: float = option(3.0, "days of silence after which a key counts as appearing again")
    unknown_prior_appearances: float = option(5.0, "appearances' worth of its activity rhythm the hours its tenant's "
                                                   "keys appeared at are shrunk toward")
    unknown_quiet_share: float = option(0.2, "floor: a quiet hour is one where the tenant's activity (and its keys' "
                                              "appearances) at hours at least as quiet is at most this share of it")
    unknown_appear_min: float = option(3.0, "floor: surprise of the appearance alone (how rarely the tenant sees a "
                                            "key appear at an hour this quiet) below which its calls are not judged")
    token_mean_alpha: float = option(0.005, "weight of each request in a key's mean of log tokens (about its last 200 "
                                            "requests; a young key's requests weigh 1 / requests seen)")
    token_var_alpha: float = option(0.002, "weight of each request in a key's spread of log tokens (about its last 500 "
                                           "requests): a spread estimated from fewer is low by chance often enough "
                                           "that ordinary large requests look extreme")
    token_peer_events: float = option(100.0, "requests' worth of its endpoint peers' within-key spread a key's own "
                                             "spread of log tokens is shrunk toward")
    token_single_surprise: float = option(5.5, "floor: surprise of one request's tokens (its normal tail on the log "
                                               "scale under the key's own distribution) that raises "
                                               "api.denial_of_wallet by itself, without a run")


class TenantRates:
    """Per-tenant rows of the API family: request and failure rates, new-key rate, hour-of-day rhythm.

    Keyed by tenant id (tenants are never evicted): ``rows`` has the ``TN_*`` columns of
    ``kernels.key_rate_model``, ``hours`` the tenant's decayed event count per hour of the day, ``client``
    its keys' pooled client novelty (the prior of ``api.new_client``).
    """

    def __init__(self) -> None:
        self.stuffing_last: dict[int, int] = {}  # tenant -> latest hit of its api.auth_failure_spread episode
        self.rows = np.zeros((0, TN_COLS))
        self.hours = np.zeros((0, 24))
        self.client = np.zeros((0, 3))  # new IPs, new user agents, requests: over its keys, each key's first left out
        self.scopes = np.zeros((0, 2))  # scopes taken up, requests: over its keys, each key's first left out
        self.route_rows: dict[int, int] = {}  # pair(tenant, scope) -> row of route_tok
        # per (tenant, scope): typical log tokens per request, requests learned; spread of keys' requests around it
        # (mean square of the residual), requests learned into that; the same four of log(output / input tokens)
        self.route_tok = np.zeros((0, 8))
        self.peers = np.zeros((0, 4))  # per route_tok row: keys' token spread within a key and between keys
        # per tenant: its keys' past appearances by how quiet their hour was (``kernels.appearance_model``), decayed
        self.appear = np.zeros((0, APPEAR_BINS))
        self.appear_last = np.zeros(0)

    def route_index(self, keys: np.ndarray) -> np.ndarray:
        """The ``route_tok`` row of each pair(tenant, scope) key (new pairs get a row)."""
        if not hasattr(self, "route_rows"):  # a checkpoint from before the per-endpoint token norm
            self.route_rows, self.route_tok = {}, np.zeros((0, 8))
        uniq, inv = np.unique(keys, return_inverse=True)
        rows = np.empty(uniq.size, dtype=np.int64)
        for j, x in enumerate(uniq.tolist()):
            rows[j] = self.route_rows.setdefault(x, len(self.route_rows))
        grow = len(self.route_rows) - self.route_tok.shape[0]
        if grow > 0:
            self.route_tok = np.vstack([self.route_tok, np.zeros((grow, 8))])
        return rows[inv.reshape(-1)]

    def route_peers(self) -> np.ndarray:
        """Per ``route_tok`` row, its keys' token spreads (``kernels.token_scope_model``): within a key (variance,
        requests learned) and between keys (variance, updates), grown to the rows there are."""
        if not hasattr(self, "peers"):  # a checkpoint from before the hierarchical token model
            self.peers = np.zeros((0, 4))
        grow = self.route_tok.shape[0] - self.peers.shape[0]
        if grow > 0:
            self.peers = np.vstack([self.peers, np.zeros((grow, 4))])
        return self.peers

    def fit(self, n: int) -> None:
        if self.rows.shape[1] < TN_COLS:  # a checkpoint from before the tenant's minute count
            self.rows = np.hstack([self.rows, np.zeros((self.rows.shape[0], TN_COLS - self.rows.shape[1]))])
        grow = n - self.rows.shape[0]
        if grow > 0:
            self.rows = np.vstack([self.rows, np.zeros((grow, TN_COLS))])
            self.hours = np.vstack([self.hours, np.zeros((grow, 24))])
            self.client = np.vstack([self.client, np.zeros((grow, 3))])
        if not hasattr(self, "scopes"):  # a checkpoint from before the scope take-up rates
            self.scopes = np.zeros((0, 2))
        grow = n - self.scopes.shape[0]
        if grow > 0:
            self.scopes = np.vstack([self.scopes, np.zeros((grow, 2))])
        if not hasattr(self, "appear"):  # a checkpoint from before appearances were learned by hour
            self.appear, self.appear_last = np.zeros((0, APPEAR_BINS)), np.zeros(0)
        grow = n - self.appear.shape[0]
        if grow > 0:
            self.appear = np.vstack([self.appear, np.zeros((grow, APPEAR_BINS))])
            self.appear_last = np.concatenate([self.appear_last, np.zeros(grow)])


def stage(ctx: Context, c: ApiColumns) -> list[Finding]:
    """Every api_usage detector over one batch (findings in any order; the engine sorts them)."""
    cfg, s, v = ctx.config, ctx.tables, ctx.tables.vocabs
    s.key.fit(len(v.key))
    s.ip.fit(len(v.ip))
    tenants: TenantRates = s.family["api_tenants"]
    tenants.fit(len(v.tenant))
    k = s.key
    out: list[Finding] = []
    n_before = count_before(k, c.key, c.ts)
    asset = _asset(ctx, c)

    out += _new_client(ctx, c, n_before)

    out += _new_scope(ctx, c, n_before, asset)

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

    m, route_norm, gap = _key_model(ctx, c, tenants, n_before)
    out += _rate_findings(ctx, c, m, asset, n_before, route_norm, gap)
    out += _stuffing_findings(ctx, c, m, tenants)
    out += _unknown_findings(ctx, c, m)
    _learn_key_models(ctx, c)
    return out


def _new_scope(ctx: Context, c: ApiColumns, n_before: np.ndarray, asset: np.ndarray) -> list[Finding]:
    """api.new_scope: a key using a scope for the first time, as surprising as its own habits make it.

    The chance that a key's next request brings a scope new to it is its own rate of taking up scopes (the
    scopes it used after its first, over its requests), shrunk toward its tenant's keys' rate (``client_prior_weight``
    requests' worth) while it is young; the chance that the new scope is this one is the share of the tenant's
    keys that use it (one more key as the prior). A young key trying the scopes most keys use is not surprising; a
    key that used one scope for a thousand requests turning to one no other key uses is. A privileged scope
    (admin, write) a key past ``scope_cold_events`` requests uses for the first time is raised whatever the odds:
    it is what an over-permissioned key's misuse looks like, and its severity follows the asset.
    """
    cfg, k = ctx.config, ctx.tables.key
    pooled = ctx.tables.family["api_tenants"].scopes
    scope = np.where(c.scope < 0, 0, c.scope)
    new_scope = ctx.novel("key_scope", pair(c.key, scope)) & (c.scope >= 0)
    peer_users, peer_keys = _scope_peers(ctx, c, new_scope, scope)
    later = new_scope & (n_before > 0)  # a key's first request brings its first scope: not a novelty
    own = k["scopes"][c.key] + earlier_flagged(c.key, later)
    t_new = pooled[c.tenant, 0] + earlier_flagged(c.tenant, later)
    t_all = pooled[c.tenant, 1] + earlier_flagged(c.tenant, n_before > 0)
    prior = (t_new + 1.0) / (t_all + 2.0)
    w = cfg.client_prior_weight
    p_new = np.clip((own + prior * w) / (np.maximum(n_before - 1, 0) + w), 1e-12, 1.0)
    p_this = (peer_users + 1.0) / (peer_keys + 2.0)
    surprise = -np.log10(p_new) - np.log10(np.minimum(p_this, 1.0))
    np.add.at(k["scopes"], c.key[later], 1.0)
    np.add.at(pooled[:, 0], c.tenant[later], 1.0)
    np.add.at(pooled[:, 1], c.tenant[n_before > 0], 1.0)
    young = (n_before >= cfg.scope_cold_events) & (c.ts - k["first"][c.key] >= cfg.key_warm_hours * HOUR)
    privileged = asset >= 2
    out = []
    for i in np.flatnonzero(later & ~c.auth_fail & young & (privileged | (surprise >= cfg.scope_surprise))):
        e = c.events[i]
        sc = e.scope_used or ""
        score = score_of(float(surprise[i]), int(asset[i]))
        if privileged[i]:
            score = max(score, 0.9 if asset[i] >= 3 else 0.75)
        f = ctx.finding("api.new_scope", c, i, e.api_key_id, e.principal, score,
                        [Feature(name="scope_first_use", value=1.0, baseline=round(float(p_new[i]), 5)),
                         Feature(name="key_events_seen", value=float(n_before[i])),
                         Feature(name="tenant_keys_using_scope", value=float(peer_users[i]),
                                 baseline=float(peer_keys[i])),
                         Feature(name="surprise", value=round(float(surprise[i]), 2))],
                        f"API key {e.api_key_id} used scope '{sc}' ({e.method} {e.endpoint}) for the first time "
                        f"after {int(n_before[i])} requests; it takes up a new scope on about "
                        f"{one_in(-np.log10(p_new[i]))} requests, and {int(peer_users[i])} of its tenant's "
                        f"{int(peer_keys[i])} keys use this one: about {one_in(surprise[i])} for this key"
                        + (" (a privileged scope: raised whatever the odds)." if privileged[i] else "."))
        if not privileged[i]:
            f.surprise = float(surprise[i])
        out.append(f)
    out += _scope_runs(ctx, c, later, later & ~c.auth_fail & young & ~privileged, surprise, n_before, p_this)
    return out


def _scope_runs(ctx: Context, c: ApiColumns, new: np.ndarray, start: np.ndarray, surprise: np.ndarray,
                n_before: np.ndarray, share: np.ndarray) -> list[Finding]:
    """api.new_scope, second way: a key's first use of an unprivileged scope followed by requests on it alone.

    A key that takes up a scope in passing (one request among its usual ones) is what a first use alone judges;
    a key that, after hundreds of requests on the same scopes, turns to a new one and stays on it is a different
    thing: under the key's own habits a scope it never used is a small share of its traffic, so a run of
    requests on it from its first use is unlikely (``kernels.scope_run``). The run's surprise adds to the first
    use's; it is raised when the sum reaches ``scope_surprise``, each request of the run judged as of itself. A run
    counts only after more than ``scope_run_after`` requests on the same scopes: a key whose scopes have only
    just come to be judged is still finding its way.
    """
    cfg, k = ctx.config, ctx.tables.key
    scope = np.where(c.auth_fail, -2, c.scope).astype(np.float64)  # a failed request ends a run
    length, total, base = scope_run(c.key, scope, new, start, surprise, n_before.astype(np.float64),
                                    np.minimum(share, 1.0), float(cfg.client_prior_weight),
                                    float(cfg.scope_run_after), k["srun_scope"], k["srun_len"], k["srun_n0"],
                                    k["srun_s"], k["srun_q"], k["srun_last"])
    out: list[Finding] = []
    for i in np.flatnonzero((length >= 2) & (total >= cfg.scope_surprise)):
        e = c.events[i]
        j, n0 = int(length[i]), int(base[i])
        f = ctx.finding("api.new_scope", c, i, e.api_key_id, e.principal, score_of(float(total[i]), 0),
                        [Feature(name="scope_run", value=float(j), baseline=1.0),
                         Feature(name="key_events_before_scope", value=float(n0)),
                         Feature(name="surprise", value=round(float(total[i]), 2))],
                        f"API key {e.api_key_id} used scope '{e.scope_used or ''}' for the first time after {n0} "
                        f"requests on the same scopes and has made its last {j} requests on it alone "
                        f"({e.method} {e.endpoint}); a scope a key never used in {n0} requests is a small share of its "
                        f"traffic (about one in {n0 + 1}, shrunk toward its share of the tenant's keys), so the "
                        f"first use and the run together are about "
                        f"{one_in(float(total[i]))} for this key.")
        f.surprise = float(total[i])
        out.append(f)
    return out


def _asset(ctx: Context, c: ApiColumns) -> np.ndarray:
    """Each request's asset weight from its scope: admin scopes 3, write scopes 2, others 0."""
    names = ctx.tables.vocabs.token.names
    uniq, inv = np.unique(c.scope, return_inverse=True)
    weight = np.array([0 if x < 0 else next((w for part, w in ASSET.items() if part in names[x]), 0)
                       for x in uniq.tolist()], dtype=np.int64)
    return weight[inv.reshape(-1)]


def _new_client(ctx: Context, c: ApiColumns, n_before: np.ndarray) -> list[Finding]:
    """api.new_client: a new client IP or user agent, as surprising as the key's own novelty rate makes it.

    A key's rate of new IPs (user agents) per request after its first, shrunk toward its tenant's pooled rate
    (``client_prior_weight`` requests' worth) while the key is young: a key behind a proxy that shows a new IP
    on most calls is not surprised by one more; a key that used one client for months is.
    """
    cfg, k = ctx.config, ctx.tables.key
    pooled_rows = ctx.tables.family["api_tenants"].client
    new_ip = ctx.novel("key_ip", pair(c.key, c.ip))
    ua = np.where(c.agent_tok < 0, 0, c.agent_tok)
    new_ua = ctx.novel("key_ua", pair(c.key, ua)) & (c.agent_tok >= 0)
    # a key's first successful request brings its first client: not a novelty (failed guesses at a key id before
    # its owner's first use are not the key's clients)
    later = (k["since"][c.key] > 0) | (earlier_flagged(c.key, ~c.auth_fail) > 0)
    surprise = np.zeros(len(c.key))
    rates = {}
    for col, new in (("ip_new", new_ip), ("ua_new", new_ua)):
        counted = new & later
        own = k[col][c.key] + earlier_flagged(c.key, counted)
        t_new = pooled_rows[c.tenant, 0 if col == "ip_new" else 1] + earlier_flagged(c.tenant, counted)
        t_all = pooled_rows[c.tenant, 2] + earlier_flagged(c.tenant, later)
        prior = (t_new + 1.0) / (t_all + 2.0)
        w = cfg.client_prior_weight
        p = np.clip((own + prior * w) / (np.maximum(n_before - 1, 0) + w), 1e-12, 1.0)
        rates[col] = p
        surprise += np.where(counted, -np.log10(p), 0.0)
        np.add.at(k[col], c.key[counted], 1.0)
        np.add.at(pooled_rows[:, 0 if col == "ip_new" else 1], c.tenant[counted], 1.0)
    np.add.at(pooled_rows[:, 2], c.tenant[later], 1.0)
    out = []
    for i in np.flatnonzero((surprise >= cfg.client_surprise) & ~c.auth_fail):
        e = c.events[i]
        what = []
        if new_ip[i]:
            what.append(f"client IP {e.client_ip} (it shows a new IP on {one_in(-np.log10(rates['ip_new'][i]))} "
                        "requests)")
        if new_ua[i]:
            what.append(f"user agent '{e.user_agent}' (a new one on {one_in(-np.log10(rates['ua_new'][i]))} "
                        "requests)")
        f = ctx.finding("api.new_client", c, i, e.api_key_id, e.principal, score_of(surprise[i], 1),
                        [Feature(name="new_client_ip", value=float(new_ip[i]), baseline=float(rates["ip_new"][i])),
                         Feature(name="new_user_agent", value=float(new_ua[i]), baseline=float(rates["ua_new"][i])),
                         Feature(name="key_events_seen", value=float(n_before[i])),
                         Feature(name="surprise", value=round(float(surprise[i]), 2))],
                        f"API key {e.api_key_id} was used from {' and '.join(what)}, after {int(n_before[i])} "
                        f"requests; about {one_in(surprise[i])} for this key (its own novelty rate, shrunk toward "
                        f"its tenant's keys').")
        f.surprise = float(surprise[i])
        f.title = ("API key used from a new client IP" + (" and user agent" if new_ua[i] else "") if new_ip[i]
                   else "API key used with a new user agent")
        out.append(f)
    return out
def _key_model(ctx: Context, c: ApiColumns, tenants: TenantRates,
               n_before: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``kernels.key_rate_model`` over the batch: rates, tokens, failures and appearing keys (``KR_*`` columns).

    Tokens are judged relative to their endpoint: a request's log tokens less its tenant's typical log tokens for
    that scope (kept by ``kernels.token_scope_model`` from each request less its key's own offset, so it is a typical
    key's size, not the busy keys' of the hour), so a key that mixes chat with batch jobs or embeddings is held to
    one tight distribution of its own (its usual size relative to each endpoint) rather than a wide mixture. The
    key's rate surprise is the better of its windows' and of the cluster of its latest requests
    (``kernels.gap_scan_nb``: the exact negative-binomial tail, the rate trusted as resting on at most
    ``rate_nb_size`` requests and on no more than the key's requests so far plus ``rate_prior_events``, so a young
    key's few requests are not judged as if its rate were known), corrected for the tests made. Also returns each
    event's endpoint norm (log tokens) and the cluster test's (surprise, k, gap ms, expected requests) rows.
    """
    cfg, k = ctx.config, ctx.tables.key
    codes = c.block.cols["auth_result"]
    stuff_fail = c.auth_fail & (codes != _RATE_LIMITED)
    has_tok = (c.model >= 0) & (c.tokens > 0) & ~c.auth_fail
    x = np.log1p(np.maximum(c.tokens, 0.0))
    rows = tenants.route_index(pair(c.tenant, np.where(c.scope < 0, 0, c.scope)))
    resid = np.where(has_tok, x, 0.0)  # made relative to its endpoint's norm by the token model, as of each request
    hours = np.stack([k[f"hour{j}"] for j in range(24)], axis=1)  # the key's own hour-of-day rhythm
    m = key_rate_model(  # tokens are judged below, with peers (no token is passed here)
        c.key, c.tenant, c.ts, ~c.auth_fail, stuff_fail, np.zeros(len(c.key), dtype=np.bool_), x,
        k["r1"], k["r10"], k["r60"], k["r_last"], k["base"], k["base_last"], k["since"], k["last_ok"], k["wake"],
        k["wake_n"], k["tok_mean"], k["tok_var"], k["tok_n"], k["tok_run"], tenants.rows, tenants.hours,
        np.array(RATE_WINDOWS_S) * 1000, cfg.rate_tau_slow_s * 1000, cfg.rate_prior_events, cfg.rate_nb_size,
        cfg.rhythm_tau_days * DAY, cfg.unknown_dormant_days * DAY, HOUR, cfg.rate_floor_per_hour / HOUR,
        cfg.rate_surprise, cfg.token_alpha, cfg.token_min_sd, 1, cfg.token_gate, cfg.token_run_z,
        cfg.stuffing_floor_share, cfg.stuffing_surprise, hours, cfg.rhythm_prior_events, cfg.rate_level_floor,
        k["pend"], k["pend_h"], k["x1"], k["x10"], k["x60"], cfg.rate_min_requests,
        cfg.rate_tau_week_s * 1000)
    for j in range(24):
        k[f"hour{j}"][:] = hours[:, j]
    # outputs relative to inputs (long outputs: extraction), the same way: endpoint norm, key shrunk to peers
    t_in = c.block.cols["tokens_in"].astype(np.float64)
    t_out = c.block.cols["tokens_out"].astype(np.float64)
    has_out = has_tok & (t_in > 0) & (t_out > 0)
    y = np.log1p(np.maximum(t_out, 0.0)) - np.log1p(np.maximum(t_in, 0.0))
    r_out = group_log_residual(rows, y, has_out, tenants.route_tok[:, 4], tenants.route_tok[:, 5],
                               cfg.token_route_alpha, cfg.token_route_step)
    outs = token_run_model(c.key, rows, has_out, r_out, k["out_mean"], k["out_var"], k["out_n"], k["out_run"],
                           tenants.route_tok[:, 6], tenants.route_tok[:, 7], cfg.token_alpha, cfg.token_min_sd,
                           cfg.token_prior_events, cfg.token_gate, cfg.token_run_z, cfg.token_route_alpha)
    # the cluster test: the key's expected rate at this event (its baseline, hour level and tenant surge), trusted
    # as resting on no more requests than the key has made (plus its prior's)
    ring = np.stack([k[f"gap{j}"] for j in range(GAP_DEPTH)], axis=1)
    g = gap_scan_nb(c.key, c.ts.astype(np.float64), m[:, KR_GAP_RATE], ring, np.array(GAP_KS, dtype=np.int64),
                    len(GAP_KS_BURST), np.minimum(n_before + cfg.rate_prior_events, cfg.rate_nb_size),
                    m[:, KR_GAP_RATE_LONG], 2.0 * HOUR)
    for j in range(GAP_DEPTH):
        k[f"gap{j}"][:] = ring[:, j]
    windows = m[:, KR_RATE_S] + np.log10(len(RATE_WINDOWS_S))  # back to the best window's own surprise
    # sustained rate (every k, for api.model_extraction) and burst rate (the short k): best test, corrected
    sustained = np.maximum(0.0, np.maximum(windows, g[:, 4]) - np.log10(len(RATE_WINDOWS_S) + len(GAP_KS)))
    m[:, KR_RATE_S] = np.maximum(0.0, np.maximum(windows, g[:, 0]) - np.log10(len(RATE_WINDOWS_S)
                                                                               + len(GAP_KS_BURST)))
    g[:, 0] = np.where(g[:, 0] > windows, g[:, 0], 0.0)  # the cluster tests are the evidence only where they won
    g[:, 4] = np.where(g[:, 4] > windows, g[:, 4], 0.0)
    tok = _token_model(ctx, c, tenants, rows, has_tok, resid, m[:, KR_RATE_S] >= cfg.extraction_rate_surprise)
    m[:, KR_TOK_Z], m[:, KR_TOK_RUN], m[:, KR_TOK_BASE] = tok[:, 0], tok[:, 1], tok[:, 2]
    return m, x - resid, np.column_stack([g, sustained, outs[:, 1], tok[:, 3]])


def _token_model(ctx: Context, c: ApiColumns, tenants: TenantRates, rows: np.ndarray, has_tok: np.ndarray,
                 resid: np.ndarray, at_rate: np.ndarray) -> np.ndarray:
    """``kernels.token_scope_model`` over the batch: each request's tokens relative to its endpoint against its
    key's own log-normal, shrunk toward its endpoint peers as a hierarchical normal.

    Requests at a rate their key's baseline finds unusual (``at_rate``: rate surprise at least
    ``extraction_rate_surprise``) are judged but not learned: a burst's or an extraction's tokens are not the
    key's habit, and learning them would make its ordinary requests look large afterwards.
    """
    cfg, k = ctx.config, ctx.tables.key
    route = tenants.route_tok
    return token_scope_model(c.key, rows, has_tok, resid, at_rate, k["tok_mean"], k["tok_var"], k["tok_n"],
                             k["tok_run"], route[:, 2], route[:, 3], tenants.route_peers(), cfg.token_mean_alpha,
                             cfg.token_var_alpha, cfg.token_min_sd, cfg.token_peer_events, cfg.token_gate,
                             cfg.token_run_z, cfg.token_route_alpha, route[:, 0], route[:, 1], cfg.token_route_step)


def _rate_findings(ctx: Context, c: ApiColumns, m: np.ndarray, asset: np.ndarray, n_before: np.ndarray,
                   route_norm: np.ndarray, gap: np.ndarray) -> list[Finding]:
    """api.rate_burst, api.model_extraction and api.denial_of_wallet from the key model's columns."""
    cfg, k = ctx.config, ctx.tables.key
    out: list[Finding] = []
    rate_s = m[:, KR_RATE_S]
    # requests the rate surprise rests on: the best window's decayed count, or the cluster's requests where it won
    count = np.maximum(m[:, KR_RATE_C], np.where(gap[:, 0] > 0, gap[:, 1] + 1, 0.0))
    count_x = np.maximum(m[:, KR_RATE_C], np.where(gap[:, 4] > 0, gap[:, 5] + 1, 0.0))
    # models new to the key: each as surprising as the key's own rate of new models makes it
    model = np.where(c.model < 0, 0, c.model)
    new_model = ctx.novel("key_model", pair(c.key, model)) & (c.model >= 0)
    models_before = k["models"][c.key] + earlier_flagged(c.key, new_model)
    np.add.at(k["models"], c.key[new_model], 1.0)
    recent_new = decayed_count(c.key, c.ts, (new_model & (n_before > 0)).astype(np.float64), k["mnew"],
                               k["mnew_last"], float(MODEL_WINDOW_MS))
    # the key's own rate of taking up models, as it was before the recent ones
    p_model = np.clip((np.maximum(models_before + 1.0 - recent_new, 0.0) + 1.0) / (np.maximum(n_before, 0) + 2.0),
                      1e-12, 1.0)
    model_s = np.where(recent_new >= 2.0, recent_new * -np.log10(p_model), 0.0)
    tok_run = np.maximum(m[:, KR_TOK_RUN], gap[:, 9])  # far more tokens, or far longer outputs for the input
    # a run of outputs counts from the surprise no single request gives by chance among the key's recent ones
    run_x = np.where(tok_run >= cfg.extraction_run_evidence, tok_run, 0.0)
    extra = np.maximum(run_x, model_s)
    extra = np.where(extra >= cfg.extraction_evidence, extra, 0.0)
    burst = (rate_s >= cfg.rate_surprise) & (count >= cfg.rate_min_requests)
    rate_x = gap[:, 8]  # the sustained-rate surprise: windows and clusters up to ``max(GAP_KS)`` requests
    extraction = ((c.model >= 0) & (rate_x >= cfg.extraction_rate_surprise) & (extra > 0)
                  & (rate_x + extra >= cfg.extraction_surprise) & (count_x >= cfg.extraction_min_requests))
    recent_models = _key_models_recent(ctx, c, np.flatnonzero(extraction))
    for i in np.flatnonzero(burst):
        e = c.events[i]
        what = "made " + _rate_words(m, gap, i, 0)
        f = ctx.finding("api.rate_burst", c, i, e.api_key_id, e.principal, score_of(rate_s[i], int(asset[i])),
                        [*_rate_features(m, i),
                         Feature(name="requests_in_cluster", value=float(gap[i, 1] + 1 if gap[i, 0] > 0 else 0),
                                 baseline=round(float(gap[i, 3]), 3))],
                        f"API key {e.api_key_id} {what}{_surge_words(m, i)}: about {one_in(rate_s[i])} for this key.")
        f.surprise = float(rate_s[i])
        out.append(f)
    for i in np.flatnonzero(extraction):
        e = c.events[i]
        total = float(rate_x[i] + extra[i])
        how = (f"outputs far longer than its usual (a run of requests adding up to {one_in(tok_run[i])})"
               if tok_run[i] >= model_s[i] else
               f"{int(recent_models[i])} models within 10 minutes, {recent_new[i]:.0f} of them new to it")
        f = ctx.finding("api.model_extraction", c, i, e.api_key_id, e.principal, score_of(total, int(asset[i])),
                        [*_rate_features(m, i),
                         Feature(name="models_in_10min", value=float(recent_models[i]), baseline=1.0),
                         Feature(name="new_models_10min", value=round(float(recent_new[i]), 2), baseline=0.0),
                         Feature(name="token_run_surprise", value=round(float(tok_run[i]), 2), baseline=0.0)],
                        f"API key {e.api_key_id} made {_rate_words(m, gap, i, 4)} ({one_in(rate_x[i])}), with "
                        f"{how}: a model-extraction pattern, about {one_in(total)} for this key.")
        f.surprise = total
        out.append(f)
    out += _wallet_findings(ctx, c, m, asset, route_norm, gap[:, 10])
    return out


def _wallet_findings(ctx: Context, c: ApiColumns, m: np.ndarray, asset: np.ndarray, route_norm: np.ndarray,
                     single: np.ndarray) -> list[Finding]:
    """api.denial_of_wallet: a run of requests far above the key's usual tokens adding up to ``token_surprise``,
    or one request whose own tail surprise (``single``) reaches ``token_single_surprise``."""
    cfg = ctx.config
    run = m[:, KR_TOK_RUN]
    by_run = (run >= cfg.token_surprise) & (m[:, KR_TOK_Z] >= cfg.token_run_z)
    out: list[Finding] = []
    for i in np.flatnonzero(by_run | (single >= cfg.token_single_surprise)):
        e = c.events[i]
        sv = float(max(run[i], single[i]) if by_run[i] else single[i])
        usual = float(np.expm1(m[i, KR_TOK_BASE] + route_norm[i]))
        how = (f"in a run of such requests adding up to about {one_in(sv)} for this key" if sv > single[i] else
               f"about {one_in(sv)} for one request of this key")
        f = ctx.finding("api.denial_of_wallet", c, i, e.api_key_id, e.principal, score_of(sv, int(asset[i])),
                        [Feature(name="tokens", value=float(c.tokens[i]), baseline=round(usual, 1), contribution=1.0),
                         Feature(name="tokens_z", value=round(float(m[i, KR_TOK_Z]), 2), baseline=0.0),
                         Feature(name="surprise", value=round(sv, 2))],
                        f"API key {e.api_key_id} sent a request of {c.tokens[i]:.0f} tokens, "
                        f"{c.tokens[i] / max(usual, 1):.0f}x its usual {usual:.0f} on {e.endpoint} (its own "
                        f"log-normal of tokens per request, relative to the endpoint), {how}: cost far above its "
                        "usual at its request rate.")
        f.surprise = sv
        out.append(f)
    return out


def _rate_features(m: np.ndarray, i: int) -> list[Feature]:
    w = int(m[i, KR_RATE_W])
    return [Feature(name=f"requests_per_{('1min', '10min', '60min')[w]}", value=round(float(m[i, KR_RATE_C]), 1),
                    baseline=round(float(m[i, KR_RATE_E]), 2), contribution=1.0),
            Feature(name="tenant_surge", value=round(float(m[i, KR_SURGE]), 2), baseline=1.0),
            Feature(name="hour_level", value=round(float(m[i, KR_LEVEL]), 2), baseline=1.0),
            Feature(name="surprise", value=round(float(m[i, KR_RATE_S]), 2))]


def _rate_words(m: np.ndarray, gap: np.ndarray, i: int, col: int) -> str:
    """What a key's rate surprise rests on: a cluster of its latest requests (``gap[:, col:col + 4]``, when that
    test won) or its best window's decayed count, against what its own baseline expects."""
    if gap[i, col] > 0:
        return (f"{int(gap[i, col + 1]) + 1} requests within {_duration(gap[i, col + 2])} where its own baseline "
                f"expects {fmt(gap[i, col + 3])} in that time at this hour")
    return (f"about {fmt(m[i, KR_RATE_C])} requests in the last {WINDOW_NAMES[int(m[i, KR_RATE_W])]} (decayed "
            f"count) where its own baseline expects {fmt(m[i, KR_RATE_E])} at this hour")


def _duration(ms: float) -> str:
    """A gap in words: '42 s', '7 min'."""
    return f"{ms / 1000:.0f} s" if ms < 120_000 else f"{ms / 60_000:.0f} min"


def _surge_words(m: np.ndarray, i: int) -> str:
    return (f", with its tenant's other keys at {m[i, KR_SURGE]:.1f}x theirs counted in" if m[i, KR_SURGE] >= 1.5
            else "")


def _stuffing_findings(ctx: Context, c: ApiColumns, m: np.ndarray, tenants: TenantRates) -> list[Finding]:
    """api.auth_failure_spread: a tenant's failed authentications far above its own failure rate.

    One alert per tenant episode (hits less than the detector's cooldown apart fold into it), named by the
    client IP of the failure that crossed the threshold: the failures may come from hundreds of IPs and keys.
    """
    cfg = ctx.config
    # raised on a failure of a key id that had not succeeded yet (a guess): a tenant's own key failing (an expired
    # key retried) is what its failure rate already holds, and its client is no stuffing source to name
    since = ctx.tables.key["since"][c.key]
    guess = (since <= 0) | (since > c.ts)
    hit = (m[:, KR_FAIL_S] >= cfg.stuffing_surprise) & (m[:, KR_FAIL_C] >= cfg.stuffing_min_failures) & guess
    cooldown = ctx.catalog["api.auth_failure_spread"].cooldown_s * 1000
    out: list[Finding] = []
    for i in np.flatnonzero(hit):
        t = int(c.tenant[i])
        last = tenants.stuffing_last.get(t)
        tsi = int(c.ts[i])
        if last is not None and tsi - last < cooldown:
            tenants.stuffing_last[t] = max(last, tsi)
            continue
        tenants.stuffing_last[t] = tsi
        e = c.events[i]
        sv = float(m[i, KR_FAIL_S])
        f = ctx.finding("api.auth_failure_spread", c, i, e.client_ip, e.principal, score_of(sv, 1),
                        [Feature(name="tenant_auth_failures_10min", value=round(float(m[i, KR_FAIL_C]), 1),
                                 baseline=round(float(m[i, KR_FAIL_E]), 2), contribution=1.0),
                         Feature(name="surprise", value=round(sv, 2))],
                        f"Tenant {e.tenant} saw about {m[i, KR_FAIL_C]:.0f} failed authentications in the last 10 "
                        f"minutes (decayed count) where its own failure rate expects {fmt(m[i, KR_FAIL_E])}: about "
                        f"{one_in(sv)} for this tenant. Latest: {e.auth_result} on key {e.api_key_id} from "
                        f"{e.client_ip}; failures spread over IPs and keys, as in credential stuffing.")
        f.surprise = sv
        out.append(f)
    return out


def _unknown_findings(ctx: Context, c: ApiColumns, m: np.ndarray) -> list[Finding]:
    """api.unknown_key: a key that appears (never seen, or silent for days) at an hour its tenant's keys do not
    appear at, and runs calls faster than a new key of its tenant would (``kernels.appearance_model``)."""
    cfg, k = ctx.config, ctx.tables.key
    tenants: TenantRates = ctx.tables.family["api_tenants"]
    # a new key's calls at its tenant's per-key rate of an average hour at least: the quiet hour is already the
    # appearance's own evidence, and is not counted twice
    rate = m[:, KR_GAP_RATE_LONG]
    a = appearance_model(c.key, c.tenant, c.ts.astype(np.float64), m[:, KR_WAKE_N], m[:, KR_P_HOUR], m[:, KR_P_NEW],
                         rate, tenants.appear, tenants.appear_last, cfg.rhythm_tau_days * DAY,
                         cfg.unknown_prior_appearances, cfg.rate_prior_events, cfg.unknown_surprise,
                         cfg.unknown_appear_min, cfg.unknown_quiet_share, k["app_s"],
                         k["app_t"], k["app_rate"], k["app_bin"])
    total = a[:, 0] + a[:, 1]
    out: list[Finding] = []
    for i in np.flatnonzero((total >= cfg.unknown_surprise) & (a[:, 0] >= cfg.unknown_appear_min)
                            & (m[:, KR_WAKE_N] >= cfg.unknown_min_calls)):
        e = c.events[i]
        sv, calls = float(total[i]), float(m[i, KR_WAKE_N])
        span = float(c.ts[i] - k["app_t"][c.key[i]])
        expected = float(k["app_rate"][c.key[i]]) * span
        f = ctx.finding("api.unknown_key", c, i, e.api_key_id, e.principal, score_of(sv, 1),
                        [Feature(name="calls_since_appearing", value=calls, baseline=round(expected + 1.0, 3)),
                         Feature(name="appearance_surprise", value=round(float(a[i, 0]), 2), baseline=0.0),
                         Feature(name="tenant_new_key_rate", value=float(m[i, KR_P_NEW])),
                         Feature(name="tenant_hour_share", value=round(float(m[i, KR_P_HOUR]), 4)),
                         Feature(name="surprise", value=round(sv, 2))],
                        f"API key {e.api_key_id} appeared in tenant {e.tenant} (never seen, or silent for "
                        f"{cfg.unknown_dormant_days:g} days) at an hour that holds {m[i, KR_P_HOUR]:.1%} of the "
                        f"tenant's own activity; with how often the tenant sees a new key (1 in "
                        f"{1 / max(float(m[i, KR_P_NEW]), 1e-12):,.0f} requests) and the hours its keys appear at, "
                        f"that was about {one_in(float(a[i, 0]))}. It then made {calls:.0f} calls in "
                        f"{_duration(span)} where a new key of the tenant is expected to make {fmt(expected)} more "
                        f"after its first ({one_in(float(a[i, 1]))}): about {one_in(sv)} together.")
        f.surprise = sv
        out.append(f)
    return out


def _scope_peers(ctx: Context, c: ApiColumns, new_scope: np.ndarray,
                 scope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """As of each event: keys of its tenant that used its scope before, and keys of its tenant seen before (with a
    successful request: the keys a credential-stuffing run guesses are not its tenant's keys).

    The counts are of tracked keys: compaction takes an evicted key out of them (``compaction.uncount_keys``),
    so a key that comes back is counted once again, not twice.
    """
    s = ctx.tables
    ok = ~c.auth_fail  # a key counts once it made a successful request: guessed keys are not the tenant's
    new_key = np.zeros(len(c.key), dtype=np.bool_)
    new_key[ok] = ctx.novel("tenant_key", c.key[ok].astype(np.int64))
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
    requests is where this is asked most. Called with no index too (one cheap pass), so a worker's warm-up
    loads the kernel before the first real extraction needs it."""
    out = np.zeros(len(c.key), dtype=np.int64)
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
    doc="Per-key, per-IP and per-tenant models of API requests: a key's client novelty rate, scopes and models, "
        "its request rate and tokens per request against its own learned baseline (with its own hour-of-day "
        "rhythm and its tenant's current surge), its tenant's authentication-failure rate and how often the "
        "tenant sees new keys.",
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
            "api.auth_failure_spread", "Tenant-wide authentication failures far above its own rate", "client_ip",
            ("atlas:AML.T0012", "owasp-llm:LLM10"),
            "Credential stuffing spread over many IPs and guessed keys, so that no single IP bursts. Counts the "
            "tenant's failed authentications (rate limiting left out) over about 10 minutes and compares them with "
            "what its own failure rate (learned, at least `stuffing_floor_share` of its requests) expects at this "
            "hour of its rhythm and its current traffic level. Raised when the Poisson tail of the count is below "
            "1 in 10^`stuffing_surprise` and at least `stuffing_min_failures` failed, on a failure at a key id that "
            "had not succeeded yet (a guess: the tenant's own key failing, an expired key retried, is what its "
            "failure rate holds, and its client is not the source to name); one alert per tenant episode, named by "
            "the client IP of the guess that crossed the line."),
        Detector(
            "api.new_client", "API key used from a new client IP or user agent", "api_key",
            ("atlas:AML.T0012", "atlas:AML.T0055"),
            "Remembers every client IP and user agent each key has been used from, and how often the key shows "
            "a new one (its own novelty rate, shrunk toward its tenant's keys' rate while it is young). A new IP or "
            "user agent is as surprising as that rate makes it: a key behind a proxy or NAT pool that shows a new "
            "IP on most calls is never surprised, a key that always called from one client is. Both new at once add "
            "up. Raised when the surprise reaches `client_surprise` (1 in 100,000 by default). A key's clients start "
            "with its first successful request: failed guesses at its id before its owner's first use are not its "
            "clients."),
        Detector(
            "api.new_scope", "API key used a scope it never used", "api_key",
            ("atlas:AML.T0012", "owasp-llm:LLM06"),
            "Remembers which scopes each key used. A key's first use of a scope (past `scope_cold_events` "
            "requests) is as unusual as the key's own rate of taking up new scopes (shrunk toward its tenant's "
            "keys' while it is young) times the share of the tenant's keys that use that scope: a young key "
            "trying the scopes most keys use is not news, a key that used one scope for a thousand requests "
            "turning to one no other key uses is. A key that then stays on the new scope adds that run's "
            "unlikeliness: a scope it never used in its last n requests on the same scopes is about one in n + 1 "
            "of its traffic (shrunk toward the share of the tenant's keys using it, worth `client_prior_weight` "
            "requests), so request after request on it alone is news even where the first use was not (a "
            "key still taking up scopes has a small n, and its runs are not: a run counts once n is above "
            "`scope_run_after`). It alerts at `scope_surprise`, as "
            "the false-alarm budget allows. A privileged scope (admin, write) used for the first time is raised "
            "whatever the odds: admin scopes score highest, write scopes next."),
        Detector(
            "api.rate_burst", "Request rate far above the key's own expected rate", "api_key",
            ("atlas:AML.T0034", "owasp-llm:LLM10"),
            "Counts each key's requests over the last minute, 10 minutes and hour (decayed counts) and compares "
            "each with what the key's own baseline rate expects (a day-scale rate learned from its unalarming "
            "traffic, shrunk toward its tenant's per-key rate while young) at this time of day in the key's own "
            "hour-of-day rhythm (learned per key, shrunk toward its tenant's rhythm while young: a key used in "
            "office hours is expected to be nearly silent at night, a service key is not), raised by the tenant's "
            "current surge (a release day that lifts every key of the tenant lifts the expectation too: the other "
            "keys' counts over the last 10 minutes and the last minute against what the tenant's rate and its "
            "exposure-weighted hour-of-day rhythm expected of them as of the clock hour's start, each believed to "
            "the lower one-sigma bound of its Gamma posterior, so a surge's own requests do not raise the "
            "expectation they are judged by, its start is seen within a minute, and chance in a few requests at a "
            "quiet hour is no surge). It also "
            "judges the key's latest 4, 6, 9, 13 and 17 requests as a cluster: how likely that many requests are "
            "within the time they took at the rate expected before the current clock hour (an exact "
            "negative-binomial tail, the rate trusted as resting on at most `rate_nb_size` requests and never on "
            "more than the key has made plus `rate_prior_events`: a burst of a dozen requests a minute apart, or "
            "of seventeen over half an hour on a quiet key, is seen as such, the burst's own requests do not raise "
            "the bar, and a young key's few requests are not judged as if its rate were known; a key in its first "
            "hour is judged by its tenant's per-key rate, its history starting with its first successful "
            "request). "
            "Raised when the best of these tests, corrected for the number made, is below 1 in 10^`rate_surprise` "
            "with at least `rate_min_requests` requests; such requests are not learned, and a key's requests join "
            "its baseline only once their clock hour is over. Requests that were reported as a burst are explained: "
            "the requests after them are judged without them (an hour after a burst, the key's next ordinary request "
            "is not a new burst because the old one still decays in its hour window), while a new burst is judged "
            "by its own requests."),
        Detector(
            "api.model_extraction", "Sustained inference far above the key's rate with long outputs or new models",
            "api_key", ("atlas:AML.T0024.002", "atlas:AML.T0040", "owasp-llm:LLM10"),
            "Model extraction runs many inference queries, with long outputs on one model or spread over models. "
            "Raised when a key's sustained-rate surprise (as for api.rate_burst, with its latest 2 and 3 requests "
            "judged as clusters too, so that two or three requests close together on a quiet key are rate "
            "evidence; at least `extraction_rate_surprise`) plus the surprise of its outputs (a run of "
            "requests far above its own tokens per request, or far above its own ratio of output to input tokens, "
            "each judged like api.denial_of_wallet, counted from `extraction_run_evidence`: a run, not one long "
            "output that a busy key shows by chance) or of the models new to it within 10 minutes (judged by how "
            "rarely the key takes up a new model) reaches `extraction_surprise`. It fires below the rate-burst "
            "threshold when the outputs or models add evidence, and from `extraction_min_requests` requests (fewer "
            "than a burst needs: the outputs or models are evidence of their own)."),
        Detector(
            "api.denial_of_wallet", "Tokens per request far above the key's own", "api_key",
            ("atlas:AML.T0034", "owasp-llm:LLM10"),
            "Judges each request's tokens relative to its endpoint (its log tokens less its tenant's typical log "
            "tokens for that scope, a robust running norm learned from each request less its key's own offset: "
            "a typical key's size on the endpoint, not that of whichever keys are busy at the hour, so a busy "
            "key with large requests that is quiet at night is not judged at night by the small keys' sizes), "
            "so a key that mixes chat, embeddings and batch jobs is held to one distribution of its own. Keeps "
            "each key's relative tokens as a log-normal (a mean over "
            "about its last 200 requests and a spread over about its last 500, spread at least `token_min_sd`, "
            "learned from requests that are not far out and not sent at a rate its key's baseline finds unusual), "
            "and judges a key with its peers as a hierarchical normal: per endpoint it learns how much one key's "
            "requests vary around their own mean and how much keys' means differ (each key counting about as much "
            "as another). A young key's mean is shrunk toward the endpoint's norm by how much keys differ and its "
            "spread toward one key's usual spread (worth `token_peer_events` requests), and what is not yet known "
            "of its mean widens the spread it is judged with: a key of a few dozen requests is judged by how one "
            "key's requests vary, not by how much every key's do. A request `token_run_z` standard deviations or "
            "more above adds its tail surprise to the key's run; an ordinary request halves the run. Raised when a "
            "run adds up to `token_surprise`, or when one request alone is past `token_single_surprise` (about 1 in "
            "300,000 for that key: the first request of a denial of wallet far above the key's own is raised at "
            "once): far larger contexts or outputs at the key's usual request rate."),
        Detector(
            "api.unknown_key", "A new or dormant key running calls at a quiet hour of its tenant", "api_key",
            ("atlas:AML.T0012", "owasp-llm:LLM10"),
            "A key the tenant never saw (or silent for `unknown_dormant_days` days) that makes calls. Its "
            "appearance is as surprising as how rarely the tenant sees a new key (new keys per request, recent "
            "history) times how rarely its keys appear at an hour this quiet: the share of the tenant's past "
            "appearances at hours at least as quiet in its own hour-of-day rhythm, "
            "shrunk toward the share of its activity there (worth `unknown_prior_appearances` appearances; never "
            "below that share), so a tenant whose new keys appear at night is not surprised by one more. Each "
            "later call adds how unlikely that many calls since it appeared are for a new key of the tenant (the "
            "tenant's per-key rate at this hour, a Gamma-Poisson tail): a burst of calls seconds apart, not a key "
            "used now and then. Raised from its `unknown_min_calls`-th call when the hour is quiet (that share at "
            "most `unknown_quiet_share`), the appearance alone reaches `unknown_appear_min` and both together "
            "`unknown_surprise`; an appearance that raised it is not learned as one of the tenant's."),
    ),
    columns=(
        Column("key", "n", 0, "requests seen (warm-up)"),
        Column("key", "first", 0, "first request time (warm-up)"),
        Column("key", "ip_new", 0, "new client IPs after the key's first request"),
        Column("key", "ua_new", 0, "new user agents after the key's first request"),
        Column("key", "r1", 0, "decayed request count, 1 minute"),
        Column("key", "r10", 0, "decayed request count, 10 minutes"),
        Column("key", "r60", 0, "decayed request count, 1 hour"),
        Column("key", "r_last", 0, "time of the request counts' last update"),
        *(Column("key", f"x{w}", 0, f"decayed count of the requests whose {name} count was reported as a burst "
                 "(explained: later requests are judged without them)") for w, name in ((1, "minute"),
                                                                                      (10, "10-minute"),
                                                                                      (60, "hour"))),
        Column("key", "base", 0, "decayed baseline request count, `rate_tau_slow_s` (unalarming requests)"),
        Column("key", "base_last", 0, "time of the baseline's last update"),
        Column("key", "since", 0, "start of the baseline's learning (the key's first successful request)"),
        Column("key", "last_ok", 0, "time of the key's latest successful request"),
        Column("key", "wake", 0, "time the key last appeared (first seen, or back from dormancy)"),
        Column("key", "wake_n", 0, "calls since the key last appeared"),
        Column("key", "app_s", 0, "surprise of the key's latest appearance (its tenant's new-key rate and hours)"),
        Column("key", "app_t", 0, "time of the key's latest appearance"),
        Column("key", "app_rate", 0, "requests per ms a new key of its tenant was expected to make then"),
        Column("key", "app_bin", 0, "the appearance's bin in its tenant's appearance hours, plus 1 (0: not there)"),
        Column("key", "tok_mean", 0, "mean of log tokens per request (exponentially weighted)"),
        Column("key", "tok_var", 0, "variance of log tokens per request (exponentially weighted)"),
        Column("key", "tok_n", 0, "requests with tokens learned"),
        Column("key", "tok_run", 0, "summed surprise of the current run of large requests"),
        Column("key", "out_mean", 0, "mean of log(output / input tokens) relative to the endpoint (weighted)"),
        Column("key", "out_var", 0, "variance of that (exponentially weighted)"),
        Column("key", "out_n", 0, "requests with output and input tokens learned"),
        Column("key", "out_run", 0, "summed surprise of the current run of outputs far longer than usual"),
        Column("key", "models", 0, "distinct models the key queried"),
        Column("key", "scopes", 0, "scopes the key took up after its first request"),
        Column("key", "srun_scope", -1, "scope of the key's current run on a scope it just took up (-1: none)"),
        Column("key", "srun_len", 0, "requests in that run"),
        Column("key", "srun_n0", 0, "the key's requests on the same scopes before that scope's first use"),
        Column("key", "srun_s", 0, "surprise of that scope's first use and its run so far"),
        Column("key", "srun_q", 0, "share of the key's tenant's keys using that scope (the run's prior)"),
        Column("key", "srun_last", 0, "the key's request count at its latest first use of a scope"),
        Column("key", "mnew", 0, "decayed count of models new to the key, 10 minutes"),
        Column("key", "mnew_last", 0, "time of that count's last update"),
        *(Column("key", f"gap{j}", 0, f"time of the key's {j + 1}th latest request (cluster test)")
          for j in range(GAP_DEPTH)),
        Column("key", "pend", 0, "the key's unalarming requests of its latest clock hour, held back from its "
                                 "baseline and rhythm until the hour is over"),
        Column("key", "pend_h", 0, "that clock hour (hours since the epoch)"),
        *(Column("key", f"hour{j}", 0, f"decayed count of the key's unalarming requests in hour {j} of the day "
                 "(its own rhythm)") for j in range(24)),
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
        Table("api_tenants", "tenant -> request, failure and new-key rates, hour-of-day rhythm, client novelty, the "
              "hours its keys appeared at",
              "keyed by tenant id: tenants are never evicted (a fixed number of floats per tenant)",
              factory=TenantRates),
    ),
)
