"""Many different organisations: a world seed draws the shape of the organisation, not just the traffic.

The default simulator (:func:`streams.simulator.world.build_world`) is one organisation that
the detectors were tuned on. :func:`draw_traits` draws another from a *world seed*: how many
tenants, in which time zones, how large, how heavy-tailed, which habits make benign traffic
look odd (NAT pools and proxies, model routers, round-the-clock tenants, nightly batch reads
of service accounts, on-call nights, agents whose job is reading untrusted content, approval
flows that block, new joiners, release-day surges). :class:`VariedTraffic` turns those habits
into events on top of the default generator, so the event contract and the per-day chunks
stay the same. Every trait is recorded (:meth:`WorldTraits.summary`) so a report can say what
a world was like.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from streams.simulator.traffic import DAY_MS, MINUTES_PER_DAY, DayPlan, Traffic, human_profile, new_ids
from streams.simulator.world import (
    BASE_AGENT_TYPES,
    MODELS,
    SERVICE_ACCOUNTS,
    UNTRUSTED_WORK_TYPES,
    Shape,
    Tenant,
    World,
    add_tenant,
)

TENANT_NAMES = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell", "cyberdyne",
                "soylent", "wonka", "oscorp", "massive", "vandelay", "aperture", "gringotts")
# More service accounts than the default world's four: a world draws some of them.
MORE_SERVICES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("svc-backup", "security", ("security", "legal", "hr")),
    ("svc-search-indexer", "support", ("support", "marketing")),
    ("svc-billing", "finance", ("finance", "sales")),
    ("svc-crm-sync", "sales", ("sales",)),
    ("svc-hr-sync", "hr", ("hr",)),
)
ALL_AGENT_TYPES = BASE_AGENT_TYPES + UNTRUSTED_WORK_TYPES
NIGHT_HOURS = (22.0, 29.0)  # local 22:00 to 05:00 (hours past midnight wrap)


@dataclass(frozen=True)
class TenantTraits:
    """One tenant's organisation and habits."""

    name: str
    utc_offset_h: int
    always_on: bool  # works around the clock
    people: int
    keys: int
    agents: int
    services: tuple[str, ...]
    agent_types: tuple[str, ...]
    nat_pool: int  # size of the NAT pool its people's data access rotates through (0: fixed IPs)
    proxied_key_share: float  # keys whose client IP changes on every call
    router_key_share: float  # keys that spread their calls over many models
    batch_service_share: float  # service accounts with large nightly batch reads
    on_call_share: float  # people who work some nights
    joiner_share: float  # people (and their keys) appearing mid-run
    blocked_approval_share: float  # high-risk agent steps whose approval is pending/denied and end blocked
    release_days: tuple[int, ...]  # run days with a tenant-wide surge
    surge: float  # every key's rate multiplier during a surge
    surge_start_h: float  # local hour the surge starts
    surge_hours: float


@dataclass(frozen=True)
class WorldTraits:
    """A world: its tenants, how activity is spread, and the kinds' shares of the traffic."""

    world_seed: int
    tenants: tuple[TenantTraits, ...]
    shape: Shape
    token_sigma: float  # spread of per-key request sizes (log-normal sigma)
    data_share: float
    agent_share: float

    def summary(self) -> dict[str, object]:
        """The world's traits as plain data (for labels and reports)."""
        return {"world_seed": self.world_seed, "shape": asdict(self.shape), "token_sigma": self.token_sigma,
                "data_share": self.data_share, "agent_share": self.agent_share,
                "tenants": [asdict(t) for t in self.tenants]}

    def brief(self) -> str:
        """A few traits in one short line (for tables)."""
        ts = self.tenants
        zones = sorted({t.utc_offset_h for t in ts})
        flags = [f"{len(ts)}t", f"{sum(t.people for t in ts)}p", f"{sum(t.keys for t in ts)}k",
                 "tz " + ",".join(f"{z:+d}" for z in zones)]
        if any(t.always_on for t in ts):
            flags.append("24/7")
        if any(t.nat_pool for t in ts):
            flags.append("NAT")
        if any(t.release_days for t in ts):
            flags.append("surges")
        if any(set(t.agent_types) & set(UNTRUSTED_WORK_TYPES) for t in ts):
            flags.append("untrusted-work")
        return " ".join(flags)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> int:
    return int(round(float(np.exp(rng.uniform(np.log(lo), np.log(hi))))))


def _share(rng: np.random.Generator, p_any: float, lo: float, hi: float) -> float:
    """With probability ``p_any`` a share drawn from [lo, hi], else none."""
    return round(float(rng.uniform(lo, hi)), 3) if rng.random() < p_any else 0.0


def draw_traits(world_seed: int, days: int) -> WorldTraits:
    """Draw an organisation's shape and habits from wide distributions (deterministic per seed)."""
    rng = np.random.default_rng([world_seed, 0x5EED, 1])
    n_tenants = int(rng.integers(1, 7))
    names = [str(x) for x in rng.choice(TENANT_NAMES, size=n_tenants, replace=False)]
    services = SERVICE_ACCOUNTS + MORE_SERVICES
    tenants = []
    for name in names:
        n_services = int(rng.integers(1, len(services) + 1))
        svc = tuple(str(services[i][0]) for i in sorted(rng.choice(len(services), size=n_services, replace=False)))
        n_types = int(rng.integers(2, len(ALL_AGENT_TYPES) + 1))
        types = tuple(str(x) for x in rng.choice(ALL_AGENT_TYPES, size=n_types, replace=False))
        release = tuple(d for d in range(1, days) if rng.random() < 0.3)
        tenants.append(TenantTraits(
            name=name, utc_offset_h=int(rng.integers(-8, 11)), always_on=bool(rng.random() < 0.2),
            people=_log_uniform(rng, 8, 160), keys=_log_uniform(rng, 4, 70), agents=_log_uniform(rng, 2, 25),
            services=svc, agent_types=types,
            nat_pool=int(rng.integers(16, 512)) if rng.random() < 0.4 else 0,
            proxied_key_share=_share(rng, 0.5, 0.05, 0.6), router_key_share=_share(rng, 0.5, 0.05, 0.4),
            batch_service_share=_share(rng, 0.8, 0.3, 1.0), on_call_share=_share(rng, 0.6, 0.02, 0.15),
            joiner_share=_share(rng, 0.6, 0.02, 0.12), blocked_approval_share=_share(rng, 0.7, 0.05, 0.5),
            release_days=release, surge=round(float(rng.uniform(3.0, 5.0)), 2),
            surge_start_h=round(float(rng.uniform(9.0, 15.0)), 2), surge_hours=round(float(rng.uniform(2.0, 6.0)), 2),
        ))
    shape = Shape(people_alpha=round(float(rng.uniform(1.1, 2.5)), 3),
                  key_alpha=round(float(rng.uniform(1.05, 2.2)), 3), agent_alpha=round(float(rng.uniform(1.1, 2.5)), 3),
                  rows_median_log=round(float(rng.uniform(3.0, 7.0)), 3))
    return WorldTraits(world_seed, tuple(tenants), shape, token_sigma=round(float(rng.uniform(0.2, 1.2)), 3),
                       data_share=round(float(rng.uniform(0.1, 0.4)), 3),
                       agent_share=round(float(rng.uniform(0.05, 0.3)), 3))


def build_varied_world(traits: WorldTraits, days: int) -> World:
    """The organisation of ``traits``: entities drawn with the default builder, then given their habits."""
    rng = np.random.default_rng([traits.world_seed, 0x5EED, 2])
    services = {s[0]: s for s in SERVICE_ACCOUNTS + MORE_SERVICES}
    w = World(tenants=[])
    for i, tt in enumerate(traits.tenants):
        pool = tuple(f"100.{64 + i}.{int(x) // 250}.{int(x) % 250 + 2}"
                     for x in rng.choice(60_000, size=tt.nat_pool, replace=False)) if tt.nat_pool else ()
        t = Tenant(tt.name, tt.utc_offset_h, f"10.{20 + 10 * i}", always_on=tt.always_on, nat_pool=pool)
        w.tenants.append(t)
        first_p, first_k = len(w.principals), len(w.keys)
        add_tenant(w, t, rng, people=tt.people, keys=tt.keys, agents=tt.agents,
                   services=tuple(services[s] for s in tt.services), agent_types=tt.agent_types, shape=traits.shape)
        mine = range(first_p, len(w.principals))
        for j in mine:
            p = w.principals[j]
            if p.kind == "service":
                if rng.random() < tt.batch_service_share:
                    p.nightly_rows = float(np.exp(rng.uniform(np.log(20), np.log(300))))
                continue
            if days > 2 and rng.random() < tt.joiner_share:
                p.join_day = int(rng.integers(2, days))
            if rng.random() < tt.on_call_share:
                p.on_call_nights = tuple(d for d in range(days) if rng.random() < 0.4)
        proxy = tuple(f"172.{16 + i}.{int(x) // 250}.{int(x) % 250 + 2}" for x in rng.choice(60_000, size=256,
                                                                                             replace=False))
        for k in w.keys[first_k:]:
            k.join_day = w.principals[k.owner].join_day
            if rng.random() < tt.proxied_key_share:
                k.ip_pool = proxy
            if rng.random() < tt.router_key_share:
                k.models = tuple(str(m) for m in rng.choice(MODELS, size=int(rng.integers(2, len(MODELS) + 1)),
                                                            replace=False))
            k.token_scale = float(np.exp(rng.normal(0.0, traits.token_sigma)))
    return w


class VariedTraffic(Traffic):
    """Benign traffic of a varied world: the default generator plus the world's habits."""

    def __init__(self, world: World, seed: int, traits: WorldTraits, start_ms: int) -> None:
        super().__init__(world, seed)
        self.traits = traits
        self.epoch0 = start_ms // DAY_MS
        self._traits = {t.name: t for t in traits.tenants}
        self._key_of = {(k.tenant, k.key_id): k for k in world.keys}
        self._key_join = np.array([k.join_day for k in world.keys])
        self._principal_join = np.array([p.join_day for p in world.principals])
        self._batch = [p for p in world.principals if p.nightly_rows > 0]

    def _profile(self, tenant: str, service: bool, epoch_day: int) -> np.ndarray:
        if not self._tenant[tenant].always_on:
            return super()._profile(tenant, service, epoch_day)
        key = (tenant, service, epoch_day)
        prof = self._profiles.get(key)
        if prof is None:  # shifts around the clock: flat with a mild daytime rise, every day of the week
            day = human_profile(self._tenant[tenant].utc_offset_h, epoch_day - epoch_day % 7 + 4)
            prof = self._profiles[key] = 0.6 + 0.4 * day / day.max()
        return prof

    def _local_minutes(self, tenant: str, start_h: float, hours: float) -> np.ndarray:
        """UTC minutes of the day covering local ``start_h`` for ``hours`` in ``tenant`` (wrapping)."""
        off = self._tenant[tenant].utc_offset_h
        first = int((start_h - off) * 60)
        return (first + np.arange(int(hours * 60))) % MINUTES_PER_DAY

    def key_intensity(self, epoch_day: int) -> np.ndarray:
        m = super().key_intensity(epoch_day)
        day = epoch_day - self.epoch0
        m[self._key_join > day] = 0.0
        for tt in self.traits.tenants:
            if day in tt.release_days:
                rows = np.array([i for i, k in enumerate(self.world.keys) if k.tenant == tt.name])
                cols = self._local_minutes(tt.name, tt.surge_start_h, tt.surge_hours)
                m[np.ix_(rows, cols)] *= tt.surge
        return m

    def principal_intensity(self, epoch_day: int) -> np.ndarray:
        m = super().principal_intensity(epoch_day)
        day = epoch_day - self.epoch0
        m[self._principal_join > day] = 0.0
        for i, p in enumerate(self.world.principals):
            if day in p.on_call_nights:
                m[i, self._local_minutes(p.tenant, NIGHT_HOURS[0], NIGHT_HOURS[1] - NIGHT_HOURS[0])] += 0.3 * p.weight
        return m

    def generate(self, plan: DayPlan) -> tuple[np.ndarray, list[dict]]:
        """The default day with the world's habits applied, plus the service accounts' nightly batch reads."""
        rng = np.random.default_rng([self.seed, 11, plan.day])
        ts_b, rows_b = self._nightly(rng, plan)
        n_b = len(rows_b)
        base = replace(plan, budget=plan.budget - n_b, data_access=max(plan.data_access - n_b, 0))
        ts, rows = super().generate(base)
        self._habits(rng, rows)
        rows.extend(rows_b)
        return np.concatenate([ts, ts_b]), rows

    def _nightly(self, rng: np.random.Generator, plan: DayPlan) -> tuple[np.ndarray, list[dict]]:
        """Large reads by batch service accounts between 01:00 and 04:00 local time."""
        ts: list[int] = []
        rows: list[dict] = []
        room = plan.budget // 10
        for p in self._batch:
            n = min(int(rng.integers(8, 40)), room - len(rows))
            if n <= 0:
                break
            off = self._tenant[p.tenant].utc_offset_h
            start = plan.start_ms + int((1.0 - off) % 24 * 3_600_000)
            ids = new_ids(rng, n)
            for j in range(n):
                d = self.world.datasets[p.datasets[int(rng.integers(len(p.datasets)))]]
                n_rows = int(p.rows_scale * p.nightly_rows * rng.lognormal(0.0, 0.4)) + 1
                # the same local hours every day: a run past the UTC day's end wraps to that day's start, so no
                # account's reads stack up at the day's last millisecond
                at = start - plan.start_ms + int(rng.uniform(0, 3 * 3_600_000))
                ts.append(plan.start_ms + at % DAY_MS)
                rows.append({
                    "event_id": ids[j], "kind": "data_access", "ts": "", "tenant": p.tenant,
                    "source": "data-platform", "principal": p.name, "principal_department": p.department,
                    "dataset": d.name, "dataset_owner_department": d.owner_department,
                    "sensitivity": d.sensitivity, "operation": "read", "rows": n_rows, "bytes": n_rows * 180,
                    "granted": True, "client_ip": p.ips[0], "encrypted": True, "purpose": "nightly-batch",
                })
        return np.array(ts, dtype=np.int64), rows

    def _habits(self, rng: np.random.Generator, rows: list[dict]) -> None:
        """Rewrite the default rows with the world's habits (IP pools, routers, sizes, approvals, untrusted work)."""
        u = rng.random((len(rows), 3)).tolist()
        prev_session, prev_untrusted = "", False
        for i, r in enumerate(rows):
            kind = r["kind"]
            if kind == "api_usage":
                k = self._key_of[(r["tenant"], r["api_key_id"])]
                if k.ip_pool:
                    r["client_ip"] = k.ip_pool[int(u[i][0] * len(k.ip_pool))]
                if "model" in r:
                    if k.models and r["scope_used"] != "inference:embed":
                        r["model"] = k.models[int(u[i][1] * len(k.models))]
                    if k.token_scale != 1.0:
                        for f in ("tokens_in", "tokens_out", "request_bytes", "response_bytes"):
                            r[f] = int(r[f] * k.token_scale)
            elif kind == "data_access":
                pool = self._tenant[r["tenant"]].nat_pool
                if pool:
                    r["client_ip"] = pool[int(u[i][0] * len(pool))]
            else:
                tt = self._traits[r["tenant"]]
                if r["risk_level"] in ("high", "critical") and u[i][0] < tt.blocked_approval_share:
                    r["approval"] = "denied" if u[i][1] < 0.3 else "pending"
                    r["outcome"] = "blocked"
                same = r["session_id"] == prev_session
                if (r["agent_type"] in UNTRUSTED_WORK_TYPES and same and prev_untrusted and u[i][2] < 0.7):
                    r["triggered_by"] = "external_content"
                prev_session, prev_untrusted = r["session_id"], bool(r["untrusted_input"])


def varied(world_seed: int, seed: int, start_ms: int, days: int) -> tuple[WorldTraits, World, VariedTraffic]:
    """The traits, organisation and benign traffic generator of world ``world_seed``."""
    traits = draw_traits(world_seed, days)
    world = build_varied_world(traits, days)
    return traits, world, VariedTraffic(world, seed, traits, start_ms)
