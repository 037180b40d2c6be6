"""Attack variants for varied worlds: each instance draws its own intensity, duration and shape.

The default scenarios (:mod:`streams.simulator.attacks`) have one shape each, the one the
detectors were tuned on. Here an instance of a scenario draws how hard, how long and in which
form it runs (a burst at 5-30x the key's own rate for 5 minutes to 2 hours, extraction on one
model with long outputs or on many models, a runaway agent as hundreds of short sessions or
one long one, ...), relative to the victim entity's own benign rate where that is what makes
it unusual. Each label records the drawn parameters (``params``) beside the usual ground truth.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streams.simulator.attacks import (
    HOUR_MS,
    INJECTED_TOOLS,
    MIN_MS,
    Context,
    Injection,
    agent_row,
    api_row,
    approval_bypassed,
    bulk_exfiltration,
    data_row,
    denied_reads,
    injected_actions,
    injection,
    leaked_api_key,
    new_scope_use,
    spaced_events,
)
from streams.simulator.traffic import DAY_MS, MINUTES_PER_DAY, Traffic
from streams.simulator.world import SCOPE_ENDPOINTS, TOOLS, ApiKey, Principal, World


class Rates:
    """Expected benign events per minute of each key and agent (from the traffic's intensities)."""

    def __init__(self, traffic: Traffic, start_ms: int, days: int, events_per_day: float, api_share: float,
                 agent_share: float) -> None:
        self.traffic = traffic
        self.epoch0 = start_ms // DAY_MS
        self.days = days
        self.api_per_day = events_per_day * api_share
        self.agent_steps_per_day = events_per_day * agent_share
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def _per_minute(self, what: str, day: int) -> np.ndarray:
        m = self._cache.get((what, day))
        if m is None:
            if what == "key":
                inten, total = self.traffic.key_intensity(self.epoch0 + day), self.api_per_day
            else:
                inten, total = self.traffic.agent_intensity(self.epoch0 + day), self.agent_steps_per_day
            m = self._cache[(what, day)] = inten * (total / max(float(inten.sum()), 1e-12))
        return m

    def around(self, what: str, index: int, t_ms: int, minutes: int) -> float:
        """Mean events per minute of entity ``index`` over ``minutes`` from ``t_ms`` (its daily mean if quiet)."""
        day = min(max((t_ms - self.traffic_start) // DAY_MS, 0), self.days - 1)
        m = self._per_minute(what, int(day))[index]
        first = int((t_ms - self.traffic_start) % DAY_MS // MIN_MS)
        window = m[first:min(first + max(minutes, 1), MINUTES_PER_DAY)]
        rate = float(window.mean()) if window.size else 0.0
        return max(rate, float(m.mean()))

    @property
    def traffic_start(self) -> int:
        return self.epoch0 * DAY_MS


class VariantContext(Context):
    """A scenario's context in a varied world: also the entities' own rates and an event budget."""

    def __init__(self, world: World, rng: np.random.Generator, start_ms: int, days: int, rates: Rates,
                 cap: int, taken: set[tuple[str, str]] | None = None) -> None:
        super().__init__(world, rng, start_ms, days, taken)
        self.rates = rates
        self.cap = cap  # the most events one instance may inject

    def key_index(self, key: ApiKey) -> int:
        return next(i for i, k in enumerate(self.world.keys) if k is key)

    def local_hour(self, night: bool) -> float:
        return float(self.rng.uniform(0.5, 4.5)) if night else self.work_hour()

    def is_day_tenant(self, tenant: str) -> bool:
        return not self._tenant[tenant].always_on

    def usual_ip(self, p: Principal) -> str:
        """An address ``p``'s data access normally comes from (its tenant's NAT pool if it has one)."""
        pool = self._tenant[p.tenant].nat_pool
        return pool[int(self.rng.integers(len(pool)))] if pool else p.ips[0]


def _inference_key(ctx: VariantContext) -> ApiKey:
    return ctx.pick(ctx.world.keys, lambda k: any(s.startswith("inference:") for s in k.used))


def rate_burst(ctx: VariantContext, n: int) -> Injection:
    key = _inference_key(ctx)
    mult, minutes = float(ctx.rng.uniform(5, 30)), int(np.exp(ctx.rng.uniform(np.log(5), np.log(120))))
    night = bool(ctx.rng.random() < 0.3)
    t = ctx.at_local(key.tenant, ctx.attack_day(), ctx.local_hour(night))
    own = ctx.rates.around("key", ctx.key_index(key), t, minutes)
    count = int(min(max(mult * own * minutes, 12), ctx.cap))
    inj = injection("rate_burst", n, key.tenant, "burst", [("api_key", key.key_id)],
                    f"API key {key.key_id} called at {mult:.0f}x its own rate for {minutes} min",
                    multiplier=mult, minutes=minutes, own_per_min=own, events=count, night=night)
    scope = next(s for s in key.used if s.startswith("inference:"))
    step = minutes * MIN_MS / count
    ip = key.ip_pool[int(ctx.rng.integers(len(key.ip_pool)))] if key.ip_pool else key.ips[0]
    return spaced_events(ctx, inj, t, count, step,
                         lambda _: api_row(ctx, key, route=SCOPE_ENDPOINTS[scope][0], ip=ip, ua=key.user_agent,
                                           tokens=float(ctx.rng.lognormal(0.0, 0.5))))


def model_extraction(ctx: VariantContext, n: int) -> Injection:
    key = ctx.pick(ctx.world.keys, lambda k: "inference:chat" in k.used or "inference:complete" in k.used)
    many = bool(ctx.rng.random() < 0.5)
    mult, minutes = float(ctx.rng.uniform(3, 20)), int(ctx.rng.integers(30, 180))
    out_scale = float(ctx.rng.uniform(5, 20)) if not many else float(ctx.rng.uniform(1, 4))
    t = ctx.at_local(key.tenant, ctx.weekday_day(), ctx.work_hour() - 2)
    own = ctx.rates.around("key", ctx.key_index(key), t, minutes)
    count = int(min(max(mult * own * minutes, 150), ctx.cap))
    shape = "many models" if many else "one model, long outputs"
    inj = injection("model_extraction", n, key.tenant, "burst", [("api_key", key.key_id)],
                    f"API key {key.key_id} queried at {mult:.0f}x its rate for {minutes} min ({shape})",
                    shape=shape, multiplier=mult, minutes=minutes, output_scale=out_scale, events=count)
    route = "/v1/chat/completions" if "inference:chat" in key.used else "/v1/completions"
    step = minutes * MIN_MS / count
    model = key.models[0] if key.models else key.model
    models = ("llm-large-2026", "llm-small-2026", "code-llm-2026", "embed-v3", "moderation-v2")
    for _ in range(count):
        t += int(ctx.rng.exponential(step))
        row = api_row(ctx, key, route=route, ip=key.ips[0], ua=key.user_agent, tokens=float(ctx.rng.uniform(0.5, 2)),
                      model=models[int(ctx.rng.integers(len(models)))] if many else model)
        if "tokens_out" in row:
            row["tokens_out"] = int(row["tokens_out"] * out_scale)
            row["response_bytes"] = int(row["response_bytes"] * out_scale)
        inj.add(t, row)
    return inj.finish()


def denial_of_wallet(ctx: VariantContext, n: int) -> Injection:
    key = _inference_key(ctx)
    scale, hours = float(ctx.rng.uniform(10, 50)), float(ctx.rng.uniform(1, 6))
    t = ctx.at_local(key.tenant, ctx.weekday_day(), float(ctx.rng.uniform(8, 13)))
    own = ctx.rates.around("key", ctx.key_index(key), t, int(hours * 60))
    count = int(min(max(own * hours * 60, 15), ctx.cap))
    inj = injection("denial_of_wallet", n, key.tenant, "burst", [("api_key", key.key_id)],
                    f"API key {key.key_id} kept its usual request rate with {scale:.0f}x the tokens for {hours:.1f} h",
                    token_scale=scale, hours=hours, events=count)
    scope = next((s for s in ("inference:chat", "inference:complete", "inference:embed") if s in key.used),
                 next(s for s in key.used if s.startswith("inference:")))
    step = hours * HOUR_MS / count
    return spaced_events(ctx, inj, t, count, step,
                         lambda _: api_row(ctx, key, route=SCOPE_ENDPOINTS[scope][0], ip=key.ips[0], ua=key.user_agent,
                                           tokens=scale * key.token_scale * float(ctx.rng.lognormal(0.0, 0.3))))


def unknown_key_night(ctx: VariantContext, n: int) -> Injection:
    owner = ctx.pick(ctx.world.keys)
    tenant = owner.tenant
    new_id = f"key_{tenant[:3]}_{900 + n:03d}_{int(ctx.rng.integers(16**6)):06x}"
    count = int(ctx.rng.integers(20, 60))
    external = bool(ctx.rng.random() < 0.5)
    ip = ctx.external_ip() if external else owner.ips[0]
    inj = injection("unknown_key_night", n, tenant, "burst", [("api_key", new_id)],
                    f"a key never seen before ({new_id}) made {count} calls at night",
                    events=count, external_ip=external)
    t = ctx.at_local(tenant, ctx.attack_day(), float(ctx.rng.uniform(1, 5)))
    for _ in range(count):
        t += int(ctx.rng.exponential(float(ctx.rng.uniform(5_000, 60_000))))
        inj.add(t, api_row(ctx, owner, route="/v1/chat/completions", ip=ip, ua="python-httpx/0.27.0",
                           tokens=float(ctx.rng.lognormal(0.5, 0.5)), key_id=new_id))
    return inj.finish()


def credential_stuffing(ctx: VariantContext, n: int) -> Injection:
    tenant = ctx.world.tenants[int(ctx.rng.integers(len(ctx.world.tenants)))].name
    keys = [k for k in ctx.world.keys if k.tenant == tenant]
    n_ips = 1 if ctx.rng.random() < 0.3 else int(ctx.rng.integers(5, 200))
    ips = sorted({ctx.external_ip() for _ in range(n_ips)})
    tries, minutes = int(min(ctx.rng.integers(100, 600), ctx.cap)), int(ctx.rng.integers(5, 60))
    t = ctx.at_local(tenant, ctx.attack_day(), float(ctx.rng.uniform(0, 24)))
    ids: list[str] = []
    rows: list[tuple[int, dict]] = []
    for i in range(tries):
        t += int(ctx.rng.exponential(minutes * MIN_MS / tries))
        k = keys[i % len(keys)]
        hit = ctx.rng.random() < 0.05
        guess = f"key_{tenant[:3]}_{int(ctx.rng.integers(1000)):03d}_{int(ctx.rng.integers(16**6)):06x}"
        kid = k.key_id if hit else guess
        ids.append(kid)
        rows.append((t, api_row(ctx, k, route="/v1/chat/completions", ip=ips[int(ctx.rng.integers(len(ips)))],
                                ua="Go-http-client/1.1", auth="invalid_credentials", status=401, key_id=kid)))
    used = sorted({row["client_ip"] for _, row in rows})
    entities = [("client_ip", ip) for ip in used] + [("api_key", k) for k in sorted(set(ids))]
    inj = injection("credential_stuffing", n, tenant, "burst", entities,
                    f"{tries} invalid-credential attempts from {len(used)} IPs in {minutes} min",
                    ips=len(used), attempts=tries, minutes=minutes)
    for ts, row in rows:
        inj.add(ts, row)
    return inj.finish()


def _restricted_elsewhere(ctx: VariantContext, p: Principal, sensitivity: tuple[str, ...]) -> list[int]:
    return [i for i, d in enumerate(ctx.world.datasets)
            if d.tenant == p.tenant and d.sensitivity in sensitivity and d.owner_department != p.department
            and not d.training]


def cross_department_restricted(ctx: VariantContext, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and bool(
        _restricted_elsewhere(ctx, p, ("restricted",))))
    ds = ctx.pick(_restricted_elsewhere(ctx, p, ("restricted",)))
    d = ctx.world.datasets[ds]
    count, scale = int(ctx.rng.integers(1, 10)), float(ctx.rng.uniform(0.3, 5))
    inj = injection("cross_department_restricted", n, p.tenant, "burst",
                    [("principal", p.name), ("dataset", d.name)],
                    f"{p.name} ({p.department}) read restricted {d.name} of {d.owner_department}",
                    reads=count, rows_scale=scale)
    t = ctx.at_local(p.tenant, ctx.weekday_day(), ctx.work_hour())
    return spaced_events(ctx, inj, t, count, 120_000,
                         lambda _: data_row(ctx, p, ds, op="read", rows=int(p.rows_scale * scale) + 1,
                                            ip=ctx.usual_ip(p)))


def off_hours_confidential(ctx: VariantContext, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and not p.on_call_nights
                 and ctx.is_day_tenant(p.tenant) and bool(ctx.sensitive_datasets(p)))
    ds = ctx.pick(ctx.sensitive_datasets(p))
    count, external = int(ctx.rng.integers(2, 12)), bool(ctx.rng.random() < 0.4)
    hour = float(ctx.rng.uniform(0.5, 4.5))
    inj = injection("off_hours_confidential", n, p.tenant, "burst", [("principal", p.name)],
                    f"{p.name} read {ctx.world.datasets[ds].name} at {hour:.1f}h local time",
                    reads=count, local_hour=hour, external_ip=external)
    t = ctx.at_local(p.tenant, ctx.attack_day(), hour)
    for _ in range(count):
        t += int(ctx.rng.exponential(100_000))
        ip = ctx.external_ip() if external else ctx.usual_ip(p)
        inj.add(t, data_row(ctx, p, ds, op="read", rows=int(p.rows_scale * ctx.rng.uniform(0.5, 4)) + 1, ip=ip))
    return inj.finish()


def training_data_poisoning(ctx: VariantContext, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and p.department != "data-science")
    ds = ctx.pick([i for i, d in enumerate(ctx.world.datasets) if d.tenant == p.tenant and d.training])
    d = ctx.world.datasets[ds]
    count = int(ctx.rng.integers(1, 15))
    inj = injection("training_data_poisoning", n, p.tenant, "burst", [("principal", p.name), ("dataset", d.name)],
                    f"{p.name} ({p.department}) wrote to training set {d.name}", writes=count)
    t = ctx.at_local(p.tenant, ctx.weekday_day(), ctx.work_hour())
    return spaced_events(ctx, inj, t, count, 60_000,
                         lambda _: data_row(ctx, p, ds, op="write", rows=int(ctx.rng.integers(10, 5000)),
                                            purpose="model-training"))


def runaway_agent(ctx: VariantContext, n: int) -> Injection:
    a = ctx.pick(ctx.world.agents)
    a_ix = next(i for i, x in enumerate(ctx.world.agents) if x is a)
    principal = ctx.principal(a.principals[0]).name
    short = bool(ctx.rng.random() < 0.5)
    tools = list(TOOLS[a.agent_type].items())
    t = ctx.at_local(a.tenant, ctx.attack_day(), float(ctx.rng.uniform(0, 24)))
    if short:
        mult, minutes = float(ctx.rng.uniform(10, 40)), int(ctx.rng.integers(20, 120))
        own = ctx.rates.around("agent", a_ix, t, minutes)
        count = int(min(max(mult * own * minutes, 200), ctx.cap))
        desc = f"agent {a.agent_id} ran hundreds of short sessions at {mult:.0f}x its rate for {minutes} min"
        params: dict[str, object] = {"shape": "many short sessions", "multiplier": mult, "minutes": minutes}
    else:
        count, minutes = int(min(ctx.rng.integers(200, 800), ctx.cap)), 0
        desc = f"agent {a.agent_id} ran one session of {count} steps with growing token use"
        params = {"shape": "one long session"}
    inj = injection("runaway_agent", n, a.tenant, "burst", [("agent", a.agent_id)], desc, events=count, **params)
    session, parent, left = ctx.session_id(), None, 0
    for i in range(count):
        if short:  # sessions of 1-3 steps
            if left == 0:
                session, parent, left = ctx.session_id(), None, int(ctx.rng.integers(1, 4))
            left -= 1
        tool, (system, priv, risk, untrusted) = tools[int(ctx.rng.integers(min(2, len(tools))))]
        r = agent_row(ctx, a, session=session, principal=principal, action=tool, system=system, privilege=priv,
                      risk=risk, approval="approved" if risk in ("high", "critical") else "not_required",
                      triggered_by="user" if parent is None else "agent", untrusted=untrusted, parent=parent,
                      tokens=1.0 if short else 1.0 + 8.0 * i / count)
        inj.add(t, r)
        parent = r["event_id"]
        t += int(ctx.rng.exponential(minutes * MIN_MS / count)) if short else int(ctx.rng.integers(200, 1_500))
    return inj.finish()


def tool_loop(ctx: VariantContext, n: int) -> Injection:
    a = ctx.pick(ctx.world.agents)
    principal = ctx.principal(a.principals[0]).name
    tool, (system, priv, risk, untrusted) = list(TOOLS[a.agent_type].items())[int(ctx.rng.integers(2))]
    count = int(ctx.rng.integers(20, 200))
    inj = injection("tool_loop", n, a.tenant, "burst", [("agent", a.agent_id)],
                    f"agent {a.agent_id} called the failing tool {tool} {count} times in one session",
                    tool=tool, events=count)
    t = ctx.at_local(a.tenant, ctx.attack_day(), float(ctx.rng.uniform(0, 24)))
    session, parent = ctx.session_id(), None
    for _ in range(count):
        r = agent_row(ctx, a, session=session, principal=principal, action=tool, system=system, privilege=priv,
                      risk=risk, approval="approved" if risk in ("high", "critical") else "not_required",
                      triggered_by="user" if parent is None else "agent", untrusted=untrusted, parent=parent,
                      outcome="error")
        inj.add(t, r)
        parent = r["event_id"]
        t += int(ctx.rng.integers(1_000, 6_000))
    return inj.finish()


def prompt_injection(ctx: VariantContext, n: int) -> Injection:
    a = ctx.pick(ctx.world.agents, lambda a: any(spec[3] for spec in TOOLS[a.agent_type].values()))
    principal = ctx.principal(a.principals[0]).name
    reader = next(tool for tool, spec in TOOLS[a.agent_type].items() if spec[3])
    steps = int(ctx.rng.integers(1, 5))
    tools = [str(x) for x in ctx.rng.choice(list(INJECTED_TOOLS), size=steps, replace=steps > len(INJECTED_TOOLS))]
    inj = injection("prompt_injection", n, a.tenant, "burst", [("agent", a.agent_id)],
                    f"agent {a.agent_id} read untrusted content with {reader} and then used {', '.join(tools)}",
                    reader=reader, tools=tools)
    t = ctx.at_local(a.tenant, ctx.weekday_day(), ctx.work_hour())
    session = ctx.session_id()
    system, priv, risk, _ = TOOLS[a.agent_type][reader]
    r = agent_row(ctx, a, session=session, principal=principal, action=reader, system=system, privilege=priv,
                  risk=risk, approval="not_required", triggered_by="user", untrusted=True)
    inj.add(t, r)
    return injected_actions(ctx, inj, a, session=session, principal=principal, after=r, t=t, tools=tools,
                            gap_ms=(2_000, 15_000))


def slow_drip_exfiltration(ctx: VariantContext, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and bool(ctx.sensitive_datasets(p)))
    ds = ctx.pick(ctx.sensitive_datasets(p))
    growth, reads = float(ctx.rng.uniform(1.5, 2.5)), int(ctx.rng.integers(3, 9))
    inj = injection("slow_drip_exfiltration", n, p.tenant, "slow", [("principal", p.name)],
                    f"{p.name} read {growth:.1f}x more of {ctx.world.datasets[ds].name} every day",
                    growth_per_day=growth, reads_per_day=reads)
    first = 1 if ctx.days > 2 else 0
    unusual = 0
    for day in range(first, ctx.days):
        level = growth ** (day - first)
        for _ in range(reads):
            t = ctx.at_local(p.tenant, day, ctx.work_hour())
            inj.add(t, data_row(ctx, p, ds, op="read", rows=int(p.rows_scale * level * ctx.rng.uniform(0.8, 1.2)) + 1))
            if level >= 3.0 and not unusual:
                unusual = t
    inj.finish()
    inj.label.detect_from_ms = min((t for t in inj.ts_ms if t >= unusual), default=inj.label.start_ms) \
        if unusual else inj.label.end_ms
    return inj


def access_probing(ctx: VariantContext, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human")
    targets = [i for i, d in enumerate(ctx.world.datasets)
               if d.tenant == p.tenant and d.sensitivity in ("restricted", "confidential") and i not in p.datasets]
    count, minutes = int(ctx.rng.integers(8, 60)), int(ctx.rng.integers(2, 30))
    inj = injection("access_probing", n, p.tenant, "burst", [("principal", p.name)],
                    f"{p.name} was denied {count} times on sensitive datasets in {minutes} min",
                    denied=count, minutes=minutes)
    t = ctx.at_local(p.tenant, ctx.weekday_day(), ctx.work_hour())
    return denied_reads(ctx, inj, p, targets, t, count, minutes * MIN_MS / count)


VARIANTS: dict[str, Callable[[VariantContext, int], Injection]] = {
    "rate_burst": rate_burst,
    "model_extraction": model_extraction,
    "denial_of_wallet": denial_of_wallet,
    "unknown_key_night": unknown_key_night,
    "leaked_api_key": leaked_api_key,
    "new_scope_use": new_scope_use,
    "credential_stuffing": credential_stuffing,
    "bulk_exfiltration": bulk_exfiltration,
    "cross_department_restricted": cross_department_restricted,
    "off_hours_confidential": off_hours_confidential,
    "training_data_poisoning": training_data_poisoning,
    "access_probing": access_probing,
    "slow_drip_exfiltration": slow_drip_exfiltration,
    "runaway_agent": runaway_agent,
    "tool_loop": tool_loop,
    "prompt_injection": prompt_injection,
    "approval_bypassed": approval_bypassed,
}


def inject_variants(world: World, rates: Rates, seed: int, start_ms: int, days: int, instances: int,
                    cap: int, scenarios: list[str] | None = None) -> list[Injection]:
    """Every variant scenario ``instances`` times; a scenario the world cannot host (no fitting entity) is skipped."""
    out = []
    names = list(VARIANTS)
    taken: set[tuple[str, str]] = set()
    for name in scenarios or names:
        for i in range(instances):
            rng = np.random.default_rng([seed, 22, names.index(name), i])
            try:
                out.append(VARIANTS[name](VariantContext(world, rng, start_ms, days, rates, cap, taken), i))
            except LookupError:
                continue
    return out
