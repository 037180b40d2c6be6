"""Data-access detectors: volume spikes and drift, segmentation, off-hours access, training writes, probing.

They share one feature stage over a batch's ``DataColumns``: each principal's warm-up and
rank in the batch, its department as a peer baseline, and the tenant's and principal's
hour-of-day profiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detectors.alerting import Finding
from detectors.columns import DataColumns
from detectors.families.common import DAY, HOUR, count_before, rank_in_batch
from detectors.kernels import cusum, decayed_count, log_zscore, pair
from detectors.registry import Column, Context, Detector, Family, NoveltySet, Table, option
from schemas.alerts import Feature

# log-volume baselines (kernels.log_zscore): learning rate, z above which an event is not learned, variance floor
PRINCIPAL_VOLUME = (0.02, 4.0, 0.25)
DEPT_VOLUME = (0.01, 4.0, 0.25)
DEPT_WARM_READS = 50  # reads before a department's baseline judges its cold principals
PAIR_VOLUME = (0.02, 2.0, 0.25)  # per (principal, dataset): frozen above 2 sigma, so a drip is not learned
PAIR_WARM_READS = 5
CUSUM_GATE = 4.0  # drift: the CUSUM stops learning the pair's baseline above this z


@dataclass(frozen=True)
class DataConfig:
    principal_warm_events: int = option(20, "accesses of a principal before it is judged against itself")
    principal_warm_hours: float = option(12.0, "hours since a principal was first seen before it is warm")
    volume_z: float = option(6.0, "log-volume z-score against the principal's baseline that makes a spike")
    volume_min_seen: int = option(5, "reads after which a principal's own baseline judges it (its department's "
                                     "before)")
    volume_peer_z: float = option(6.0, "log-volume z-score against the department that makes a spike for a "
                                       "cold principal")
    drift_k: float = option(0.75, "CUSUM allowance: z-scores below this do not add to the drift sum")
    drift_h: float = option(10.0, "CUSUM threshold of the drift sum")
    off_hours_share: float = option(0.4, "an hour is off for a principal below this share of its average hour")
    off_hours_tenant_share: float = option(0.5, "... and for its tenant below this share")
    off_hours_prior: float = option(24.0, "weight (in events) of the tenant's profile in the principal's")
    off_hours_min_events: int = option(3, "accesses of a principal before off-hours access is judged")
    off_hours_tenant_min_events: int = option(500, "accesses of a tenant before its hour profile is trusted")
    training_min_writes: int = option(3, "writes a dataset needs before a new writer is news")
    denied_tau_s: float = option(300.0, "time constant of the per-principal decayed count of denied accesses")
    denied_min: float = option(4.0, "denied accesses (decayed count) that make a probing burst")


def stage(ctx: Context, c: DataColumns) -> list[Finding]:
    """Every data_access detector over one batch (findings in any order; the engine sorts them)."""
    cfg, s, v = ctx.config, ctx.tables, ctx.tables.vocabs
    s.principal.fit(len(v.principal))
    s.dataset.fit(len(v.dataset))
    p = s.principal
    out: list[Finding] = []
    p_rank = rank_in_batch(c.principal)  # each event's count of earlier events of its principal in the batch
    p_before = count_before(p, c.principal, c.ts, p_rank)  # ... and before the batch too
    warm = ((p_before + 1 >= cfg.principal_warm_events)
            & (c.ts - p["first"][c.principal] >= cfg.principal_warm_hours * HOUR))

    # volume far above the principal's baseline (granted reads/exports only)
    g = np.flatnonzero(c.granted)
    if g.size:
        # a cold principal learns every event (z is 0 below `warm`), so its count before each
        # event is its count before the batch plus its earlier events in the batch
        cold = p["seen"][c.principal[g]] + rank_in_batch(c.principal[g]) < cfg.volume_min_seen
        z = log_zscore(c.principal[g], c.rows[g], p["mean"], p["var"], p["seen"], *PRINCIPAL_VOLUME,
                       cfg.volume_min_seen)
        # peer baseline: until a principal has its own, its department's judges it
        s.dept.fit(len(v.dept))
        dz = log_zscore(c.dept[g], c.rows[g], s.dept["mean"], s.dept["var"], s.dept["seen"], *DEPT_VOLUME,
                        DEPT_WARM_READS)
        peer = cold & (dz >= cfg.volume_peer_z)
        for j in np.flatnonzero((z >= cfg.volume_z) | peer):
            i = g[j]
            e = c.events[i]
            base = float(np.expm1(s.dept["mean"][c.dept[i]] if peer[j] else p["mean"][c.principal[i]]))
            out.append(ctx.finding("data.volume_spike", c, i, e.principal, e.principal, min(1.0, 0.4 + z[j] / 20),
                                   [Feature(name="rows", value=float(c.rows[i]), baseline=round(base, 1)),
                                    Feature(name="rows_log_z", value=round(float(dz[j] if peer[j] else z[j]), 2),
                                            baseline=0.0)],
                                   f"{e.principal} {e.operation} {int(c.rows[i]):,} rows of {e.dataset} "
                                   f"({e.sensitivity}), about {c.rows[i] / max(base, 1):.0f}x "
                                   + (f"what their department usually reads per access ({base:,.0f})."
                                      if peer[j] else f"their usual {base:,.0f} per access.")))
        # slow drift per (principal, dataset): CUSUM of the log-volume z-score, baseline frozen above 2 sigma
        pid = _pair_ids(ctx, c.principal[g], c.dataset[g])
        s.pair.fit(len(s.pairs))
        pz = log_zscore(pid, c.rows[g], s.pair["mean"], s.pair["var"], s.pair["seen"], *PAIR_VOLUME,
                        PAIR_WARM_READS)
        # a spike (z at the spike threshold) is the spike detector's business: it leaves the drift sum as it
        # is, so one bulk export does not hold the sum up for days of normal reads after it
        cs = cusum(pid, np.where(pz >= cfg.volume_z, cfg.drift_k, pz), s.pair["s"], cfg.drift_k, CUSUM_GATE)
        for j in np.flatnonzero(cs >= cfg.drift_h):
            i = g[j]
            e = c.events[i]
            out.append(ctx.finding("data.volume_drift", c, i, e.principal, e.principal, 0.7,
                                   [Feature(name="cusum", value=round(float(cs[j]), 2), baseline=0.0),
                                    Feature(name="rows", value=float(c.rows[i]),
                                            baseline=round(float(np.expm1(s.pair["mean"][pid[j]])), 1))],
                                   f"{e.principal}'s reads of {e.dataset} have kept growing above their baseline "
                                   f"(cumulative drift {cs[j]:.1f}); latest {int(c.rows[i]):,} rows."))

    # segmentation: sensitive data of another department, never touched by the principal or its department
    sens = (c.sensitivity >= 2) & c.granted & (c.dept != c.owner)
    new_pd = ctx.novel("principal_dataset", pair(c.principal, c.dataset))
    new_dd = ctx.novel("dept_dataset", pair(c.dept, c.dataset))
    hit = sens & new_pd & new_dd & ((c.sensitivity == 3) | warm)
    for i in np.flatnonzero(hit):
        e = c.events[i]
        score = 0.85 if c.sensitivity[i] == 3 else 0.6
        out.append(ctx.finding("data.segmentation", c, i, e.principal, e.principal, score,
                               [Feature(name="sensitivity", value=float(c.sensitivity[i])),
                                Feature(name="department_peers_accessed", value=0.0, baseline=1.0)],
                               f"{e.principal} ({e.principal_department}) {e.operation} {e.sensitivity} dataset "
                               f"{e.dataset} owned by {e.dataset_owner_department}, which nobody in "
                               f"{e.principal_department} had accessed before."))

    # off-hours access to sensitive data (hour-of-day profiles of the tenant and the principal)
    s.hours_tenant = _grown_hours(s.hours_tenant, len(v.tenant))
    s.hours_principal = _grown_hours(s.hours_principal, len(v.principal))
    # hour of day in UTC: each tenant's and principal's own histogram places their working hours,
    # whatever their time zone (hour-of-week would leave every bucket unseen for a week)
    hour = (c.ts // HOUR) % 24
    t_hist, p_hist = s.hours_tenant, s.hours_principal
    # histograms as of each event: the profile before the batch plus the batch's earlier events
    t_tot = t_hist[c.tenant].sum(axis=1) + rank_in_batch(c.tenant)
    p_tot = p_hist[c.principal].sum(axis=1) + p_rank
    t_share = (t_hist[c.tenant, hour] + rank_in_batch(pair(c.tenant, hour))) / np.maximum(t_tot, 1) * 24
    p_share = (p_hist[c.principal, hour] + rank_in_batch(pair(c.principal, hour))) / np.maximum(p_tot, 1) * 24
    tenants, t_inv = np.unique(c.tenant, return_inverse=True)  # one dict look-up per tenant, not per event
    for t in tenants.tolist():
        s.tenant_first.setdefault(t, int(c.ts[c.tenant == t][0]))
    t_first = np.array([s.tenant_first[t] for t in tenants.tolist()], dtype=np.int64)[t_inv]
    history = ((c.ts - t_first >= DAY) & (t_tot >= cfg.off_hours_tenant_min_events)
               & (p_before >= cfg.off_hours_min_events))
    # the principal's own share of this hour, starting from its peer group's (the tenant's) as a prior worth
    # `off_hours_prior` events: a thin profile is judged by the tenant, a rich one by itself (one stray event
    # at this hour does not make it a working hour). The tenant's own share only has to say the hour is not a
    # busy one: service accounts keep a tenant's nights half as busy as its days.
    m = cfg.off_hours_prior
    p_share = (p_share * p_tot / 24 + m * t_share / 24) / (p_tot + m) * 24
    off = history & (t_share < cfg.off_hours_tenant_share) & (p_share < cfg.off_hours_share)
    off_sens = off & (c.sensitivity >= 2) & c.granted
    night = decayed_count(c.principal, c.ts, off_sens.astype(np.float64), p["night"], p["night_last"],
                          float(HOUR))
    new_pip = ctx.novel("principal_ip", pair(c.principal, np.where(c.ip < 0, 0, c.ip))) & (c.ip >= 0)
    np.add.at(t_hist, (c.tenant, hour), 1.0)
    np.add.at(p_hist, (c.principal, hour), 1.0)
    # a burst of off-hours reads alone is how some people work; from a new IP it is not
    for i in np.flatnonzero(off_sens & new_pip):
        e = c.events[i]
        # the feature keeps its published name: alerts and stored rows carry it
        out.append(ctx.finding("data.off_hours", c, i, e.principal, e.principal, 0.8 if new_pip[i] else 0.65,
                               [Feature(name="hour_of_week_share", value=round(float(p_share[i]), 3), baseline=1.0),
                                Feature(name="off_hours_sensitive_per_hour", value=round(float(night[i]), 1)),
                                Feature(name="new_client_ip", value=float(new_pip[i]), baseline=0.0)],
                               f"{e.principal} {e.operation} {e.sensitivity} dataset {e.dataset} at an hour when "
                               f"they and their organisation are almost never active"
                               + (f", from a new IP {e.client_ip}." if new_pip[i] else ".")))

    # writes to datasets by a principal who never wrote there (training-data poisoning)
    ds_rows = s.dataset
    writes = c.granted & ((c.operation == 1) | (c.operation == 2) | (c.operation == 4))
    wi = np.flatnonzero(writes)
    if wi.size:
        new_writer = ctx.novel("dataset_writer", pair(c.dataset[wi], c.principal[wi]))
        for j, i in enumerate(wi):
            ds = c.dataset[i]
            e = c.events[i]
            training = ds_rows["training"][ds] > 0 or e.purpose == "model-training" or c.operation[i] == 4
            # training data (known as such from its writes' purpose) or a dataset fed by few writers
            # (a pipeline) gets a writer from outside its owning department
            fed = training and ds_rows["writers"][ds] <= 2 and ds_rows["writes"][ds] >= cfg.training_min_writes
            if new_writer[j] and fed and c.dept[i] != c.owner[i]:
                out.append(ctx.finding(
                    "data.training_write", c, i, e.principal, e.principal, 0.9 if training else 0.6,
                    [Feature(name="dataset_writers", value=float(ds_rows["writers"][ds]), baseline=None),
                     Feature(name="dataset_writes_seen", value=float(ds_rows["writes"][ds]))],
                    f"{e.principal} ({e.principal_department}) wrote to training dataset "
                    f"{e.dataset}, which only {int(ds_rows['writers'][ds])} other principal(s) had written in "
                    f"{int(ds_rows['writes'][ds])} writes."))
            ds_rows["writes"][ds] += 1
            if training and not (new_writer[j] and fed and c.dept[i] != c.owner[i]):
                ds_rows["training"][ds] = 1.0
            if new_writer[j]:
                ds_rows["writers"][ds] += 1

    # bursts of denied access (probing)
    denied = decayed_count(c.principal, c.ts, (~c.granted).astype(np.float64), p["denied"], p["denied_last"],
                           cfg.denied_tau_s * 1000)
    for i in np.flatnonzero(~c.granted & (denied >= cfg.denied_min)):
        e = c.events[i]
        out.append(ctx.finding("data.denied_burst", c, i, e.principal, e.principal, min(1.0, 0.5 + denied[i] / 40),
                               [Feature(name="denied_per_5min", value=round(float(denied[i]), 1), baseline=0.0)],
                               f"{e.principal} was denied access {denied[i]:.0f} times in about 5 minutes "
                               f"(latest: {e.dataset}, {e.sensitivity})."))
    return out


def _grown_hours(hist: np.ndarray, n: int) -> np.ndarray:
    """``hist`` (rows of 24 hour-of-day counts) with at least ``n`` rows."""
    if hist.shape[0] < n:
        grown = np.zeros((max(n, 2 * hist.shape[0], 16), 24))
        grown[: hist.shape[0]] = hist
        return grown
    return hist


def _pair_ids(ctx: Context, principals: np.ndarray, datasets: np.ndarray) -> np.ndarray:
    """Dense ids of (principal, dataset) pairs, new pairs numbered as they first appear."""
    keys = pair(principals, datasets)
    uniq, inv = np.unique(keys, return_inverse=True)
    ids = np.empty(uniq.size, dtype=np.int64)
    pairs = ctx.tables.pairs
    for j, kk in enumerate(uniq.tolist()):
        i = pairs.get(kk)
        if i is None:
            i = pairs[kk] = len(pairs)
        ids[j] = i
    return ids[inv]


FAMILY = Family(
    name="data",
    kind="data_access",
    doc="Per-principal rules over data access: volume against the principal's and its department's "
        "log-volume baselines, novelty of (principal, dataset) and (department, dataset), hour-of-day profiles.",
    config=DataConfig,
    stage=stage,
    detectors=(
        Detector(
            "data.volume_spike", "Data volume far above the principal's baseline", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "Learns each principal's typical rows per granted access as a mean and variance of log(rows), "
            "and not from accesses that already look anomalous. An access whose log-volume is `volume_z` "
            "standard deviations above the principal's own baseline is raised; until the principal has "
            "`volume_min_seen` reads, its department's baseline judges it (`volume_peer_z`)."),
        Detector(
            "data.volume_drift", "Data volume creeping up day after day", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "Per (principal, dataset), sums how far each read's log-volume lies above its baseline (a CUSUM "
            "with allowance `drift_k`); the baseline stops learning above 2 standard deviations, so a slow "
            "drip is not learned as the new normal. The sum reaching `drift_h` is raised. A single spike is "
            "left to data.volume_spike and does not feed the sum.",
            cooldown_s=86_400),
        Detector(
            "data.segmentation", "Sensitive data of another department accessed", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "A granted access to a confidential or restricted dataset owned by another department, which "
            "neither this principal nor anyone in its department accessed before. Restricted data is raised "
            "at once; confidential data only once the principal is warm (`principal_warm_events` accesses "
            "over `principal_warm_hours`)."),
        Detector(
            "data.off_hours", "Sensitive data accessed off hours", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "Keeps hour-of-day (UTC) histograms of each tenant and principal. An hour is off for a principal "
            "when its share of the principal's activity (starting from the tenant's, worth `off_hours_prior` "
            "events) is below `off_hours_share` and the tenant's own share is below `off_hours_tenant_share`. "
            "A granted sensitive access in an off hour from a client IP the principal never used is raised; "
            "off-hours work from the usual place is not."),
        Detector(
            "data.training_write", "Training data written by an unusual principal", "principal",
            ("atlas:AML.T0020", "owasp-llm:LLM04"),
            "Training data (marked by its writes' purpose or a train operation) fed by at most two writers "
            "over at least `training_min_writes` writes is a pipeline. A write to it by a principal who never "
            "wrote there, from outside the dataset's owning department, is raised: a likely poisoning attempt."),
        Detector(
            "data.denied_burst", "Burst of denied data access (probing)", "principal",
            ("atlas:AML.T0007", "owasp-llm:LLM02"),
            "Counts each principal's denied accesses with exponential decay (time constant `denied_tau_s`). "
            "A denied access that brings the count to `denied_min` is raised: someone probing for data they "
            "are not allowed to read."),
    ),
    columns=(
        Column("principal", "n", 0, "accesses seen (warm-up)"),
        Column("principal", "first", 0, "first access time (warm-up)"),
        Column("principal", "mean", 0, "mean log(rows) of granted accesses"),
        Column("principal", "var", 0.25, "variance of log(rows)"),
        Column("principal", "seen", 0, "accesses learned into the volume baseline"),
        Column("principal", "denied", 0, "decayed count of denied accesses, `denied_tau_s`"),
        Column("principal", "denied_last", 0, "time of the denied count's last update"),
        Column("principal", "night", 0, "decayed count of off-hours sensitive accesses (an hour)"),
        Column("principal", "night_last", 0, "time of the off-hours count's last update"),
        Column("dataset", "writes", 0, "granted writes seen"),
        Column("dataset", "writers", 0, "distinct principals who wrote"),
        Column("dataset", "training", 0, "1: known as training data"),
        Column("dept", "mean", 0, "the department's mean log(rows)"),
        Column("dept", "var", 0.25, "the department's variance of log(rows)"),
        Column("dept", "seen", 0, "accesses learned into the department's baseline"),
        Column("pair", "mean", 0, "mean log(rows) of the (principal, dataset) pair"),
        Column("pair", "var", 0.25, "the pair's variance of log(rows)"),
        Column("pair", "seen", 0, "reads learned into the pair's baseline"),
        Column("pair", "s", 0, "the pair's CUSUM drift sum"),
    ),
    novelty=(
        NoveltySet("principal_dataset", ("principal", "dataset"), "datasets each principal accessed"),
        NoveltySet("dept_dataset", (None, "dataset"), "datasets each department accessed"),
        NoveltySet("dataset_writer", ("dataset", "principal"), "principals who wrote each dataset"),
        NoveltySet("principal_ip", ("principal", "ip"), "client IPs each principal accessed data from"),
    ),
    tables=(
        Table("pairs", "(principal, dataset) -> dense pair id (rows of the 'pair' arrays)",
              "remapped; pairs with an evicted half dropped (compaction._compact_pairs)"),
        Table("tenant_first", "tenant -> first event time", "never evicted: tenants are peer groups"),
        Table("hours_tenant", "per-tenant hour-of-day histograms (UTC)", "never evicted: tenants are peer groups"),
        Table("hours_principal", "per-principal hour-of-day histograms (UTC)", "rows taken with their principal ids"),
    ),
)
