"""Benign traffic: seasonal, heavy-tailed, habit-consistent events for one simulated day.

Volumes follow per-entity intensities (entity weight x time-of-week profile of the
entity's tenant and class) sampled with one multinomial per day, so the day's events
are drawn in a handful of NumPy calls; the per-event Python work is one dict per event.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from streams.simulator.world import ENDPOINTS, SCOPE_ENDPOINTS, TOOLS, TRANSITIONS, World

MINUTES_PER_DAY = 1440
DAY_MS = 86_400_000
KIND_SHARE = {"data_access": 0.25, "agent_execution": 0.20}  # api_usage gets the rest
MEAN_SESSION_STEPS = 5.0


def human_profile(utc_offset_h: int, day_index_from_epoch: int) -> np.ndarray:
    """Per-minute relative activity of office workers for one UTC day (local working hours)."""
    minutes = np.arange(MINUTES_PER_DAY)
    local_min = (minutes + utc_offset_h * 60) % MINUTES_PER_DAY
    # local weekday of each minute (1970-01-01 was a Thursday: weekday 3)
    local_day = day_index_from_epoch + (minutes + utc_offset_h * 60) // MINUTES_PER_DAY
    weekday = (local_day + 3) % 7
    h = local_min / 60.0
    work = np.exp(-0.5 * ((h - 13.0) / 2.6) ** 2)  # smooth bell over 9:00-17:00
    lunch = 1.0 - 0.35 * np.exp(-0.5 * ((h - 12.5) / 0.5) ** 2)
    prof = 0.015 + work * lunch
    return prof * np.where(weekday >= 5, 0.08, 1.0)


def service_profile(utc_offset_h: int, day_index_from_epoch: int) -> np.ndarray:
    """Machine traffic: mostly flat with a mild echo of the business day."""
    return 0.5 + 0.5 * human_profile(utc_offset_h, day_index_from_epoch)


@dataclass
class DayPlan:
    """What one simulated day holds: its benign event budget and how it splits by kind."""

    day: int  # 0-based index in the run
    epoch_day: int  # days since 1970-01-01 of this UTC day
    start_ms: int
    budget: int  # benign events of the day, all kinds
    data_access: int
    agent_sessions: int


class Traffic:
    """Generates the benign events of each day of a run."""

    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        self.seed = seed
        self._tenant = {t.name: t for t in world.tenants}
        self._profiles: dict[tuple[str, bool, int], np.ndarray] = {}
        # per key: the (route, scope) pairs its habits cover, flattened for vectorised choice
        self._routes = [(path, spec[0], spec[1]) for path, spec in ENDPOINTS.items()]  # path, method, scope
        self._route_tin = np.array([spec[3] for spec in ENDPOINTS.values()], dtype=float)
        self._route_tout = np.array([spec[4] for spec in ENDPOINTS.values()], dtype=float)
        self._route_model = np.array([spec[2] for spec in ENDPOINTS.values()])
        index = {path: i for i, path in enumerate(ENDPOINTS)}
        habits = [[index[r] for sc in k.used for r in SCOPE_ENDPOINTS[sc]] for k in world.keys]
        self._key_nroutes = np.array([len(x) for x in habits])
        self._key_route_table = np.zeros((len(habits), max(self._key_nroutes)), dtype=np.int64)
        for i, h in enumerate(habits):
            self._key_route_table[i, : len(h)] = h
        self._key_nips = np.array([len(k.ips) for k in world.keys])
        self._chains = {t: _compile_chain(t) for t in TRANSITIONS}
        self._key_static = [
            {"tenant": k.tenant, "source": f"api-gateway-{k.tenant}", "api_key_id": k.key_id,
             "principal": world.principals[k.owner].name, "user_agent": k.user_agent}
            for k in world.keys
        ]

    # -- intensities ---------------------------------------------------------------------
    def _profile(self, tenant: str, service: bool, epoch_day: int) -> np.ndarray:
        key = (tenant, service, epoch_day)
        prof = self._profiles.get(key)
        if prof is None:
            t = self._tenant[tenant]
            prof = self._profiles[key] = (service_profile if service else human_profile)(t.utc_offset_h, epoch_day)
        return prof

    def key_intensity(self, epoch_day: int) -> np.ndarray:
        w = self.world
        return np.stack([
            k.weight * self._profile(k.tenant, w.principals[k.owner].kind == "service", epoch_day) for k in w.keys
        ])

    def principal_intensity(self, epoch_day: int) -> np.ndarray:
        return np.stack([
            p.weight * self._profile(p.tenant, p.kind == "service", epoch_day) for p in self.world.principals
        ])

    def agent_intensity(self, epoch_day: int) -> np.ndarray:
        return np.stack([
            a.weight * self._profile(a.tenant, a.agent_type == "ops-automation", epoch_day) for a in self.world.agents
        ])

    def day_weight(self, epoch_day: int) -> float:
        return float(self.key_intensity(epoch_day).sum() + self.principal_intensity(epoch_day).sum())

    # -- generation ----------------------------------------------------------------------
    def generate(self, plan: DayPlan) -> tuple[np.ndarray, list[dict]]:
        """Exactly ``plan.budget`` benign events: (ts in ms, rows without ts), unsorted.

        Agent sessions have random lengths, so they are drawn first and api_usage takes
        what is left of the budget.
        """
        rng = np.random.default_rng([self.seed, 1, plan.day])
        ts_a, rows = self._agents(rng, plan, plan.agent_sessions) if plan.agent_sessions else (
            np.empty(0, dtype=np.int64), [])
        n_data = min(plan.data_access, plan.budget)
        if len(rows) > plan.budget - n_data:  # cut whole steps off the end; rare, tiny budgets only
            keep = max(plan.budget - n_data, 0)
            ts_a, rows = ts_a[:keep], rows[:keep]
        ts_d, rows_d = self._data(rng, plan, n_data)
        n_api = plan.budget - n_data - len(rows)
        ts_u, rows_u = self._api(rng, plan, n_api)
        rows.extend(rows_d)
        rows.extend(rows_u)
        return np.concatenate([ts_a, ts_d, ts_u]), rows

    @staticmethod
    def _sample(rng: np.random.Generator, intensity: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` (entity, minute) cells from an entities x minutes intensity matrix."""
        p = intensity.ravel() / intensity.sum()
        counts = rng.multinomial(n, p)
        cells = np.repeat(np.arange(p.size), counts)
        return cells // MINUTES_PER_DAY, cells % MINUTES_PER_DAY

    def _api(self, rng: np.random.Generator, plan: DayPlan, n: int) -> tuple[np.ndarray, list[dict]]:
        w = self.world
        ent, minute = self._sample(rng, self.key_intensity(plan.epoch_day), n)
        ts = plan.start_ms + minute * 60_000 + rng.integers(0, 60_000, size=n)
        u = rng.random((n, 5))
        ids = new_ids(rng, n)
        # which of the key's habitual (route, scope) pairs, as a global route index
        route = self._key_route_table[ent, (u[:, 0] * self._key_nroutes[ent]).astype(np.int64)]
        # auth outcome and status: mostly ok/200, a trickle of failures
        auth_code = np.searchsorted([0.004, 0.006, 0.012], u[:, 1], side="right")  # 0 inv, 1 exp, 2 rl, 3 ok
        status = np.where(u[:, 2] < 0.004, 500, np.where(u[:, 2] < 0.02, 400, 200))
        status = np.choose(auth_code, [401, 401, 429, status]).tolist()
        ok = auth_code == 3
        latency = np.round(rng.lognormal(5.0, 0.6, size=n) * np.where(ok, 1.0, 0.05), 2).tolist()
        tok = rng.lognormal(0.0, 0.7, size=n)
        t_in, t_out = self._route_tin[route], self._route_tout[route]
        req_bytes = (200 + t_in * 4 * tok).astype(np.int64).tolist()
        resp_bytes = (300 + t_out * 4 * tok).astype(np.int64).tolist()
        tokens_in = (t_in * tok).astype(np.int64).tolist()
        tokens_out = (t_out * tok * (0.8 + 0.4 * u[:, 3])).astype(np.int64).tolist()
        with_tokens = (ok & self._route_model[route]).tolist()
        ip_ix = (u[:, 4] * self._key_nips[ent]).astype(np.int64).tolist()
        auth = [AUTH[c] for c in auth_code.tolist()]
        route = route.tolist()
        statics, routes, keys = self._key_static, self._routes, w.keys
        rows = []
        for i, k_ix in enumerate(ent.tolist()):
            k = keys[k_ix]
            path, method, scope = routes[route[i]]
            row = {
                "event_id": ids[i], "kind": "api_usage", "ts": "", **statics[k_ix],
                "client_ip": k.ips[ip_ix[i]], "method": method, "endpoint": path, "status": status[i],
                "latency_ms": latency[i], "request_bytes": req_bytes[i], "response_bytes": resp_bytes[i],
                "auth_result": auth[i], "scopes_granted": k.granted, "scope_used": scope,
            }
            if with_tokens[i]:
                row["model"] = k.model if scope != "inference:embed" else "embed-v3"
                row["tokens_in"] = tokens_in[i]
                row["tokens_out"] = tokens_out[i]
            rows.append(row)
        return ts, rows

    def _data(self, rng: np.random.Generator, plan: DayPlan, n: int) -> tuple[np.ndarray, list[dict]]:
        w = self.world
        ent, minute = self._sample(rng, self.principal_intensity(plan.epoch_day), n)
        ts = plan.start_ms + minute * 60_000 + rng.integers(0, 60_000, size=n)
        u = rng.random((n, 4))
        ids = new_ids(rng, n)
        ndata = np.array([len(p.datasets) for p in w.principals])[ent]
        ds_pick = (u[:, 0] * ndata).astype(np.int64).tolist()
        op_u = u[:, 1].tolist()
        granted = (u[:, 2] >= 0.01).tolist()
        scale = np.array([p.rows_scale for p in w.principals])[ent]
        rows_n = np.where(u[:, 2] >= 0.01, (scale * rng.lognormal(0.0, 0.5, size=n)).astype(np.int64) + 1, 0).tolist()
        ip_pick = u[:, 3].tolist()
        rows = []
        for i, p_ix in enumerate(ent.tolist()):
            p = w.principals[p_ix]
            d = w.datasets[p.datasets[ds_pick[i]]]
            r = op_u[i]
            if p.kind == "service":
                op = ("write" if r < 0.7 else "train") if d.training else ("write" if r < 0.3 else "read")
            else:
                op = "read" if r < 0.9 else ("write" if r < 0.97 else "export")
            row = {
                "event_id": ids[i], "kind": "data_access", "ts": "", "tenant": p.tenant,
                "source": "data-platform",
                "principal": p.name, "principal_department": p.department,
                "dataset": d.name, "dataset_owner_department": d.owner_department,
                "sensitivity": d.sensitivity, "operation": op,
                "rows": rows_n[i], "bytes": rows_n[i] * 180, "granted": granted[i],
                "client_ip": p.ips[int(ip_pick[i] * len(p.ips))], "encrypted": True,
            }
            if d.training:
                row["purpose"] = "model-training"
            rows.append(row)
        return ts, rows

    def _agents(self, rng: np.random.Generator, plan: DayPlan, n_sessions: int) -> tuple[np.ndarray, list[dict]]:
        w = self.world
        ent, minute = self._sample(rng, self.agent_intensity(plan.epoch_day), n_sessions)
        start = plan.start_ms + minute * 60_000 + rng.integers(0, 60_000, size=n_sessions)
        # walk every session first, then draw the per-step randomness in bulk
        walks = [walk(self._chains[w.agents[a].agent_type], TOOLS[w.agents[a].agent_type],
                      rng.random(2 * MAX_STEPS).tolist())
                 for a in ent.tolist()]
        steps = sum(len(x) for x in walks)
        ids = new_ids(rng, steps)
        gaps = rng.lognormal(8.5, 0.9, size=steps).astype(np.int64)
        duration = np.round(rng.lognormal(6.5, 0.8, size=steps), 1).tolist()
        tin = rng.lognormal(6.5, 0.6, size=steps).astype(np.int64).tolist()
        tout = rng.lognormal(5.0, 0.6, size=steps).astype(np.int64).tolist()
        u = rng.random((n_sessions, 3)).tolist()
        err = (rng.random(steps) < 0.03).tolist()
        session_ids = [f"ses-{x:012x}" for x in rng.integers(0, 2**48, size=n_sessions).tolist()]
        ts = np.empty(steps, dtype=np.int64)
        rows: list[dict] = []
        j = 0
        for s, a_ix in enumerate(ent.tolist()):
            a = w.agents[a_ix]
            tools = TOOLS[a.agent_type]
            principal = w.principals[a.principals[int(u[s][0] * len(a.principals))]].name
            trigger = "schedule" if a.agent_type == "ops-automation" and u[s][1] < 0.6 else "user"
            t = int(start[s])
            parent = None
            for step, (tool, ext_trigger) in enumerate(walks[s]):
                system, privilege, risk, untrusted = tools[tool]
                row = {
                    "event_id": ids[j], "kind": "agent_execution", "ts": "", "tenant": a.tenant,
                    "source": "agent-runtime",
                    "agent_id": a.agent_id, "agent_type": a.agent_type, "session_id": session_ids[s],
                    "principal": principal, "action": tool, "target_system": system,
                    "privilege": privilege, "risk_level": risk,
                    "approval": "approved" if risk in ("high", "critical") else "not_required",
                    "triggered_by": trigger if step == 0 else ("external_content" if ext_trigger else "agent"),
                    "untrusted_input": untrusted, "outcome": "error" if err[j] else "success",
                    "duration_ms": duration[j], "tokens_in": tin[j], "tokens_out": tout[j],
                }
                if parent is not None:
                    row["parent_event_id"] = parent
                parent = ids[j]
                rows.append(row)
                ts[j] = t
                t += int(gaps[j])  # a few seconds between steps
                j += 1
        return ts, rows


AUTH = ("invalid_credentials", "expired", "rate_limited", "ok")
MAX_STEPS = 24


def new_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Opaque, seed-determined event ids (nothing in an id tells benign from attack)."""
    return [f"{x:016x}" for x in rng.integers(0, 2**63, size=n).tolist()]


Chain = dict[str | None, tuple[list[str | None], list[float]]]


def _compile_chain(agent_type: str) -> Chain:
    """Transitions as (next states, cumulative probabilities) for bisect sampling."""
    out: Chain = {}
    for state, nxt in TRANSITIONS[agent_type].items():
        total = sum(nxt.values())
        acc, cum = 0.0, []
        for p in nxt.values():
            acc += p / total
            cum.append(acc)
        cum[-1] = 1.0
        out[state] = (list(nxt), cum)
    return out


def walk(chain: Chain, tools: dict[str, tuple[str, str, str, bool]], u: list[float]) -> list[tuple[str, bool]]:
    """One normal session: a Markov walk over an agent type's tool transitions.

    ``u`` holds 2 uniforms per step (at most ``len(u) // 2`` steps). Returns (tool,
    triggered by external content) per step: a read that follows an untrusted fetch is
    sometimes triggered by that content (benign link following).
    """
    out: list[tuple[str, bool]] = []
    state: str | None = None
    prev_untrusted = False
    for i in range(len(u) // 2):
        states, cum = chain[state]
        state = states[bisect_right(cum, u[2 * i])]
        if state is None:
            break
        spec = tools[state]
        out.append((state, prev_untrusted and spec[1] == "read" and u[2 * i + 1] < 0.3))
        prev_untrusted = spec[3]
    return out

