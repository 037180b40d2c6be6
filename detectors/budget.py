"""False-alarm budgets: each detector alerts about ``alert_budget_per_100k`` times per 100k of a tenant's events.

A detector's own threshold (the floor every finding has already passed) is a hand constant; in an
organisation it was not tuned on it may fire on thousands of benign events (keys behind a proxy, a
NAT pool, nightly batch reads). The budget learns, per (tenant, detector) and online, how unusual
the detector's findings usually are relative to the tenant's event volume, and keeps as alerts only
the findings unusual enough that the detector stays within its budget; the rest become ``info``
alerts (stored and shown, never paged, never escalated into incidents).

The statistic is a finding's surprise (``Finding.surprise``; for a detector that reports only a score,
its conservative inverse, ``calibration.surprise_from_score``). Per (tenant, detector) a histogram of
the surprise of the findings that opened an episode (hits folded into an episode do not make alerts,
so they do not count) gives the threshold directly: with ``N`` tenant events so far, the detector may
have about ``k = budget * N / 100,000`` alerts, so the threshold is the lowest surprise that at most
``k`` of its past episodes reached. Where ``k`` is smaller than the handful of top episodes that can
estimate a tail (a small tenant may be allowed less than one alert a week), the tail beyond them is
extrapolated as exponential (peaks over threshold, the SPOT method) to where ``k`` episodes would
lie, so the detector's benign record highs do not each page. A quiet tenant whose detector has never
fired alerts on its first finding if that finding is at least 1 in 1,000 for its entity (``COLD_FLOOR``: until
a detector has a few episodes in the tenant, the budget has no picture of its benign findings, so it holds their
calibrated surprise to this documented floor instead of alerting on anything; a finding that reports only a score
is not held to it, its surprise being a conservative reading of that score already); a detector that fires on
one event in twenty is held to its budget. Bounding it the other way, a calibrated finding past the
budget's ``ceiling`` (1 in 10^6 for its entity, for a budget of 1 per 100k) alerts whatever the budget
learned, and no episode is learned past it, so one extreme episode cannot stretch a small tenant's tail.

Why a fixed-bin histogram rather than River's ``stats.Quantile``: the quantile wanted moves with the
tenant's volume (``1 - k / episodes``), and River's P² estimator tracks one fixed quantile; a histogram
answers any tail count exactly, in bounded space, and its updates are order-dependent only through
arrival order, so the result does not depend on how the stream is cut into batches.

Poisoning: findings below the threshold (the benign noise the budget exists to absorb) are learned as
they are. A finding above the threshold in force (one that alerts: an attack's own findings) is learned
only if no other above-threshold finding of its (tenant, detector) was learned in the hour before it
(event time), and then as at most ``rise`` decades above the threshold, not at its full surprise. A
burst of thirty strong findings teaches the budget one, so the next attack of that strength still
alerts; a detector whose benign findings genuinely moved up is still followed, an hour at a time. In a
tenant's learning period nothing alerts, and every finding is learned as it is: that day is the
budget's first picture of the detector's benign findings. The histograms and the tenant's event
count decay together at every new UTC day (time constant ``alert_budget_memory_days``), so the
threshold follows a tenant whose traffic changes.

Examples:
    >>> b = AlertBudget()
    >>> b.threshold(0, "api.x", events=50_000, per_100k=1.0)  # nothing learned yet
    0.0
    >>> b.bar(0, "api.x", 0.0)  # ... so a first finding alerts from the cold floor, 1 in 1,000
    3.0
    >>> for i in range(2_500):  # a noisy detector: one episode a minute, each about 1 in 100
    ...     b.learn(0, "api.x", 2.0, threshold=b.threshold(0, "api.x", 50_000, 1.0), rise=1.0, ts=i * 60_000)
    >>> b.threshold(0, "api.x", events=50_000, per_100k=1.0) > 2.0
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

WIDTH = 0.1  # decades of surprise per bin
ABOVE_EVERY_MS = 3_600_000  # at most one above-threshold finding of a (tenant, detector) learned per hour
BINS = 240  # the last bin holds everything from 23.9 decades up
# the prior mean excess (decades) of a surprise over a high threshold, worth PRIOR_WEIGHT episodes: a calibrated
# surprise exceeds any level by an exponential amount with mean log10(e), about 0.43 decades
PRIOR_SCALE = 0.5
PRIOR_WEIGHT = 2.0
# before a (tenant, detector) has COLD_EPISODES episodes the budget has no picture of its benign findings: a finding
# alerts only from COLD_FLOOR decades of surprise (about 1 in 1,000 for its entity), a documented floor, so a quiet
# detector's first strong finding pages while a first weak one (1 in 20 for a NAT-pool key) does not
COLD_FLOOR = 3.0
COLD_EPISODES = 3.0
# a finding whose calibrated surprise passes the ceiling alerts whatever the budget says: CEILING_MARGIN decades
# rarer than the budget's own rate per event, and never below CEILING_MIN decades (1 in 10^6)
CEILING_MARGIN = 1.0
CEILING_MIN = 6.0
# a sensitive detector's (``Detector.sensitive``) calibrated findings alert from SENSITIVE_MARGIN decades past the
# cold floor (1 in 10,000 for the entity) whatever the budget learned; see ``sensitive_ceiling``
SENSITIVE_MARGIN = 1.0


def ceiling(per_100k: float) -> float:
    """The surprise from which a calibrated finding alerts whatever its budget learned: ``CEILING_MARGIN`` decades
    beyond the budget's rate per event, and at least ``CEILING_MIN`` (6 decades, 1 in 10^6, for 1 alert per 100k
    or more; 7 for 0.1).

    Each event is at most one test of a detector on one entity, so findings this rare, if their surprise is
    calibrated, arise by chance at most once per 10^6 events of a tenant: a tenth of the budget, whatever the
    number of entities the tenant has or how long it has been watched (``CEILING_MIN`` keeps that margin for a
    detector whose surprise is a few times too high, where a large budget would put the ceiling low). The learned
    threshold cannot be trusted above it: in a small tenant it is extrapolated from a handful of episodes, which
    one extreme episode (an attack on the tenant's first day) can move by decades."""
    return max(CEILING_MIN, math.log10(100_000.0 / per_100k) + CEILING_MARGIN)


def sensitive_ceiling(per_100k: float, sensitive: bool) -> float:
    """The ``ceiling`` of a budget of ``per_100k``, lowered to ``COLD_FLOOR + SENSITIVE_MARGIN`` (1 in 10,000 for
    the entity) for a ``sensitive`` detector (``Detector.sensitive``).

    Such a detector judges only steps onto a sensitive asset (a principal's first access to another department's
    restricted data), a small share of its tenant's events, and its benign findings are mostly a day-one picture
    (a backup account's first reads of every department's data, in the learning period) that the budget
    extrapolates, in a quiet tenant, to a threshold no real crossing reaches. A finding a decade past the cold
    floor on such an asset is one a budget would never spend on benign traffic: it alerts even where the budget
    is spent. The budget still learns against its own threshold, and still holds the weaker findings."""
    top = ceiling(per_100k)
    return min(top, COLD_FLOOR + SENSITIVE_MARGIN) if sensitive else top


class AlertBudget:
    """Per tenant the events seen; per (tenant, detector) a histogram of its episodes' surprise (decayed)."""

    def __init__(self) -> None:
        self.events: dict[int, float] = {}  # tenant -> events seen (decayed)
        self.hist: dict[tuple[int, str], np.ndarray] = {}  # (tenant, detector) -> episodes per surprise bin
        self.above: dict[tuple[int, str], int] = {}  # (tenant, detector) -> time of its last learned alert
        self.held: dict[tuple[str, str, int], int] = {}  # episodes whose alert is info -> its opening time

    def __setstate__(self, d: dict) -> None:
        """A checkpoint written before held episodes were kept restores with none held."""
        self.__dict__.update({"held": {}, **d})

    def held_episodes(self, cooldown: dict[tuple[str, str, int], int]) -> dict[tuple[str, str, int], int]:
        """The episodes (detector, entity, tenant) whose alert is ``info``, which a later strong hit may lift
        (``detectors.alerting``); those whose episode has left ``cooldown`` (the engine prunes it) are dropped,
        so they are bounded by the live episodes."""
        if len(self.held) > len(cooldown):
            self.held = {k: t for k, t in self.held.items() if k in cooldown}
        return self.held

    def threshold(self, tenant: int, detector: str, events: float, per_100k: float) -> float:
        """The surprise a finding of ``detector`` must reach to alert in ``tenant`` after ``events`` events.

        Where the budget allows at least as many alerts as the detector's top episodes used to estimate the tail,
        the threshold is the lowest bin edge that at most that many past episodes reached. Where it allows fewer
        (a small tenant: less than one alert so far), the tail beyond the top episodes is extrapolated as
        exponential (peaks over threshold, as in SPOT): the threshold is set where the extrapolated count of
        episodes above it is the allowance, so a detector's benign maxima do not each become an alert. This is
        what the budget learns against; what a finding must pass is ``bar`` (with the cold floor).
        """
        h = self.hist.get((tenant, detector))
        if h is None:
            return 0.0
        allowed = per_100k * events / 100_000.0
        tail = np.cumsum(h[::-1])[::-1]  # episodes at or above each bin's lower edge
        n = float(tail[0])
        if n <= 0.0:
            return 0.0
        top = min(n, max(1.0, math.sqrt(n)))  # episodes that estimate the tail's shape (decayed: maybe under 1)
        if allowed >= top:
            over = np.flatnonzero(tail > allowed + 1e-9)
            return 0.0 if over.size == 0 else (int(over[-1]) + 1) * WIDTH
        start = int(np.flatnonzero(tail >= top - 1e-9)[-1])  # the highest bin edge that ``top`` episodes reach
        edge, counted = start * WIDTH, float(tail[start])
        centres = (np.arange(start, BINS) + 0.5) * WIDTH
        excess = float(np.dot(h[start:], centres - edge))
        scale = (excess + PRIOR_SCALE * PRIOR_WEIGHT) / (counted + PRIOR_WEIGHT)
        return edge + scale * math.log(counted / max(allowed, 1e-9))

    def bar(self, tenant: int, detector: str, threshold: float, per_100k: float = 0.0,
            sensitive: bool = False) -> float:
        """What a finding must reach to alert, given its budget's ``threshold``: at least ``COLD_FLOOR`` while the
        (tenant, detector) has fewer than ``COLD_EPISODES`` episodes (the budget has no picture of its benign
        findings yet), and at most the ``ceiling`` of a budget of ``per_100k`` (0: no ceiling). The floor and
        the ceiling decide only: the budget learns against ``threshold`` as before."""
        h = self.hist.get((tenant, detector))
        if h is None or float(h.sum()) < COLD_EPISODES:
            threshold = max(threshold, COLD_FLOOR)
        return min(threshold, sensitive_ceiling(per_100k, sensitive)) if per_100k > 0 else threshold

    def learn(self, tenant: int, detector: str, value: float, threshold: float, rise: float, ts: int = 0,
              learning: bool = False, top: float = math.inf) -> None:
        """Count an episode of surprise ``value`` (at event time ``ts``) judged against ``threshold``.

        Above the threshold: learned only an hour after the last such one of its (tenant, detector), and as at
        most ``rise`` decades over the threshold; in the tenant's learning period (nothing alerts), as it is. Never
        above ``top`` (the budget's ``ceiling``, past which a finding alerts whatever the threshold): how far past it
        an episode lay tells the budget nothing it uses, and would let one extreme episode (an attack on a small
        tenant's first day) stretch the extrapolated tail, and so the threshold, by decades.
        """
        key = (tenant, detector)
        value = min(value, top)
        if value >= threshold and not learning:
            last = self.above.get(key)
            if last is not None and ts - last < ABOVE_EVERY_MS:
                return
            self.above[key] = ts
            value = min(value, threshold + rise)
        h = self.hist.get(key)
        if h is None:
            h = self.hist[key] = np.zeros(BINS)
        h[min(int(max(value, 0.0) / WIDTH), BINS - 1)] += 1.0

    def add_events(self, tenants: np.ndarray) -> None:
        """Count a batch's events per tenant (``tenants``: their tenant ids)."""
        if tenants.size:
            counts = np.bincount(tenants)
            for t in np.flatnonzero(counts).tolist():
                self.events[t] = self.events.get(t, 0.0) + float(counts[t])

    def decay(self, days: float) -> None:
        """Age everything by one day, with time constant ``days`` (0: never forget)."""
        if days <= 0:
            return
        factor = math.exp(-1.0 / days)
        self.events = {t: n * factor for t, n in self.events.items()}
        for h in self.hist.values():
            h *= factor


class BudgetGate:
    """One batch's view of the budget: a tenant's event count as of each event (arrival order), the policy.

    ``tenants`` and ``pos`` are every event of the batch (any kind): its tenant and its position. The
    count for a finding includes its own event and every earlier one, whatever the batch cuts.
    """

    def __init__(self, table: AlertBudget, per_100k: float, rise: float, tenants: np.ndarray,
                 pos: np.ndarray, per_100k_of: Callable[[int, str], float] | None = None,
                 sensitive: frozenset[str] = frozenset()) -> None:
        self.table, self.per_100k, self.rise = table, per_100k, rise
        self.sensitive = sensitive  # the sensitive detectors (see sensitive_ceiling)
        self.per_100k_of = per_100k_of  # (tenant, detector) -> its budget (detector configuration); 0: none
        self._span = int(pos.max()) + 1 if pos.size else 1
        self._keys = np.sort(tenants.astype(np.int64) * self._span + pos)

    def events(self, tenant: int, seq: int) -> float:
        """Events of ``tenant`` up to and including position ``seq`` of this batch, over the whole stream."""
        lo = np.searchsorted(self._keys, tenant * self._span, side="left")
        hi = np.searchsorted(self._keys, tenant * self._span + seq, side="right")
        return self.table.events.get(tenant, 0.0) + float(hi - lo)

    def judge(self, tenant: int, detector: str, seq: int, ts: int, value: float, learn: bool,
              learning: bool = False, calibrated: bool = True) -> float:
        """The threshold a finding of surprise ``value`` is held to; ``learn``: count it as an episode after
        (``learning``: in its tenant's learning period). The cold floor holds only a ``calibrated`` surprise (a
        tail probability): a score-only finding's surprise is already a conservative reading of its score."""
        per = self.per_100k if self.per_100k_of is None else self.per_100k_of(tenant, detector)
        if per <= 0:  # no budget for this detector in this tenant: every finding alerts, none is learned
            return 0.0
        thr = self.table.threshold(tenant, detector, self.events(tenant, seq), per)
        bar = self.table.bar(tenant, detector, thr, per, detector in self.sensitive) if calibrated else thr
        if learn:
            self.table.learn(tenant, detector, value, thr, self.rise, ts, learning,
                             ceiling(per) if calibrated else math.inf)
        return bar
