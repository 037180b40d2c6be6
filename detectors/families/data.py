"""Data-access detectors: volume spikes and drift, segmentation, off-hours access, training writes, probing.

They share one feature stage over a batch's ``DataColumns``: each principal's warm-up and
rank in the batch, its department as a peer baseline, and the tenant's and principal's
hour-of-day profiles.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import zlib
from dataclasses import dataclass

import numpy as np

from detectors.alerting import Finding
from detectors.calibration import (
    normal_surprise,
    one_in,
    poisson_surprise_many,
    rate_surprise,
    rate_surprise_many,
    score_of,
)
from detectors.columns import SEP, DataColumns, Vocab
from detectors.families.common import DAY, HOUR, MIN, count_before, earlier_flagged, rank_in_batch
from detectors.kernels import (
    block_log_zscore,
    cusum,
    daily_peak_zscore,
    decayed_count,
    hour_rhythm_sensitive,
    log_zscore,
    log_zscore_excess,
    pair,
    rising_day_totals,
)
from detectors.registry import Column, Context, Detector, Family, NoveltySet, Table, option
from detectors.state import Arrays
from schemas.alerts import Feature

# log-volume baselines (kernels.log_zscore): learning rate, z above which an event is not learned, variance floor
PRINCIPAL_VOLUME = (0.02, 4.0, 0.25)
DEPT_VOLUME = (0.01, 4.0, 0.25)
DEPT_WARM_READS = 50  # reads before a department's baseline judges its cold principals
NEWCOMER_VOLUME = (0.05, 4.0, 0.25)  # a department's (or tenant's) baseline of its principals' first reads
NEWCOMER_WARM_READS = 10  # newcomers' reads before that baseline judges (about three principals' first reads)
PAIR_VOLUME = (0.02, 2.0, 0.25)  # per (principal, dataset): frozen above 2 sigma, so a drip is not learned
PAIR_WARM_READS = 5
CUSUM_GATE = 4.0  # drift: the CUSUM stops learning the pair's baseline above this z
VOLUME_BLOCKS = 6  # time-of-day blocks (4 hours of UTC each) of a principal's volume baselines
OFF_HOURS_DISPERSION = 5.0  # gamma-Poisson shape of a principal's counts per hour (kernels.hour_rhythm_sensitive)
NOVELTY_PRIOR = 20.0  # weight (in observations) of the tenant's novelty rate in an entity's own
TENANT_CROSS_KEY = 1 << 30  # data_crossings rows of a tenant (tenant id + this, owner department): above every dept id
TENANT_IP_NEW, TENANT_IP_SEEN, TENANT_DENIED, TENANT_ACCESSES, TENANT_PD_NEW, TENANT_NET_NEW = range(6)
TENANT_TRAIN_IN = 6  # the tenant's principals' first writes to another department's training datasets
TENANT_COLS = 8
TENANT_SENSITIVE = 7  # the tenant's accesses to confidential or restricted data


@dataclass(frozen=True)
class DataConfig:
    principal_warm_events: int = option(20, "accesses of a principal before it is judged against itself")
    principal_warm_hours: float = option(12.0, "hours since a principal was first seen before it is warm")
    volume_surprise: float = option(9.0, "surprise (-log10 tail of the log-volume under the principal's own "
                                         "distribution; 9 is about 6 standard deviations) that makes a spike")
    volume_min_seen: int = option(3, "reads after which a principal's own baseline (and each time-of-day block's) "
                                     "judges it (its department's before)")
    volume_peer_z: float = option(6.0, "log-volume z-score against the department that makes a spike for a "
                                       "cold principal")
    volume_newcomer_z: float = option(4.0, "log-volume z-score against what the department's principals read when "
                                           "they start (their first `volume_min_seen` reads; the tenant's while the "
                                           "department has fewer than ten) that a cold principal's read must also "
                                           "reach: a newcomer reading like its department's heavier readers is not "
                                           "a spike")
    drift_k: float = option(0.75, "CUSUM allowance: z-scores below this do not add to the drift sum")
    drift_h: float = option(6.0, "CUSUM threshold of the drift sum")
    drift_surprise: float = option(5.0, "surprise of the drift sum (its tail per read while reads keep to their "
                                        "baseline, exp(-2 x drift_k x sum)) that is raised: 1 in 100,000 reads, the "
                                        "rate per event of a false-alarm budget of 1 per 100k")
    off_hours_surprise: float = option(4.0, "surprise (this hour's activity against the principal's own rhythm, "
                                            "plus a new IP's against its own IP-novelty rate) that is raised")
    off_hours_hour_surprise: float = option(1.3, "least surprise of the hour's activity alone (about 1 in 20) for "
                                                 "off-hours access to be raised, whatever a new IP adds")
    off_hours_share: float = option(1.0, "an hour is quiet for a principal below this share of its average hour "
                                         "(its tenant's profile as the prior); only quiet hours are off hours")
    off_hours_tenant_share: float = option(1.0, "an hour is quiet for a tenant below this share of its average hour "
                                                "of principals at work: off hours are quiet hours of the principal "
                                                "in a quiet hour of its tenant (not a shift change in a tenant at "
                                                "work around the clock)")
    off_hours_prior: float = option(24.0, "weight (in events) of the tenant's hour profile in the principal's")
    off_hours_tau_min: float = option(30.0, "time constant (minutes) of the recent-activity count judged per hour")
    off_hours_short_min: float = option(5.0, "time constant (minutes) of the second, short recent-activity count: "
                                             "a burst of reads within minutes is judged on the minutes")
    off_hours_min_events: int = option(1, "accesses of a principal before off-hours access is judged")
    off_hours_learn_surprise: float = option(2.5, "surprise of a judged access (its hour's activity plus a new "
                                                  "IP's) from which it is held back from the principal's rhythm "
                                                  "until its episode ends (learned then unless the episode reached "
                                                  "`off_hours_surprise`): the first reads of an unusual night do "
                                                  "not make that hour look usual before the night is judged")
    segmentation_surprise: float = option(3.0, "surprise of a first access to another department's sensitive "
                                               "dataset (the principal's own dataset-novelty rate and the share "
                                               "of its department that uses the dataset) that is raised")
    training_min_writes: int = option(3, "writes a dataset needs before a new writer is news")
    training_peer_surprise: float = option(3.0, "surprise of a new writer's department writing another "
                                                "department's training data (its share of such writes among its "
                                                "accesses, shrunk to its tenant's) that is raised, however few "
                                                "writes the dataset has seen")
    denied_tau_s: float = option(600.0, "time constant of the per-principal decayed counts of denied and all "
                                        "accesses")
    volume_peak_z: float = option(3.0, "a read within this many standard deviations of the principal's usual daily "
                                       "peak (its largest read per UTC day) is not a spike, nor (when it is 4 "
                                       "standard deviations above its overall baseline) drift: a nightly batch")
    volume_peak_days: int = option(1, "days of daily peaks a principal needs before they can clear a read")
    denied_surprise: float = option(3.5, "surprise of the recent denied count against the principal's own "
                                         "denied rate (shrunk to its tenant's) that makes a probing burst")


def stage(ctx: Context, c: DataColumns) -> list[Finding]:
    """Every data_access detector over one batch (findings in any order; the engine sorts them)."""
    cfg, s, v = ctx.config, ctx.tables, ctx.tables.vocabs
    s.principal.fit(len(v.principal))
    s.dataset.fit(len(v.dataset))
    s.dept.fit(len(v.dept))
    p = s.principal
    p_rank = rank_in_batch(c.principal)  # each event's count of earlier events of its principal in the batch
    p_before = count_before(p, c.principal, c.ts, p_rank)  # ... and before the batch too
    warm = ((p_before + 1 >= cfg.principal_warm_events)
            & (c.ts - p["first"][c.principal] >= cfg.principal_warm_hours * HOUR))
    tenant = _TenantCounts(ctx, c)
    known = _granted_before(ctx, c)  # before _volume adds the batch's granted pairs
    out = _volume(ctx, c)
    out += _segmentation(ctx, c, p_before, warm, tenant)
    out += _off_hours(ctx, c, p_before, tenant)
    out += _training(ctx, c, tenant)
    out += _denied(ctx, c, p_before, tenant, known)
    tenant.commit()
    return out


class _TenantCounts:
    """Per-tenant counts (new IPs, accesses with an IP, denials of data never granted, accesses, first (principal,
    dataset) accesses, networks new to the tenant) as of each event of the batch: the peer priors of the principals'
    own rates."""

    def __init__(self, ctx: Context, c: DataColumns) -> None:
        self.table: dict[int, list[float]] = ctx.tables.family["data_tenant_counts"]
        self.c = c
        self.tenants, inv = np.unique(c.tenant, return_inverse=True)
        rows = [self.table.setdefault(t, [0.0] * TENANT_COLS) for t in self.tenants.tolist()]
        for row in rows:  # a row of an older checkpoint: the counts it did not keep start at zero
            row.extend([0.0] * (TENANT_COLS - len(row)))
        self.base = np.array(rows, dtype=np.float64).reshape(-1, TENANT_COLS)[inv]
        self.added = np.zeros((c.ts.size, TENANT_COLS))

    def as_of(self, col: int, flag: np.ndarray) -> np.ndarray:
        """The tenant's count ``col`` before each event, ``flag`` marking the batch's events that add to it."""
        self.added[:, col] = flag
        return self.base[:, col] + earlier_flagged(self.c.tenant, flag)

    def commit(self) -> None:
        for t in self.tenants.tolist():
            row = self.table.setdefault(t, [0.0] * TENANT_COLS)
            mine = self.c.tenant == t
            for col in range(TENANT_COLS):
                row[col] += float(self.added[mine, col].sum())


def _volume(ctx: Context, c: DataColumns) -> list[Finding]:
    """data.volume_spike and data.volume_drift over the batch's granted accesses."""
    cfg, s = ctx.config, ctx.tables
    p = s.principal
    out: list[Finding] = []
    g = np.flatnonzero(c.granted)
    if not g.size:
        return out
    prin = c.principal[g]
    # a cold principal learns every event (z is 0 below `warm`), so its count before each
    # event is its count before the batch plus its earlier events in the batch
    cold = p["seen"][prin] + rank_in_batch(prin) < cfg.volume_min_seen
    z_all = log_zscore(prin, c.rows[g], p["mean"], p["var"], p["seen"], *PRINCIPAL_VOLUME, cfg.volume_min_seen)
    # bimodal-aware: the principal's baselines per time-of-day block; a volume normal for this time of day
    # (a service account's nightly batch) is not a spike however far it is from the principal's overall one,
    # and a batch volume at midday is one however often it is seen at night
    block = ((c.ts[g] // HOUR) % 24) // (24 // VOLUME_BLOCKS)
    z_blk = _block_zscore(p, prin, block, c.rows[g], cfg.volume_min_seen)
    z = np.where(np.isfinite(z_blk), z_blk, z_all)  # this time of day's own baseline where it has one
    # peer baseline: until a principal has its own, its department's judges it
    dz = log_zscore(c.dept[g], c.rows[g], s.dept["mean"], s.dept["var"], s.dept["seen"], *DEPT_VOLUME,
                    DEPT_WARM_READS)
    # ... and what its principals read when they start (their first `volume_min_seen` reads, each principal alike
    # however busy): a department's read baseline is its busiest members' habit, and a newcomer reading like its
    # heavier readers is not a spike (no newcomer baseline yet: the department's alone judges)
    nz = _newcomer_zscore(ctx, c.dept[g], c.tenant[g], c.rows[g], cold)
    peer = cold & (dz >= cfg.volume_peer_z) & ~(nz < cfg.volume_newcomer_z)
    # the principal's daily peaks: a volume it reaches every day (a service account's nightly batch) is its habit,
    # however far above its ordinary reads; the tenant's learning period teaches them as they are
    tenants, t_inv = np.unique(c.tenant[g], return_inverse=True)
    t_start = np.array([s.tenant_start.get(t, 0) for t in tenants.tolist()], dtype=np.int64)[t_inv]
    learning = c.ts[g] - t_start < cfg.learning_hours * HOUR
    zp = daily_peak_zscore(prin, (c.ts[g] // DAY).astype(np.float64), c.rows[g], learning, p["pk_day"], p["pk_max"],
                           p["pk_mean"], p["pk_var"], p["pk_seen"], PEAK_ALPHA, PRINCIPAL_VOLUME[2],
                           cfg.volume_peak_days, cfg.volume_peak_z)
    usual_peak = zp < cfg.volume_peak_z
    for j in np.flatnonzero(((z >= HIGH_MODE_Z) & ~usual_peak) | peer):
        zj = float(min(dz[j], nz[j]) if peer[j] and np.isfinite(nz[j]) else dz[j] if peer[j] else z[j])
        surprise = normal_surprise(zj)
        if surprise < cfg.volume_surprise and not peer[j]:
            continue
        i = g[j]
        e = c.events[i]
        by_block = bool(np.isfinite(z_blk[j])) and not peer[j]
        base = float(np.expm1(s.dept["mean"][c.dept[i]] if peer[j] else
                              p[f"vb_mean{block[j]}"][c.principal[i]] if by_block else p["mean"][c.principal[i]]))
        whose = (f"what their department usually reads per access ({base:,.0f})" if peer[j]
                 else f"their usual {base:,.0f} per access" + (" at this time of day" if by_block else ""))
        if peer[j] and np.isfinite(nz[j]):
            whose += f" and {nz[j]:.1f} standard deviations above what its principals read when they start"
        f = _finding(ctx, "data.volume_spike", c, i, surprise, int(c.sensitivity[i]),
                     [Feature(name="rows", value=float(c.rows[i]), baseline=round(base, 1)),
                      Feature(name="rows_log_z", value=round(zj, 2), baseline=0.0)],
                     f"{e.principal} {did(e.operation)} {int(c.rows[i]):,} rows of {e.dataset} ({e.sensitivity}), "
                     f"about {c.rows[i] / max(base, 1):.0f}x {whose}: about {one_in(surprise)} for them.")
        if learning[j] and not np.isfinite(zp[j]):
            # the learning period's spikes of a principal with no day of peaks yet (its first nightly batch) are
            # info anyway; capped, they do not teach the alert budget a first-night habit as the detector's noise
            f.cap = "info"
        out.append(f)
    # slow drift per (principal, dataset): CUSUM of the log-volume z-score, baseline frozen above 2 sigma
    pid = _pair_ids(ctx, prin, c.dataset[g])
    s.pair.fit(len(s.pairs))
    pz, excess = log_zscore_excess(pid, c.rows[g], s.pair["mean"], s.pair["var"], s.pair["seen"], *PAIR_VOLUME,
                                   PAIR_WARM_READS)
    # what is usual for the principal at this time of day (within USUAL_Z of its block's baseline) does not
    # drift (a nightly batch of a dataset read lightly by day); a spike (z at the spike threshold) is the spike
    # detector's business: it leaves the drift sum as it is, so one bulk export does not hold the sum up for days
    # of normal reads after it
    dzz = np.where(z_blk < USUAL_Z, np.minimum(pz, z_blk), pz)
    # a read of the principal's high mode (far above its ordinary reads or this pair's, within its daily peaks: a
    # nightly batch, also on a dataset it reads lightly by day) adds nothing either; a drip's reads, a few times
    # the ordinary, still do
    high_mode = (z_all >= HIGH_MODE_Z) | (pz >= HIGH_MODE_Z)
    # ... also when the pair's baseline spans both modes (its first nights' batch reads learned into it, so a batch
    # read is only 3 of its wide standard deviations up): a read at the level of the principal's usual daily peak
    # (within `volume_peak_z` of it either way) and far above the pair's mean in log units (HIGH_MODE_Z standard
    # deviations of a tight baseline, the variance floor) is the high mode however wide the pair's spread
    high_mode |= (zp >= -cfg.volume_peak_z) & (excess >= HIGH_MODE_Z * np.sqrt(PAIR_VOLUME[2]))
    # only a read at or below the usual peak (within DRIFT_PEAK_Z of it) is that habit: a person's daily peak is the
    # largest of a day's ordinary reads, and a drip's later reads lie above it
    dzz = np.where((zp < DRIFT_PEAK_Z) & high_mode, np.minimum(dzz, cfg.drift_k), dzz)
    # the tenant's learning period learns baselines and judges nothing: its reads (a service account's first nightly
    # batches, far from a baseline only just started) do not build a sum that the first judged day inherits
    # a read below the pair's baseline counts as at it (DRIFT_FLOOR): the sum falls by the allowance, so the pair's
    # ordinary reads between a drip's do not wipe out its evidence; the sum's tail is that of the floored steps
    cs = cusum(pid, np.maximum(np.where((z >= VOLUME_SPIKE_Z) | learning, cfg.drift_k, dzz), DRIFT_FLOOR),
               s.pair["s"], cfg.drift_k, CUSUM_GATE)
    # the pair's day totals: today's so far above each of the last three days', each above the one before (the
    # reads of the tenant's learning period count as they are); under no trend that order is 1 in 4! = 24
    rises, today, last = rising_day_totals(pid, (c.ts[g] // DAY).astype(np.float64), c.rows[g],
                                           s.pair["dt_day"], s.pair["dt_tot"], s.pair["dt_l1"], s.pair["dt_l2"],
                                           s.pair["dt_l3"], s.pair["dt_l4"])
    rising = rises >= RISING_DAYS
    for j in np.flatnonzero((cs >= cfg.drift_h) | rising):
        orders = math.factorial(int(rises[j]) + 1)
        surprise = (cusum_surprise(float(cs[j]), cfg.drift_k, DRIFT_FLOOR, CUSUM_GATE)
                    + (math.log10(orders) if rising[j] else 0.0))
        if surprise < cfg.drift_surprise:
            continue
        i = g[j]
        e = c.events[i]
        base = float(np.expm1(s.pair["mean"][pid[j]]))
        days = (f"; their daily total has risen day after day for {rises[j] + 1} days (last day {last[j]:,.0f} rows, "
                f"today so far {today[j]:,.0f}), about 1 in {orders} without a trend" if rising[j] else "")
        out.append(_finding(ctx, "data.volume_drift", c, i, surprise, int(c.sensitivity[i]),
                            [Feature(name="cusum", value=round(float(cs[j]), 2), baseline=0.0),
                             Feature(name="rows", value=float(c.rows[i]), baseline=round(base, 1))],
                            f"{e.principal}'s reads of {e.dataset} have kept growing above their baseline of "
                            f"{base:,.0f} rows per read (cumulative drift {cs[j]:.1f} standard deviations above "
                            f"an allowance of {cfg.drift_k} per read){days}; latest {int(c.rows[i]):,} rows."))
    return out


HIGH_MODE_Z = 4.0  # log-volume z above the principal's baseline from which a read is a spike candidate, or (within
# its daily peaks) a read of its high mode that adds nothing to drift; a drip's reads a few times the usual stay below
PEAK_ALPHA = 0.1  # learning rate of a principal's daily-peak baseline (about ten days of memory)
VOLUME_SPIKE_Z = 6.0  # z at which a read is the spike detector's and leaves the drift sum as it is
RISING_DAYS = 3  # rises running of a pair's day totals (four days in order, 1 in 4! = 24) whose tail adds to drift
USUAL_Z = 1.0  # a read within this many standard deviations of its time-of-day block's baseline is usual there
DRIFT_PEAK_Z = 1.0  # drift: a high-mode read counts as the principal's daily-peak habit up to this z above the peak
DRIFT_FLOOR = 0.0  # drift: a read's z-score below this counts as this in the sum


def cusum_surprise(s: float, k: float, floor: float = -math.inf, cap: float = math.inf) -> float:
    """-log10 of how often a CUSUM of standard-normal z-scores with allowance ``k`` (each z held to
    ``[floor, cap]``) stands at ``s`` or above while the reads keep to their baseline: the sum's stationary tail is
    exponential, ``exp(-theta s)``, with ``theta`` the step's adjustment coefficient (``cusum_theta``; ``2 k``
    for unclipped steps, Siegmund), so each read is one test and the surprise grows with the sum, and the
    false-alarm budget can rank drifts by it.

    Examples:
        >>> round(cusum_surprise(6.0, 0.75), 2)
        3.91
        >>> cusum_surprise(9.0, 0.75) > cusum_surprise(6.0, 0.75)
        True
        >>> cusum_surprise(6.0, 0.75, 0.0) < cusum_surprise(6.0, 0.75)
        True
    """
    return max(0.0, cusum_theta(k, floor, cap) * s / math.log(10.0))


@functools.lru_cache(maxsize=64)
def cusum_theta(k: float, floor: float = -math.inf, cap: float = math.inf) -> float:
    """The positive root ``theta`` of ``E[exp(theta (clip(Z, floor, cap) - k))] = 1`` for a standard normal ``Z``:
    the rate of the exponential tail of a CUSUM with those steps (Cramer-Lundberg). Clipping the steps from below
    (a read under its baseline counts as at it) makes large sums commoner (a smaller ``theta``) and from above
    rarer; the root is found by bisection on the closed form of the clipped normal's moment generating function.

    Examples:
        >>> round(cusum_theta(0.75), 6)
        1.5
        >>> round(cusum_theta(0.75, 0.0), 3)
        1.339
    """
    def mgf_minus_one(t: float) -> float:
        lo = _phi(floor) * math.exp(t * floor) if floor > -math.inf else 0.0
        hi = (1.0 - _phi(cap)) * math.exp(t * cap) if cap < math.inf else 0.0
        mid = math.exp(t * t / 2.0) * (_phi(cap - t) - _phi(floor - t))
        return math.exp(-k * t) * (lo + mid + hi) - 1.0

    a, b = 1e-9, 2.0 * k + 1.0  # negative just above 0 (the step's mean is below 0), positive at the far end
    while mgf_minus_one(b) < 0.0:
        b *= 2.0
    for _ in range(100):
        m = 0.5 * (a + b)
        a, b = (m, b) if mgf_minus_one(m) < 0.0 else (a, m)
    return 0.5 * (a + b)


def _phi(x: float) -> float:
    """The standard normal distribution function."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _newcomer_zscore(ctx: Context, dept: np.ndarray, tenant: np.ndarray, rows: np.ndarray,
                     cold: np.ndarray) -> np.ndarray:
    """Log-volume z-score of each cold read (``cold``) against its department's newcomer baseline: the log(rows) of
    its principals' first reads, every principal's alike (the tenant's newcomers' while the department has fewer
    than NEWCOMER_WARM_READS); nan for a warm principal's read or where neither baseline is warm yet."""
    s = ctx.tables
    z = np.full(rows.size, np.nan)
    j = np.flatnonzero(cold)
    if not j.size:
        return z
    d = dept[j]
    # below its warm count a baseline learns every read, so its count as of each read is its count before the batch
    # plus the batch's earlier reads of the same key
    d_warm = s.dept["nc_seen"][d] + rank_in_batch(d) >= NEWCOMER_WARM_READS
    zd = log_zscore(d, rows[j], s.dept["nc_mean"], s.dept["nc_var"], s.dept["nc_seen"], *NEWCOMER_VOLUME,
                    NEWCOMER_WARM_READS)
    table: dict[int, list[float]] = s.family["data_newcomers"]
    ut, inv = np.unique(tenant[j], return_inverse=True)
    stats = np.array([table.get(t, [0.0, PRINCIPAL_VOLUME[2], 0.0]) for t in ut.tolist()], dtype=np.float64)
    mean, var, seen = (np.ascontiguousarray(stats[:, k]) for k in range(3))
    t_warm = seen[inv] + rank_in_batch(inv) >= NEWCOMER_WARM_READS
    zt = log_zscore(inv, rows[j], mean, var, seen, *NEWCOMER_VOLUME, NEWCOMER_WARM_READS)
    for k, t in enumerate(ut.tolist()):
        table[t] = [float(mean[k]), float(var[k]), float(seen[k])]
    z[j] = np.where(d_warm, zd, np.where(t_warm, zt, np.nan))
    return z


def _block_zscore(p: Arrays, prin: np.ndarray, block: np.ndarray, rows: np.ndarray, warm: int) -> np.ndarray:
    """``kernels.block_log_zscore`` over the principal columns ``vb_{mean,var,seen}{b}`` (gathered for the batch's
    principals, written back after)."""
    uniq, local = np.unique(prin, return_inverse=True)
    stats = [np.stack([p[f"vb_{what}{b}"][uniq] for b in range(VOLUME_BLOCKS)], axis=1)
             for what in ("mean", "var", "seen")]
    z = block_log_zscore(local, block, rows, *stats, *PRINCIPAL_VOLUME, warm)
    for what, m in zip(("mean", "var", "seen"), stats, strict=True):
        for b in range(VOLUME_BLOCKS):
            p[f"vb_{what}{b}"][uniq] = m[:, b]
    return z


def _segmentation(ctx: Context, c: DataColumns, p_before: np.ndarray, warm: np.ndarray,
                  tenant: _TenantCounts) -> list[Finding]:
    """data.segmentation: another department's sensitive data, judged by how new such a step is for the principal
    (its own rate of first accesses, shrunk to its tenant's) and how often its department crosses to that owner."""
    cfg, s = ctx.config, ctx.tables
    p = s.principal
    new_pd = ctx.novel("principal_dataset", pair(c.principal, c.dataset))
    new_dd = ctx.novel("dept_dataset", pair(c.dept, c.dataset))
    own_new = p["pd_new"][c.principal] + earlier_flagged(c.principal, new_pd)
    t_new = tenant.as_of(TENANT_PD_NEW, new_pd.astype(np.float64))
    t_all = tenant.as_of(TENANT_ACCESSES, np.ones(c.ts.size))
    np.add.at(p["pd_new"], c.principal, new_pd.astype(np.float64))
    # how often the department crosses to the owner's sensitive data: its accesses to them among all its accesses
    sens = (c.sensitivity >= 2) & c.granted
    cross_key = pair(c.dept, c.owner)
    crossings: dict[int, float] = s.family["data_crossings"]
    uk, inv = np.unique(cross_key, return_inverse=True)
    crossed = np.array([crossings.get(k, 0.0) for k in uk.tolist()])[inv] + earlier_flagged(cross_key, sens)
    dept_all = s.dept["accesses"][c.dept] + rank_in_batch(c.dept)
    # the peer prior of a department's crossing rate: how often the tenant's other departments cross to this
    # owner's sensitive data (per tenant access), so a department young or small in accesses is not judged on a
    # handful of them alone, and an owner whose data everyone reads is not news
    t_key = pair(c.tenant.astype(np.int64) + TENANT_CROSS_KEY, c.owner)
    t_flag = sens & (c.dept != c.owner)
    ut, t_inv = np.unique(t_key, return_inverse=True)
    t_crossed = np.array([crossings.get(k, 0.0) for k in ut.tolist()])[t_inv] + earlier_flagged(t_key, t_flag)
    for k, n in zip(*np.unique(np.r_[cross_key[sens], t_key[t_flag]], return_counts=True), strict=True):
        crossings[int(k)] = crossings.get(int(k), 0.0) + float(n)
    np.add.at(s.dept["accesses"], c.dept, 1.0)
    # the principal's own share of crossings (to any other department's sensitive data) among its accesses, shrunk
    # to its department's: a person whose department's crossings are someone else's (a batch account's) is not
    # covered by them, and one who crosses often is judged by that
    own_x = p["cross_n"][c.principal] + earlier_flagged(c.principal, t_flag)
    dept_x = s.dept["cross_out"][c.dept] + earlier_flagged(c.dept, t_flag)
    np.add.at(p["cross_n"], c.principal, t_flag.astype(np.float64))
    np.add.at(s.dept["cross_out"], c.dept, t_flag.astype(np.float64))
    out: list[Finding] = []
    for i in np.flatnonzero(sens & (c.dept != c.owner) & new_pd).tolist():
        prior = t_new[i] / max(t_all[i], 1.0)
        own = rate_surprise(float(own_new[i]), float(p_before[i]), prior, NOVELTY_PRIOR)
        peers = (t_crossed[i] + 0.5) / (t_all[i] + 1.0)
        cross = float(-np.log10((crossed[i] + NOVELTY_PRIOR * peers) / (dept_all[i] + NOVELTY_PRIOR)))
        dept_rate = (dept_x[i] + 0.5) / (dept_all[i] + 1.0)
        own_rate = (own_x[i] + NOVELTY_PRIOR * dept_rate) / (p_before[i] + NOVELTY_PRIOR)
        surprise = own + cross + float(np.log10(dept_rate / own_rate))
        if surprise < cfg.segmentation_surprise or not (c.sensitivity[i] == 3 or warm[i]):
            continue
        e = c.events[i]
        out.append(_finding(ctx, "data.segmentation", c, i, surprise, int(c.sensitivity[i]),
                            [Feature(name="sensitivity", value=float(c.sensitivity[i])),
                             Feature(name="department_crossings", value=float(crossed[i]),
                                     baseline=float(dept_all[i]))],
                            f"{e.principal} ({e.principal_department}) {did(e.operation)} {e.sensitivity} dataset "
                            f"{e.dataset} owned by {e.dataset_owner_department}: new to them, and "
                            f"{e.principal_department} made {int(crossed[i])} of its {int(dept_all[i])} accesses "
                            f"to {e.dataset_owner_department}'s sensitive data"
                            + (" (the dataset is new to the department)" if new_dd[i] else "")
                            + f"; they made {int(own_x[i])} of their {int(p_before[i])} accesses to other "
                            f"departments' sensitive data"
                            + f"; about {one_in(surprise)} for them."))
    return out


def _off_hours(ctx: Context, c: DataColumns, p_before: np.ndarray, tenant: _TenantCounts) -> list[Finding]:
    """data.off_hours: sensitive access when the principal's own hour-of-day rhythm expects (almost) none."""
    cfg, s, v = ctx.config, ctx.tables, ctx.tables.vocabs
    p = s.principal
    s.hours_tenant = _grown_hours(s.hours_tenant, len(v.tenant))
    s.hours_principal = _grown_hours(s.hours_principal, len(v.principal))
    # a new IP is evidence only in proportion to how rarely this principal shows one (its own rate, shrunk to its
    # tenant's): behind a NAT pool every access brings a new address and none is surprising
    has_ip = c.ip >= 0
    new_ip = ctx.novel("principal_ip", pair(c.principal, np.where(has_ip, c.ip, 0))) & has_ip
    own_new = p["ip_new"][c.principal] + earlier_flagged(c.principal, new_ip)
    own_seen = p["ip_seen"][c.principal] + earlier_flagged(c.principal, has_ip)
    t_new = tenant.as_of(TENANT_IP_NEW, new_ip.astype(np.float64))
    t_seen = tenant.as_of(TENANT_IP_SEEN, has_ip.astype(np.float64))
    np.add.at(p["ip_new"], c.principal, new_ip.astype(np.float64))
    np.add.at(p["ip_seen"], c.principal, has_ip.astype(np.float64))
    ip_s = np.where(new_ip, rate_surprise_many(own_new, own_seen, t_new / np.maximum(t_seen, 1.0), NOVELTY_PRIOR),
                    0.0)
    # ... and an address from a network the tenant never used adds how rarely the tenant's new addresses are on a
    # new network (Laplace's rule over its new IPs): a NAT pool's or an office's new addresses stay in their networks
    net = networks(v.ip, c.ip)
    new_net = ctx.novel("tenant_network", pair(c.tenant, np.maximum(net, 0))) & new_ip & (net >= 0)
    t_net = tenant.as_of(TENANT_NET_NEW, new_net.astype(np.float64))
    ip_s = ip_s + np.where(new_net, -np.log10((t_net + 1.0) / (t_new + 2.0)), 0.0)
    # the tenant's learning period learns every event (its findings would be info only): a service account's first
    # nightly batch becomes its rhythm instead of being held out as an anomaly
    tenants, t_inv = np.unique(c.tenant, return_inverse=True)
    t_start = np.array([s.tenant_start.get(t, 0) for t in tenants.tolist()], dtype=np.int64)[t_inv]
    learning = c.ts - t_start < cfg.learning_hours * HOUR
    judged = (c.sensitivity >= 2) & c.granted & (p_before >= cfg.off_hours_min_events) & ~learning
    # hour of day in UTC: each principal's own histogram places its working hours, whatever its time zone
    hour = (c.ts // HOUR) % 24
    # the tenant's rhythm counts principals at work at each hour (each principal's first access at that hour of the
    # day), not accesses: a few batch accounts reading all night do not make the night look usual for its people
    new_hour = ctx.novel("principal_hour", pair(c.principal, hour)).astype(np.float64)
    tau = cfg.off_hours_tau_min * MIN
    # the held-back reads of each principal's current episode, per hour of day (gathered for the batch's principals)
    uniq, loc = np.unique(c.principal, return_inverse=True)
    pending = s.oh_pending.get(uniq)
    pend_max = p["oh_pend_max"][uniq]
    ep_n = p["oh_ep_n"][uniq]
    # only sensitive accesses are counted, against the principal's own share of sensitive accesses (shrunk to its
    # tenant's): a night of confidential reads is rarer for someone who mostly reads public data
    sens = c.sensitivity >= 2
    own_sens = p["oh_sens"][c.principal] + earlier_flagged(c.principal, sens)
    t_sens = tenant.as_of(TENANT_SENSITIVE, sens.astype(np.float64))
    t_all = tenant.base[:, TENANT_ACCESSES] + rank_in_batch(c.tenant)
    np.add.at(p["oh_sens"], c.principal, sens.astype(np.float64))
    sens_share = ((own_sens + NOVELTY_PRIOR * (t_sens + 1.0) / (t_all + 2.0))
                  / (p_before + NOVELTY_PRIOR))
    hs, ip_s, share, k, mu, scale, t_share = hour_rhythm_sensitive(
        c.principal, c.tenant, hour, c.ts, p["first"], s.hours_principal, s.hours_tenant, p["recent"],
        p["recent_last"], p["recent_s"], p["recent_s_last"], new_hour, p["ip_carry"], p["ip_carry_ts"], float(tau),
        float(cfg.off_hours_short_min * MIN), cfg.off_hours_prior, OFF_HOURS_DISPERSION, ip_s, judged,
        cfg.off_hours_learn_surprise, loc, pending, pend_max, ep_n, cfg.off_hours_surprise, sens.astype(np.float64),
        np.minimum(sens_share, 1.0))
    s.oh_pending.put(uniq, pending)
    p["oh_pend_max"][uniq] = pend_max
    p["oh_ep_n"][uniq] = ep_n
    surprise = hs + ip_s
    out: list[Finding] = []
    # the hour must be unusual in itself: a new IP alone (however rare for the principal) is not off-hours access
    # and the hour must be a quiet one for the principal (more than usual at a busy hour is not off hours) and for its
    # tenant's people at work (a principal moving to a shift its colleagues work is not off hours)
    quiet = (share / 3 < cfg.off_hours_share / 24) & (t_share / 3 < cfg.off_hours_tenant_share / 24)
    for i in np.flatnonzero(judged & quiet & (surprise >= cfg.off_hours_surprise)
                            & (hs >= cfg.off_hours_hour_surprise)):
        e = c.events[i]
        ip_part = (f"; {'from ' + e.client_ip + ', ' if new_ip[i] else 'after '}a new IP for them"
                   + (" on a network their tenant never used" if new_net[i] else "")
                   + f" (about {one_in(float(ip_s[i]))} for them)" if ip_s[i] > 0 else "")
        # the features keep their published names: alerts and stored rows carry them
        out.append(_finding(
            ctx, "data.off_hours", c, i, float(surprise[i]), int(c.sensitivity[i]),
            [Feature(name="hour_of_week_share", value=round(float(share[i]) / 3, 4), baseline=round(1 / 24, 4)),
             Feature(name="off_hours_sensitive_per_hour", value=round(float(k[i]), 1),
                     baseline=round(float(mu[i]), 3)),
             Feature(name="new_client_ip", value=float(new_ip[i]), baseline=0.0),
             Feature(name="new_ip_surprise", value=round(float(ip_s[i]), 2), baseline=0.0)],
            f"{e.principal} {did(e.operation)} {e.sensitivity} dataset {e.dataset} at {int(hour[i]):02d}:00 UTC: "
            f"{k[i]:.1f} sensitive accesses within about {scale[i] / MIN:.0f} min where their own rhythm at this "
            f"hour ({share[i] / 3:.2%} of their activity, their tenant's as the prior) and their share of sensitive "
            f"accesses ({min(float(sens_share[i]), 1.0):.0%}) expect {mu[i]:.2f}"
            f"{ip_part}; about {one_in(float(surprise[i]))} for them."))
    return out


def _training(ctx: Context, c: DataColumns, tenant: _TenantCounts) -> list[Finding]:
    """data.training_write: writes to a training pipeline by a principal from outside its owning department, or to
    training data by a principal whose department (its own share, shrunk to its tenant's) does not write others'."""
    cfg, ds_rows, dept = ctx.config, ctx.tables.dataset, ctx.tables.dept
    out: list[Finding] = []
    writes = c.granted & ((c.operation == 1) | (c.operation == 2) | (c.operation == 4))
    wi = np.flatnonzero(writes)
    if not wi.size:
        return out
    # the department's and the tenant's accesses before each event (the department's counts already hold the batch)
    in_batch = np.bincount(c.dept, minlength=dept["accesses"].size)
    dept_acc = dept["accesses"][c.dept] - in_batch[c.dept] + rank_in_batch(c.dept)
    t_acc = tenant.base[:, TENANT_ACCESSES] + rank_in_batch(c.tenant)
    # the tenant's learning period learns every first write (its findings are info only): a department whose
    # service feeds another's training sets from the start is learned as such
    tenants, t_inv = np.unique(c.tenant, return_inverse=True)
    t_start = np.array([ctx.tables.tenant_start.get(t, 0) for t in tenants.tolist()], dtype=np.int64)[t_inv]
    learning = c.ts - t_start < cfg.learning_hours * HOUR
    new_writer = ctx.novel("dataset_writer", pair(c.dataset[wi], c.principal[wi]))
    for j, i in enumerate(wi):
        ds = c.dataset[i]
        e = c.events[i]
        training = ds_rows["training"][ds] > 0 or e.purpose == "model-training" or c.operation[i] == 4
        outsider = bool(c.dept[i] != c.owner[i])
        # training data (known as such from its writes' purpose) or a dataset fed by few writers
        # (a pipeline) gets a writer from outside its owning department
        fed = training and ds_rows["writers"][ds] <= 2 and ds_rows["writes"][ds] >= cfg.training_min_writes
        hit = bool(new_writer[j] and fed and outsider)
        row = tenant.table[int(c.tenant[i])]
        peer = 0.0
        if new_writer[j] and training and outsider:
            # ... or a writer whose department does not write other departments' training data: such writes' share of
            # its accesses, shrunk to its tenant's (Laplace's rule over the tenant's accesses), so a dataset never
            # written before is judged too, and a department that feeds others' pipelines is not news
            prior = (row[TENANT_TRAIN_IN] + 0.5) / (t_acc[i] + 1.0)
            d = int(c.dept[i])
            peer = float(-np.log10((dept["train_in"][d] + NOVELTY_PRIOR * prior) / (dept_acc[i] + NOVELTY_PRIOR)))
        if hit or peer >= cfg.training_peer_surprise:
            writers, seen = int(ds_rows["writers"][ds]), int(ds_rows["writes"][ds])
            # a new writer where `writers` wrote all `seen` writes: Laplace's rule of succession
            surprise = max(float(-np.log10((writers + 1.0) / (seen + 2.0))) + 1.0 if hit else 0.0, peer)
            out.append(_finding(
                ctx, "data.training_write", c, i, max(surprise, 3.0), max(int(c.sensitivity[i]), 2),
                [Feature(name="dataset_writers", value=float(writers), baseline=None),
                 Feature(name="dataset_writes_seen", value=float(seen)),
                 Feature(name="department_training_writes", value=float(dept["train_in"][c.dept[i]]),
                         baseline=float(dept_acc[i]))],
                f"{e.principal} ({e.principal_department}) wrote to training dataset {e.dataset} of "
                f"{e.dataset_owner_department}, which {_others(writers)} had written in {seen} "
                f"write{'' if seen == 1 else 's'}; {e.principal_department} made "
                f"{int(dept['train_in'][c.dept[i]])} of its {int(dept_acc[i])} accesses as writes to other "
                f"departments' training data; about {one_in(surprise)} for them."))
            hit = True
        ds_rows["writes"][ds] += 1
        if training and not hit:
            ds_rows["training"][ds] = 1.0
        if new_writer[j]:
            ds_rows["writers"][ds] += 1
        if new_writer[j] and training and outsider and (learning[i] or not hit):  # an alerted writer is not learned
            dept["train_in"][c.dept[i]] += 1
            row[TENANT_TRAIN_IN] += 1
    return out


def _granted_before(ctx: Context, c: DataColumns) -> np.ndarray:
    """Whether each denied event's principal had been granted its dataset before it (as of the event: the
    (principal, dataset) pairs of earlier batches' granted accesses, and the batch's earlier ones); False for a
    granted event. Call before ``_volume``, which adds the batch's granted pairs."""
    keys = pair(c.principal, c.dataset)
    out = (earlier_flagged(keys, c.granted) > 0) & ~c.granted
    pairs = ctx.tables.pairs
    d = np.flatnonzero(~c.granted & ~out)
    out[d] = [int(k) in pairs for k in keys[d].tolist()]
    return out


def _denied(ctx: Context, c: DataColumns, p_before: np.ndarray, tenant: _TenantCounts,
            known: np.ndarray) -> list[Finding]:
    """data.denied_burst: recent denials of data the principal was never granted, against its own rate of them
    (shrunk to its tenant's)."""
    cfg, p = ctx.config, ctx.tables.principal
    # probing is being refused data one never had: a denial of a dataset the principal was granted before (an
    # expired session, a permission change) is not evidence of it
    denied = ~c.granted & ~known
    tau = cfg.denied_tau_s * 1000
    k = decayed_count(c.principal, c.ts, denied.astype(np.float64), p["denied"], p["denied_last"], tau)
    recent = decayed_count(c.principal, c.ts, np.ones(c.ts.size), p["accesses"], p["accesses_last"], tau)
    own = p["denied_n"][c.principal] + earlier_flagged(c.principal, denied)
    t_den = tenant.as_of(TENANT_DENIED, denied.astype(np.float64))
    t_all = tenant.base[:, TENANT_ACCESSES] + rank_in_batch(c.tenant)
    np.add.at(p["denied_n"], c.principal, denied.astype(np.float64))
    # the long-run rate leaves out the recent (decayed) counts, so a burst does not raise its own expectation
    own_long = np.maximum(own - (k - denied), 0.0)
    n_long = np.maximum(p_before - (recent - 1.0), 0.0)
    rate = (own_long + NOVELTY_PRIOR * t_den / np.maximum(t_all, 1.0)) / (n_long + NOVELTY_PRIOR)
    di = np.flatnonzero(denied)
    out: list[Finding] = []
    if not di.size:
        return out
    # no tenant history yet: one denial in a hundred accesses, a floor
    mu = np.maximum(rate[di], 0.01) * recent[di]
    sur = poisson_surprise_many(k[di], mu)
    for j in np.flatnonzero(sur >= cfg.denied_surprise):
        i = di[j]
        e = c.events[i]
        out.append(_finding(ctx, "data.denied_burst", c, i, float(sur[j]), int(c.sensitivity[i]),
                            [Feature(name="denied_per_5min", value=round(float(k[i]), 1),
                                     baseline=round(float(mu[j]), 3))],
                            f"{e.principal} was denied access to data they were never granted {k[i]:.0f} times in "
                            f"about {cfg.denied_tau_s / 60:.0f} minutes, where their own rate of such denials "
                            f"({rate[i]:.1%} of accesses, their tenant's as the prior) over their "
                            f"{recent[i]:.0f} recent accesses expects {mu[j]:.2f} (latest: "
                            f"{e.dataset}, {e.sensitivity}); about {one_in(float(sur[j]))} for them."))
    return out


# the past tense of each data_access operation (schemas.events.Operation), for explanations
_DID = {"read": "read", "write": "wrote", "delete": "deleted", "export": "exported", "train": "trained on"}


def networks(ips: Vocab, ids: np.ndarray) -> np.ndarray:
    """The network of each interned client IP (``ids`` in ``ips``; -1 absent) as an int key: an IPv4 address's
    /16, an IPv6 address's /48 (hashed above the IPv4 keys); -1 for an absent or unreadable address."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    keys = np.array([_network(ips.names[i].rpartition(SEP)[2]) if i >= 0 else -1 for i in uniq.tolist()],
                    dtype=np.int64)
    if ids.size:
        out = keys[inv].reshape(ids.shape)
    return out


def _network(ip: str) -> int:
    """An IPv4 address's /16 as ``a << 8 | b``; an IPv6 address's /48 hashed into ``2**16`` keys above those (an
    IPv4-mapped one as its IPv4 address); -1 if unreadable. The IPv6 keys are folded so that the tenant's network
    novelty set stays bounded (at most ``2**17`` keys a tenant) whatever addresses an attacker writes into events."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return -1
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if isinstance(addr, ipaddress.IPv4Address):
        a, b = addr.packed[:2]
        return a << 8 | b
    return 1 << 16 | (zlib.crc32(addr.packed[:6]) & 0xFFFF)


def did(operation: str) -> str:
    """What a principal did, in the past tense: ``did("export") == "exported"``."""
    return _DID.get(operation, operation)


def _others(n: int) -> str:
    return "no other principal" if n == 0 else f"only {n} other principal{'' if n == 1 else 's'}"


def _finding(ctx: Context, detector: str, c: DataColumns, i: int, surprise: float, asset: int,
             features: list[Feature], explanation: str) -> Finding:
    """A finding about event ``i``'s principal, scored from its surprise and the dataset's sensitivity."""
    e = c.events[i]
    f = ctx.finding(detector, c, i, e.principal, e.principal, score_of(surprise, asset), features, explanation)
    f.surprise = round(surprise, 3)
    return f


def _grown_hours(hist: np.ndarray, n: int) -> np.ndarray:
    """``hist`` (rows of 24 hour-of-day counts) with at least ``n`` rows."""
    if hist.shape[0] < n:
        grown = np.zeros((max(n, hist.shape[0] + hist.shape[0] // 4, 16), 24))
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
    doc="Per-principal models of data access: log-volume distributions (overall, per time-of-day block, per "
        "dataset, the department's while young), hour-of-day rhythms shrunk to the tenant's, own novelty rates "
        "(IPs, datasets, denials) shrunk to the tenant's, and the department's use of each dataset.",
    config=DataConfig,
    stage=stage,
    detectors=(
        Detector(
            "data.volume_spike", "Data volume far above the principal's baseline", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "Learns each principal's rows per granted access as a distribution of log(rows), overall and per "
            "4-hour block of the day, and not from accesses that already look anomalous. An access is judged "
            "against the closest of the baselines of its own and neighbouring blocks (the overall one while they "
            "have too few reads), so a volume that is normal for this principal at this time of day (a service "
            "account's nightly batch) is not a spike, and the same volume at midday is. It also keeps the principal's "
            "daily peaks (its largest read of each day): a read within `volume_peak_z` standard deviations of "
            "its usual peak is a volume it reaches every day and is not a spike (after `volume_peak_days` days; "
            "a day's peak is learned as at most `volume_peak_z` above the usual one, so one export does not "
            "make the next look usual). Its surprise (the normal tail of that z-score) reaching `volume_surprise` "
            "is raised; until the principal has `volume_min_seen` reads, its department's baseline judges it "
            "(`volume_peer_z`), and the read must also lie `volume_newcomer_z` standard deviations above what the "
            "department's principals read when they start (their first reads, each principal alike however busy; "
            "the tenant's newcomers' while the department has had fewer than ten such reads): a department's "
            "per-access baseline is its busiest members' habit, and a newcomer who reads like its heavier readers is "
            "not a spike. Severity follows the surprise and the dataset's sensitivity."),
        Detector(
            "data.volume_drift", "Data volume creeping up day after day", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "Per (principal, dataset), sums how far each read's log-volume lies above its baseline (a CUSUM "
            "with allowance `drift_k`); the baseline stops learning above 2 standard deviations, so a slow "
            "drip is not learned as the new normal, and a read that is usual for the principal at this time of "
            "day adds nothing, nor does a read of the principal's high mode (far above its ordinary reads yet at or "
            "below its usual daily peak, at most one standard deviation above it: a nightly batch; also when the "
            "pair's baseline learned a first night's batch reads and so spans both modes: a read at the level of the "
            "usual daily peak and 2 log units, 4 standard deviations of a tight baseline, above the pair's mean is "
            "the high mode however wide the pair's spread); a person's daily peak is only the largest of a day's "
            "ordinary reads, so a drip's reads above it count. A read below the pair's baseline counts as at it "
            "(the sum falls by the allowance), so the pair's ordinary reads between a drip's do not wipe out its "
            "evidence. How unusual a sum is is its own tail while the reads keep to their baseline (exp(-theta x "
            "sum), per read, theta the rate of a CUSUM of such held steps: 1.34 for `drift_k` 0.75, where unheld "
            "steps would give 2 x `drift_k`); a sum reaching `drift_h` "
            "whose tail is at least `drift_surprise` (1 in 100,000 reads, the rate per event of a budget of 1 per "
            "100k) is raised, and as it keeps growing it grows more unusual, so the false-alarm budget ranks "
            "drifts by it. It also keeps the pair's rows per UTC day (its last four days with reads): when today's "
            "total so far is above the last day's, that above the one before, and that above the one before it, the "
            "day totals have risen for four days, an order that is about 1 in 24 (4!) without a trend (five days in "
            "order, 1 in 120); that tail adds to the sum's, so a drip whose first days the pair's young baseline "
            "learned (its sum short of the threshold) is raised once its day totals have kept rising. Fewer days in "
            "order add nothing: they are common in ordinary work. A single spike is left "
            "to data.volume_spike and does not feed the sum, nor do the reads of the tenant's learning period.",
            cooldown_s=86_400),
        Detector(
            "data.segmentation", "Sensitive data of another department accessed", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "A principal's first granted access to a confidential or restricted dataset owned by another "
            "department. How unusual it is adds two parts: how rarely this principal touches a dataset new to it "
            "(its own rate, shrunk to its tenant's) and how rarely its department crosses to that owner's "
            "sensitive data (its share of the department's accesses, shrunk toward how often the tenant's other "
            "departments cross to that owner, so a small department is not judged on a handful of accesses and an "
            "owner whose data everyone reads is not news), not only whether anyone did before; that department "
            "rate is then scaled by the principal's own: its share of accesses to any other department's sensitive "
            "data, shrunk to its department's (worth 20 accesses), over the department's, so a person who never "
            "crosses is not covered by a batch account of the department that crosses all day, and one who "
            "crosses often is not news for doing it again. The sum "
            "reaching `segmentation_surprise` is raised: restricted data at once, confidential data once the "
            "principal is warm (`principal_warm_events` accesses over `principal_warm_hours`). Every finding is "
            "on a sensitive asset, so one at 1 in 10,000 or rarer alerts even where the tenant's false-alarm "
            "budget for it is spent (a quiet tenant whose first day's backup reads set a high bar).",
            sensitive=True),
        Detector(
            "data.off_hours", "Sensitive data accessed off hours", "principal",
            ("atlas:AML.T0025", "owasp-llm:LLM02"),
            "Keeps each principal's hour-of-day histogram, starting from its tenant's (worth `off_hours_prior` "
            "events), so working hours are the principal's own whatever its time zone, and night work is normal "
            "for a service account or on-call engineer whose history has it. The tenant's histogram counts its "
            "principals at work at each hour (each one's first access at that hour), not accesses, so a few batch "
            "accounts reading all night do not make the night look usual for a young principal. From the "
            "histogram and the principal's events per day it expects how many accesses fall within "
            "`off_hours_tau_min` at this hour, and, in hours the principal never worked at before this episode, within "
            "`off_hours_short_min` too; the Poisson tail of the recent count (the larger of the two, less log10(2) "
            "for two tests) is the surprise, so a person's second read within a minute or two is judged on the "
            "minutes, while a batch account's clustered reads in its usual hours are judged on the half hour. Only "
            "confidential and restricted accesses are counted, against the principal's expected accesses times its "
            "own share of sensitive accesses (shrunk toward its tenant's, worth 20 accesses): a session of "
            "confidential reads at night is rarer for someone who mostly reads internal data than for an account "
            "that reads nothing else, and the night's internal reads do not add to it. A new "
            "client IP adds its surprise under the principal's own IP-novelty rate "
            "(shrunk to its tenant's), so behind a NAT pool a new address adds nothing; an address on a network "
            "(IPv4 /16, IPv6 /48) the tenant never used adds how rarely the tenant's new addresses are on a new "
            "network, so the first read from outside can alert on its own. A granted "
            "confidential or restricted access in a quiet hour (below `off_hours_share` of the principal's average "
            "hour, and below `off_hours_tenant_share` of its tenant's average hour of principals at work: a shift "
            "change in a tenant at work around the clock is not off hours) whose surprise reaches "
            "`off_hours_surprise`, the hour's part alone at least "
            "`off_hours_hour_surprise`, is raised. A judged access whose surprise reaches "
            "`off_hours_learn_surprise` is held back from the rhythm while its episode lasts, so the first reads "
            "of an unusual night do not teach that hour in while the night builds up, and learned when the "
            "episode is over unless it reached `off_hours_surprise` (a raised night is never learned; a service "
            "account's unraised nightly batch becomes its rhythm); a principal is judged from "
            "`off_hours_min_events` accesses on."),
        Detector(
            "data.training_write", "Training data written by an unusual principal", "principal",
            ("atlas:AML.T0020", "owasp-llm:LLM04"),
            "Training data (marked by its writes' purpose or a train operation) fed by at most two writers "
            "over at least `training_min_writes` writes is a pipeline. A write to it by a principal who never "
            "wrote there, from outside the dataset's owning department, is raised: a likely poisoning attempt. "
            "How unusual: a new writer where so few wrote so many writes (the rule of succession). A first write "
            "to another department's training data is also judged by the writer's department, however few writes "
            "the dataset has seen (a training set never written in this tenant too): how often its people started "
            "writing other departments' training data, per access of the department, shrunk toward the tenant's "
            "rate (so a small department is not judged on a handful of accesses, and a labelling team whose people "
            "feed another team's training sets is not news); that surprise reaching `training_peer_surprise` is "
            "raised, and an alerted writer is not learned as the department's habit (except in the tenant's learning "
            "period, which learns every first write)."),
        Detector(
            "data.denied_burst", "Burst of denied data access (probing)", "principal",
            ("atlas:AML.T0007", "owasp-llm:LLM02"),
            "Counts each principal's denied accesses to datasets it was never granted, and all its accesses, with "
            "exponential decay (time constant `denied_tau_s`); a denial of a dataset it was granted before (an "
            "expired session, a permission change on its everyday data) is not probing and is not counted. Its own "
            "rate of such denials (shrunk to its tenant's) times its recent accesses is what it should expect; a "
            "denial whose recent count has a Poisson surprise of `denied_surprise` or more is raised: someone "
            "probing for data they are not allowed to read."),
    ),
    columns=(
        Column("principal", "n", 0, "accesses seen (warm-up)"),
        Column("principal", "first", 0, "first access time (warm-up)"),
        Column("principal", "mean", 0, "mean log(rows) of granted accesses"),
        Column("principal", "var", 0.25, "variance of log(rows)"),
        Column("principal", "seen", 0, "accesses learned into the volume baseline"),
        *(Column("principal", f"vb_{what}{b}", fill, f"{doc} in time-of-day block {b}")
          for b in range(VOLUME_BLOCKS)
          for what, fill, doc in (("mean", 0, "mean log(rows)"), ("var", 0.25, "variance of log(rows)"),
                                  ("seen", 0, "reads learned"))),
        Column("principal", "pk_day", -1, "UTC day of the principal's current daily peak"),
        Column("principal", "pk_max", -1, "log(rows) of the principal's largest read that day so far"),
        Column("principal", "pk_mean", 0, "mean of the principal's daily peak log(rows)"),
        Column("principal", "pk_var", 0.25, "variance of the principal's daily peak log(rows)"),
        Column("principal", "pk_seen", 0, "days learned into the daily-peak baseline"),
        Column("principal", "denied", 0, "decayed count of denied accesses to data the principal was never "
               "granted, `denied_tau_s`"),
        Column("principal", "denied_last", 0, "time of the denied count's last update"),
        Column("principal", "accesses", 0, "decayed count of all accesses, `denied_tau_s`"),
        Column("principal", "accesses_last", 0, "time of the access count's last update"),
        Column("principal", "denied_n", 0, "denied accesses to data the principal was never granted"),
        Column("principal", "recent", 0, "decayed count of accesses, `off_hours_tau_min`"),
        Column("principal", "recent_last", 0, "time of the recent count's last update"),
        Column("principal", "recent_s", 0, "decayed count of accesses, `off_hours_short_min`"),
        Column("principal", "recent_s_last", 0, "time of the short recent count's last update"),
        Column("principal", "oh_pend_max", 0, "largest surprise of the current episode's held-back accesses"),
        Column("principal", "oh_ep_n", 0, "accesses learned into the rhythm since the current episode began"),
        Column("principal", "oh_sens", 0, "accesses to confidential or restricted data"),
        Column("principal", "ip_new", 0, "accesses from a client IP new to the principal"),
        Column("principal", "ip_seen", 0, "accesses with a client IP"),
        Column("principal", "ip_carry", 0, "surprise of the principal's latest new IP"),
        Column("principal", "ip_carry_ts", 0, "time of the principal's latest new IP"),
        Column("principal", "pd_new", 0, "first accesses to a dataset"),
        Column("principal", "cross_n", 0, "granted accesses to another department's sensitive data"),
        Column("dataset", "writes", 0, "granted writes seen"),
        Column("dataset", "writers", 0, "distinct principals who wrote"),
        Column("dataset", "training", 0, "1: known as training data"),
        Column("dept", "mean", 0, "the department's mean log(rows)"),
        Column("dept", "var", 0.25, "the department's variance of log(rows)"),
        Column("dept", "seen", 0, "accesses learned into the department's baseline"),
        Column("dept", "nc_mean", 0, "mean log(rows) of its principals' first reads (the newcomer baseline)"),
        Column("dept", "nc_var", 0.25, "variance of log(rows) of its principals' first reads"),
        Column("dept", "nc_seen", 0, "first reads learned into the newcomer baseline"),
        Column("dept", "accesses", 0, "accesses of the department's principals"),
        Column("dept", "cross_out", 0, "granted accesses of its principals to other departments' sensitive data"),
        Column("dept", "train_in", 0, "(principal, dataset) pairs of the department's first granted writes to "
               "another department's training data (not alerted)"),
        Column("pair", "mean", 0, "mean log(rows) of the (principal, dataset) pair"),
        Column("pair", "var", 0.25, "the pair's variance of log(rows)"),
        Column("pair", "seen", 0, "reads learned into the pair's baseline"),
        Column("pair", "s", 0, "the pair's CUSUM drift sum"),
        Column("pair", "dt_day", -1, "UTC day of the pair's running day total"),
        Column("pair", "dt_tot", 0, "rows the pair read that day so far"),
        Column("pair", "dt_l1", -1, "log1p of the pair's total on its last closed day with reads (-1: none)"),
        Column("pair", "dt_l2", -1, "... on the closed day before that"),
        Column("pair", "dt_l3", -1, "... on the closed day before that"),
        Column("pair", "dt_l4", -1, "... on the closed day before that"),
    ),
    novelty=(
        NoveltySet("principal_dataset", ("principal", "dataset"), "datasets each principal accessed"),
        NoveltySet("dept_dataset", (None, "dataset"), "datasets each department accessed"),
        NoveltySet("dataset_writer", ("dataset", "principal"), "principals who wrote each dataset"),
        NoveltySet("principal_ip", ("principal", "ip"), "client IPs each principal accessed data from"),
        NoveltySet("tenant_network", (None, None), "networks (IPv4 /16, IPv6 /48) each tenant's principals "
                   "accessed data from"),
        NoveltySet("principal_hour", ("principal", None), "hours of the day (UTC) at which each principal accessed "
                   "data"),
    ),
    tables=(
        Table("pairs", "(principal, dataset) -> dense pair id (rows of the 'pair' arrays)",
              "remapped; pairs with an evicted half dropped (compaction._compact_pairs)"),
        Table("hours_tenant", "per-tenant hour-of-day histograms (UTC)", "never evicted: tenants are peer groups"),
        Table("hours_principal", "per-principal hour-of-day histograms (UTC)", "rows taken with their principal ids"),
        Table("oh_pending", "principal -> held-back accesses per hour of the day (UTC) of its current off-hours "
              "episode, held only for principals with some", "rows renumbered with their principal ids"),
        Table("data_tenant_counts", "tenant -> [new IPs, accesses with an IP, denials of data never granted, "
              "accesses, first (principal, dataset) accesses, new networks, first writes to another department's "
              "training data]: the peer priors of the principals' own rates",
              "never evicted: tenants are peer groups", factory=dict),
        Table("data_crossings", "pair(department, owner department) -> the department's granted accesses to the "
              "owner's sensitive data; pair(tenant + 2**30, owner) -> the tenant's crossings to the owner's",
              "never evicted: departments and tenants are peer groups, few and long-lived",
              factory=dict),
        Table("data_newcomers", "tenant -> [mean, variance, reads] of log(rows) of its principals' first reads: the "
              "newcomer baseline of departments with too few of their own", "never evicted: tenants are peer groups",
              factory=dict),
    ),
)
