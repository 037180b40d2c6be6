"""api.behaviour_outlier: per key, tumbling event-time windows scored by one Loda model per tenant.

A key's window closes when the first event of a later window arrives for the key (arrival order;
a late event of an earlier window counts in the key's open window). The closed window's feature
vector is scored before it is learned, and learned only if it stays under the tenant's adaptive
threshold. The alert's event is the one that closed the window: the first moment the window is
known to be complete, so the result does not depend on batch ends, and an alert is never raised
about a window that may still grow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.alerting import Finding, iso
from detectors.columns import ApiColumns
from detectors.families.common import fmt
from detectors.models.multivariate import Loda
from detectors.registry import Column, Context, Detector, Family, NoveltySet, Table, option
from schemas.alerts import Feature

# the open window of each key (window index, -1: none) and its running sums: columns of the key arrays
WINDOW_SUMS = {"bw_win": -1.0, "bw_n": 0.0, "bw_fail": 0.0, "bw_err": 0.0, "bw_tok": 0.0, "bw_bytes": 0.0}
# the feature vector of a closed window, in this order
FEATURES = ("requests", "endpoints", "models", "scopes", "client_ips", "tokens", "bytes")
HIST_WIDTH, HIST_BINS = 0.05, 1200  # the tenant's histogram of learned window scores: bins of 0.05 up to 60
_B31 = np.int64(1 << 31)


@dataclass(frozen=True)
class BehaviourConfig:
    behaviour: bool = option(False, "turn api.behaviour_outlier on (off by default: it is the noisiest detector)")
    behaviour_window_s: int = option(600, "window length, epoch-aligned (windows do not depend on the stream's "
                                          "start)")
    behaviour_quantile: float = option(0.9999, "threshold: this quantile of the tenant's learned window scores")
    behaviour_floor: float = option(4.2, "the threshold is never below this score")
    behaviour_min_windows: int = option(2000, "scored-and-learned windows of a tenant before it may alert")
    behaviour_projections: int = option(100, "random projections of each tenant's Loda model")
    behaviour_warmup: int = option(256, "windows that fit the model's front end (learned, never scored)")


def stage(ctx: Context, c: ApiColumns) -> list[Finding]:
    """Close, score and learn every key window the batch completes; track the windows it leaves open."""
    cfg, s = ctx.config, ctx.tables
    s.key.fit(len(s.vocabs.key))
    k = s.key
    m = len(c.events)
    order = np.argsort(c.key, kind="stable")
    ks, ws = c.key[order], c.ts[order] // (cfg.behaviour_window_s * 1000)
    starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
    sizes = np.diff(np.r_[starts, m])
    ng = starts.size
    gid = np.repeat(np.arange(ng), sizes)
    keys = ks[starts]
    cur = k["bw_win"][keys].astype(np.int64)  # the key's open window, -1: none
    off = gid.astype(np.int64) << 32
    eff = np.maximum(np.maximum.accumulate(ws + off) - off, cur[gid])  # each event's window: running max
    prev = np.r_[np.int64(-1), eff[:-1]]
    prev[starts] = cur
    new_seg = eff != prev
    new_seg[starts] = True
    seg = np.cumsum(new_seg) - 1  # segment (key, window) of each event, in sorted order
    seg_start = np.flatnonzero(new_seg)
    nseg = seg_start.size
    seg_key = ks[seg_start]
    seg_win = eff[seg_start]
    seg_close = np.full(nseg, -1, dtype=np.int64)  # arrival index of the event that closed the segment
    last_of_group = np.r_[starts[1:], m] - 1
    not_last = np.ones(nseg, dtype=np.bool_)
    not_last[seg[last_of_group]] = False
    nxt = np.flatnonzero(not_last)
    seg_close[nxt] = order[seg_start[nxt + 1]]
    sums = np.stack([np.add.reduceat(x[order].astype(np.float64), seg_start)
                     for x in (np.ones(m), c.auth_fail, c.error, c.tokens, c.bytes)], axis=1)
    # the stored open windows: continued by the key's first segment, or closed by its first event
    has = cur >= 0
    cont = has & (eff[starts] == cur)
    closed_old = np.flatnonzero(has & ~cont)
    stored = np.stack([k[col][keys] for col in ("bw_n", "bw_fail", "bw_err", "bw_tok", "bw_bytes")], axis=1)
    sums[seg[starts[cont]]] += stored[cont]
    nw = nseg + closed_old.size  # windows: the segments, then the stored windows closed here
    wid_of_group = np.full(ng, -1, dtype=np.int64)
    wid_of_group[cont] = seg[starts[cont]]
    wid_of_group[closed_old] = nseg + np.arange(closed_old.size)
    w_key = np.r_[seg_key, keys[closed_old]]
    w_win = np.r_[seg_win, cur[closed_old]]
    w_close = np.r_[seg_close, order[starts[closed_old]]]
    w_sums = np.r_[sums, stored[closed_old]]
    # distinct endpoints, models, scopes (tokens tagged by kind) and client IPs of every window
    seen = s.seen
    empty = np.zeros(0, dtype=np.int64)
    old_tok, old_ip = seen.get("key_window", empty), seen.get("key_window_ip", empty)
    wseg = seg[np.argsort(order)]  # arrival index -> window id
    tok = np.concatenate([c.endpoint * 4, np.where(c.model >= 0, c.model * 4 + 1, -1),
                          np.where(c.scope >= 0, c.scope * 4 + 2, -1)])
    tok_w = np.tile(wseg, 3)
    ok = tok >= 0
    distinct = np.zeros((nw, 4), dtype=np.float64)
    new_sets = []
    for old, vals, wids, kinds in ((old_tok, tok[ok], tok_w[ok], True), (old_ip, c.ip, wseg, False)):
        a = old >> 31
        in_batch = np.isin(a, keys)
        g = np.searchsorted(keys, a[in_batch])
        ow = wid_of_group[g]
        live = ow >= 0  # entries of a key without an open window (none, unless restored inconsistently)
        codes = np.unique(np.r_[(wids << 31) | vals, (ow[live] << 31) | (old[in_batch][live] & (_B31 - 1))])
        cw = codes >> 31
        if kinds:
            distinct[:, :3] = np.bincount(cw * 4 + (codes & 3), minlength=nw * 4).reshape(nw, 4)[:, :3]
        else:
            distinct[:, 3] = np.bincount(cw, minlength=nw)
        open_w = np.zeros(nw, dtype=np.bool_)
        open_w[seg[last_of_group]] = True
        keep = codes[open_w[cw]]
        new_sets.append(np.sort(np.r_[old[~in_batch], (w_key[keep >> 31] << 31) | (keep & (_B31 - 1))]))
    seen["key_window"], seen["key_window_ip"] = new_sets
    # the open windows after this batch
    lw = seg[last_of_group]
    k["bw_win"][keys] = seg_win[lw]
    for j, col in enumerate(("bw_n", "bw_fail", "bw_err", "bw_tok", "bw_bytes")):
        k[col][keys] = sums[lw, j]
    # score the closed windows in the order of the events that closed them
    done = np.flatnonzero(w_close >= 0)
    done = done[np.argsort(w_close[done], kind="stable")]
    if done.size == 0:
        return []
    n = w_sums[done, 0]
    # auth failures and errors stay out of the vector: benign keys have them in every tenant, and the
    # per-IP failure burst detector owns them (they are still summed per window, for later use)
    X = np.column_stack([n, distinct[done, 0], distinct[done, 1], distinct[done, 2], distinct[done, 3],
                         w_sums[done, 3], w_sums[done, 4]])
    tenant = c.tenant[w_close[done]]
    out: list[Finding] = []
    for t in np.unique(tenant).tolist():
        rows = np.flatnonzero(tenant == t)
        model = s.behaviour.get(t)
        if model is None:
            model = s.behaviour[t] = Loda(n_projections=cfg.behaviour_projections, warmup=cfg.behaviour_warmup,
                                          seed=1 + t)
            s.behaviour_hist[t] = np.zeros(HIST_BINS)
        score, thr, flag = model.score_learn_gated(X[rows], s.behaviour_hist[t], HIST_WIDTH,
                                                   cfg.behaviour_quantile, cfg.behaviour_floor,
                                                   cfg.behaviour_min_windows, one_sided=True)
        for r in np.flatnonzero(flag).tolist():
            j = int(rows[r])
            out.append(_outlier_finding(ctx, c, model, X[j], int(w_close[done[j]]), int(w_win[done[j]]),
                                        float(score[r]), float(thr[r])))
    return out


def _outlier_finding(ctx: Context, c: ApiColumns, model: Loda, x: np.ndarray, i: int, win: int, score: float,
                     thr: float) -> Finding:
    """The finding of window ``win`` (features ``x``), raised on event ``i`` that closed it."""
    z, typical = model.explain(x)
    top = [f for f in np.argsort(-np.abs(z), kind="stable")[:3].tolist() if abs(z[f]) >= 1.0] or \
        [int(np.argmax(np.abs(z)))]
    feats = [Feature(name=FEATURES[f], value=round(float(x[f]), 3), baseline=round(float(typical[f]), 3),
                     contribution=round(float(z[f]), 2)) for f in top]
    feats.append(Feature(name="loda_score", value=round(score, 2), baseline=round(thr, 2)))
    e = c.events[i]
    w = ctx.config.behaviour_window_s * 1000
    parts = ", ".join(f"{FEATURES[f].replace('_', ' ')} {fmt(x[f])} (typical {fmt(typical[f])})" for f in top)
    return ctx.finding("api.behaviour_outlier", c, i, e.api_key_id, e.principal,
                       min(0.9, 0.55 + 0.05 * (score - thr)), feats,
                       f"API key {e.api_key_id} behaved unlike its tenant's keys in the window {iso(win * w)} to "
                       f"{iso((win + 1) * w)}: {parts}; outlier score {score:.1f} above the tenant's threshold "
                       f"{thr:.1f} (raised on the key's first later request, which closed the window).")


FAMILY = Family(
    name="behaviour",
    kind="api_usage",
    doc="A multivariate model of each key's behaviour in tumbling windows, one Loda model per tenant.",
    config=BehaviourConfig,
    stage=stage,
    switch="behaviour",
    detectors=(
        Detector(
            "api.behaviour_outlier", "API key's 10-minute behaviour is a multivariate outlier for its tenant",
            "api_key", ("atlas:AML.T0024", "atlas:AML.T0034", "owasp-llm:LLM10"),
            "Sums each key's requests in windows of `behaviour_window_s` (10 minutes): requests, distinct "
            "endpoints, models, scopes and client IPs, tokens and bytes. When a window closes (the key's "
            "first request of a later window), one Loda model per tenant scores it against the windows of "
            "all the tenant's keys, then learns it unless it is an outlier. After `behaviour_min_windows` "
            "windows of the tenant, a window scoring above the `behaviour_quantile` of the tenant's learned "
            "scores (and above `behaviour_floor`) is raised, naming the features furthest from typical.",
            default_on=False),
    ),
    columns=tuple(Column("key", name, fill, doc) for (name, fill), doc in zip(WINDOW_SUMS.items(), (
        "the key's open window (index since the epoch, -1: none)", "requests in the open window",
        "failed authentications in the open window", "errors in the open window", "tokens in the open window",
        "bytes in the open window"), strict=True)),
    novelty=(
        NoveltySet("key_window", ("key", None),
                   "endpoints, models and scopes (tokens tagged by kind) of each key's open window"),
        NoveltySet("key_window_ip", ("key", "ip"), "client IPs of each key's open window"),
    ),
    tables=(
        Table("behaviour", "tenant -> Loda model of its keys' windows", "never evicted: tenants are peer groups"),
        Table("behaviour_hist", "tenant -> histogram of learned window scores",
              "never evicted: tenants are peer groups"),
    ),
)
