"""Attack scenarios injected into the benign traffic, each with its ground truth.

A scenario picks real entities of the simulated world (so they have a history to break),
emits its events, and returns a :class:`Label`: the scenario name, the entities an
alert should name, the event-time window and the ids of every event it injected.
``speed`` says how fast a detector is expected to catch it: ``burst`` attacks within
60 s of event time, ``slow`` ones within one simulated day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from streams.simulator.traffic import DAY_MS, new_ids
from streams.simulator.world import ENDPOINTS, MODELS, SCOPE_ENDPOINTS, TOOLS, Agent, ApiKey, Principal, World

MIN_MS = 60_000
HOUR_MS = 3_600_000


@dataclass
class Label:
    scenario: str
    instance: str
    tenant: str
    speed: str  # "burst" | "slow"
    entities: list[dict[str, str]]
    description: str
    event_ids: list[str] = field(default_factory=list)
    start_ms: int = 0
    end_ms: int = 0
    params: dict[str, object] = field(default_factory=dict)  # the variant's drawn shape (varied worlds)
    detect_from_ms: int = 0  # when a slow attack becomes unusual (0: its start)


@dataclass
class Injection:
    """The events of one attack instance (rows carry event_id; ts is set from ts_ms)."""

    label: Label
    ts_ms: list[int] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def add(self, ts: int, row: dict) -> None:
        self.ts_ms.append(int(ts))
        self.rows.append(row)

    def finish(self) -> Injection:
        self.label.event_ids = [r["event_id"] for r in self.rows]
        self.label.start_ms = min(self.ts_ms)
        self.label.end_ms = max(self.ts_ms)
        return self


class Context:
    """What a scenario may use: the world, the run's time span and a seeded RNG."""

    def __init__(self, world: World, rng: np.random.Generator, start_ms: int, days: int,
                 taken: set[tuple[str, str]] | None = None) -> None:
        self.world = world
        self.rng = rng
        self.start_ms = start_ms
        self.days = days
        self._tenant = {t.name: t for t in world.tenants}
        # (key id, scope) pairs an earlier instance of the run already used for the first time: shared by a run's
        # contexts, so a later instance's "scope never used" is true when it happens
        self.taken: set[tuple[str, str]] = set() if taken is None else taken

    def pick(self, items: list, pred: Callable[[object], bool] = lambda _x: True):
        """A random item that fits ``pred`` among those present from the run's start (no new joiners)."""
        pool = [x for x in items if pred(x) and getattr(x, "join_day", 0) == 0]
        if not pool:
            raise LookupError("no entity fits this scenario")
        return pool[int(self.rng.integers(len(pool)))]

    def at_local(self, tenant: str, day: int, hour: float) -> int:
        """Event time (ms) of ``hour`` local time on run day ``day`` in ``tenant``'s timezone."""
        off = self._tenant[tenant].utc_offset_h
        ms = self.start_ms + day * DAY_MS + int((hour - off) * HOUR_MS)
        return max(self.start_ms, min(ms, self.start_ms + self.days * DAY_MS - HOUR_MS))

    def attack_day(self) -> int:
        """A day after the first (entities need a baseline first) when the run has one."""
        return int(self.rng.integers(1, self.days)) if self.days > 1 else 0

    def work_hour(self) -> float:
        return float(self.rng.uniform(9.5, 16.5))

    def weekday_day(self) -> int:
        """A run day that is a weekday for every tenant (falls back to any attack day)."""
        for _ in range(20):
            d = self.attack_day()
            weekday = ((self.start_ms // DAY_MS) + d + 3) % 7
            if weekday < 5:
                return d
        return self.attack_day()

    def ids(self, n: int) -> list[str]:
        return new_ids(self.rng, n)

    def external_ip(self) -> str:
        blocks = ("203.0.113", "198.51.100", "192.0.2", "185.220.101", "45.155.205")
        return f"{blocks[int(self.rng.integers(len(blocks)))]}.{int(self.rng.integers(2, 254))}"

    def principal(self, i: int) -> Principal:
        return self.world.principals[i]

    def sensitive_datasets(self, p: Principal) -> list[int]:
        """The confidential and restricted datasets among those ``p`` normally touches."""
        return [d for d in p.datasets if self.world.datasets[d].sensitivity in ("confidential", "restricted")]

    def session_id(self) -> str:
        return f"ses-{int(self.rng.integers(2**48)):012x}"


def injection(scenario: str, n: int, tenant: str, speed: str, entities: list[tuple[str, str]], description: str,
              **params: object) -> Injection:
    """An empty attack instance ``n`` of ``scenario``, labelled with the (type, id) of the entities it targets.

    ``params`` are the instance's drawn shape (floats rounded to 3 digits); the default scenarios draw none.
    """
    return Injection(Label(scenario, f"{scenario}-{n}", tenant, speed, [{"type": t, "id": i} for t, i in entities],
                           description, params={k: (round(v, 3) if isinstance(v, float) else v)
                                                for k, v in params.items()}))


# --- row builders --------------------------------------------------------------------------
def api_row(ctx: Context, key: ApiKey, *, route: str, ip: str, ua: str, auth: str = "ok",
            status: int = 200, tokens: float = 1.0, model: str | None = None, key_id: str | None = None) -> dict:
    method, scope, uses_model, t_in, t_out = ENDPOINTS[route]
    row = {
        "event_id": ctx.ids(1)[0], "kind": "api_usage", "ts": "", "tenant": key.tenant,
        "source": f"api-gateway-{key.tenant}",
        "api_key_id": key_id or key.key_id, "principal": ctx.principal(key.owner).name,
        "client_ip": ip, "user_agent": ua, "method": method, "endpoint": route, "status": status,
        "latency_ms": round(float(ctx.rng.lognormal(5.0, 0.6)), 2),
        "request_bytes": int(200 + t_in * 4 * tokens), "response_bytes": int(300 + t_out * 4 * tokens),
        "auth_result": auth, "scopes_granted": key.granted, "scope_used": scope,
    }
    if key_id is not None:  # a key the gateway does not know: nothing was granted
        del row["scopes_granted"], row["scope_used"]
    if uses_model and auth == "ok":
        row["model"] = model or key.model
        row["tokens_in"] = int(t_in * tokens)
        row["tokens_out"] = int(t_out * tokens)
    return row


def data_row(ctx: Context, p: Principal, ds_index: int, *, op: str, rows: int, granted: bool = True,
             ip: str | None = None, via_agent: str | None = None, purpose: str | None = None) -> dict:
    d = ctx.world.datasets[ds_index]
    row = {
        "event_id": ctx.ids(1)[0], "kind": "data_access", "ts": "", "tenant": p.tenant, "source": "data-platform",
        "principal": p.name, "principal_department": p.department, "dataset": d.name,
        "dataset_owner_department": d.owner_department, "sensitivity": d.sensitivity, "operation": op,
        "rows": rows if granted else 0, "bytes": (rows if granted else 0) * 180, "granted": granted,
        "client_ip": ip or p.ips[0], "encrypted": True,
    }
    if via_agent:
        row["via_agent"] = via_agent
    if purpose:
        row["purpose"] = purpose
    return row


def agent_row(ctx: Context, a: Agent, *, session: str, principal: str, action: str, system: str,
              privilege: str, risk: str, approval: str, triggered_by: str, untrusted: bool = False,
              parent: str | None = None, tokens: float = 1.0, outcome: str = "success") -> dict:
    row = {
        "event_id": ctx.ids(1)[0], "kind": "agent_execution", "ts": "", "tenant": a.tenant, "source": "agent-runtime",
        "agent_id": a.agent_id, "agent_type": a.agent_type, "session_id": session, "principal": principal,
        "action": action, "target_system": system, "privilege": privilege, "risk_level": risk,
        "approval": approval, "triggered_by": triggered_by, "untrusted_input": untrusted, "outcome": outcome,
        "duration_ms": round(float(ctx.rng.lognormal(6.5, 0.8)), 1),
        "tokens_in": int(ctx.rng.lognormal(6.5, 0.6) * tokens), "tokens_out": int(ctx.rng.lognormal(5.0, 0.6) * tokens),
    }
    if parent:
        row["parent_event_id"] = parent
    return row


# --- scenarios -------------------------------------------------------------------------------
def leaked_api_key(ctx: Context, n: int) -> Injection:
    key = ctx.pick(ctx.world.keys, lambda k: any(s.startswith("inference:") for s in k.used))
    ips = [ctx.external_ip() for _ in range(3)]
    inj = injection("leaked_api_key", n, key.tenant, "burst", [("api_key", key.key_id)],
                    f"API key {key.key_id} used from new external IPs {', '.join(ips)} with a new client")
    t = ctx.at_local(key.tenant, ctx.attack_day(), float(ctx.rng.uniform(0, 24)))
    scope = next(s for s in key.used if s.startswith("inference:"))
    return spaced_events(ctx, inj, t, int(ctx.rng.integers(60, 120)), 12_000,
                         lambda _: api_row(ctx, key, route=SCOPE_ENDPOINTS[scope][0], ip=ips[int(ctx.rng.integers(3))],
                                           ua="python-httpx/0.27.0", tokens=float(ctx.rng.lognormal(0.5, 0.5))))


def credential_stuffing(ctx: Context, n: int) -> Injection:
    tenant = ctx.world.tenants[int(ctx.rng.integers(len(ctx.world.tenants)))].name
    keys = [k for k in ctx.world.keys if k.tenant == tenant]
    ip = ctx.external_ip()
    inj = injection("credential_stuffing", n, tenant, "burst", [("client_ip", ip)],
                    f"{ip} tried hundreds of API keys with invalid credentials within minutes")
    t = ctx.at_local(tenant, ctx.attack_day(), float(ctx.rng.uniform(0, 24)))
    for i in range(int(ctx.rng.integers(250, 400))):
        t += int(ctx.rng.exponential(400))
        k = keys[i % len(keys)]
        guessed = f"key_{tenant[:3]}_{int(ctx.rng.integers(1000)):03d}_{int(ctx.rng.integers(16**6)):06x}"
        hit = ctx.rng.random() < 0.02  # a valid key id that is nevertheless refused (wrong secret)
        inj.add(t, api_row(ctx, k, route="/v1/chat/completions", ip=ip, ua="Go-http-client/1.1",
                           auth="invalid_credentials", status=401, key_id=k.key_id if hit else guessed))
    return inj.finish()


def model_extraction(ctx: Context, n: int) -> Injection:
    key = ctx.pick(ctx.world.keys, lambda k: "inference:chat" in k.used or "inference:complete" in k.used)
    inj = injection("model_extraction", n, key.tenant, "burst", [("api_key", key.key_id)],
                    f"API key {key.key_id} issued a sustained, high-volume, high-diversity stream of "
                    f"inference queries across models")
    t = ctx.at_local(key.tenant, ctx.weekday_day(), ctx.work_hour() - 2)
    routes = ["/v1/completions", "/v1/chat/completions"]
    # ~13/min for ~2 hours, against a few per hour normally
    return spaced_events(ctx, inj, t, int(ctx.rng.integers(1200, 1800)), 4_500,
                         lambda _: api_row(ctx, key, route=routes[int(ctx.rng.integers(2))], ip=key.ips[0],
                                           ua=key.user_agent, tokens=float(ctx.rng.uniform(0.3, 3.0)),
                                           model=MODELS[int(ctx.rng.integers(len(MODELS)))]))


def new_scope_use(ctx: Context, n: int) -> Injection:
    def unused(k: ApiKey) -> list[str]:
        return sorted(set(k.granted) - set(k.used) - {sc for kid, sc in ctx.taken if kid == k.key_id})

    key = ctx.pick(ctx.world.keys, lambda k: len(unused(k)) > 0)
    scope = next((s for s in unused(key) if s.startswith("admin:")), unused(key)[0])
    ctx.taken.add((key.key_id, scope))
    route = SCOPE_ENDPOINTS[scope][0]
    inj = injection("new_scope_use", n, key.tenant, "burst", [("api_key", key.key_id)],
                    f"Over-permissioned key {key.key_id} suddenly used scope {scope} it had never used")
    t = ctx.at_local(key.tenant, ctx.weekday_day(), ctx.work_hour())
    return spaced_events(ctx, inj, t, int(ctx.rng.integers(3, 8)), 20_000,
                         lambda _: api_row(ctx, key, route=route, ip=key.ips[0], ua=key.user_agent))


def bulk_exfiltration(ctx: Context, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and bool(ctx.sensitive_datasets(p)))
    ds = ctx.sensitive_datasets(p)[0]
    inj = injection("bulk_exfiltration", n, p.tenant, "burst", [("principal", p.name)],
                    f"{p.name} exported {ctx.world.datasets[ds].name} at hundreds of times their usual volume")
    t = ctx.at_local(p.tenant, ctx.weekday_day(), ctx.work_hour())
    return spaced_events(ctx, inj, t, int(ctx.rng.integers(4, 9)), 90_000,
                         lambda _: data_row(ctx, p, ds, op="export",
                                            rows=int(p.rows_scale * ctx.rng.uniform(150, 400))))


def cross_department_restricted(ctx: Context, n: int) -> Injection:
    depts = ("sales", "marketing", "support", "engineering")
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and p.department in depts)
    ds = ctx.pick([i for i, d in enumerate(ctx.world.datasets)
                   if d.tenant == p.tenant and d.sensitivity == "restricted" and d.owner_department != p.department])
    d = ctx.world.datasets[ds]
    inj = injection("cross_department_restricted", n, p.tenant, "burst", [("principal", p.name), ("dataset", d.name)],
                    f"{p.name} ({p.department}) read restricted {d.name} owned by {d.owner_department}")
    t = ctx.at_local(p.tenant, ctx.weekday_day(), ctx.work_hour())
    return spaced_events(ctx, inj, t, int(ctx.rng.integers(3, 7)), 120_000,
                         lambda _: data_row(ctx, p, ds, op="read", rows=int(p.rows_scale * ctx.rng.uniform(0.5, 3))))


def off_hours_confidential(ctx: Context, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and bool(ctx.sensitive_datasets(p)))
    ds = ctx.sensitive_datasets(p)[0]
    inj = injection("off_hours_confidential", n, p.tenant, "burst", [("principal", p.name)],
                    f"{p.name} read {ctx.world.datasets[ds].name} in the middle of the night")
    t = ctx.at_local(p.tenant, ctx.attack_day(), float(ctx.rng.uniform(1.5, 4.0)))
    return spaced_events(ctx, inj, t, int(ctx.rng.integers(4, 9)), 100_000,
                         lambda _: data_row(ctx, p, ds, op="read", rows=int(p.rows_scale * ctx.rng.uniform(1, 4)),
                                            ip=ctx.external_ip()))


def training_data_poisoning(ctx: Context, n: int) -> Injection:
    depts = ("sales", "marketing", "finance", "legal")
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and p.department in depts)
    ds = ctx.pick([i for i, d in enumerate(ctx.world.datasets) if d.tenant == p.tenant and d.training])
    d = ctx.world.datasets[ds]
    inj = injection("training_data_poisoning", n, p.tenant, "burst", [("principal", p.name), ("dataset", d.name)],
                    f"{p.name} ({p.department}) wrote to training dataset {d.name}, which only pipelines write")
    t = ctx.at_local(p.tenant, ctx.weekday_day(), ctx.work_hour())
    return spaced_events(ctx, inj, t, int(ctx.rng.integers(5, 12)), 60_000,
                         lambda _: data_row(ctx, p, ds, op="write", rows=int(ctx.rng.integers(50, 5000)),
                                            purpose="model-training"))


INJECTED_TOOLS = {  # what an injected prompt makes an agent do: privileged tools outside its normal chain
    "create_api_key": ("iam", "admin", "critical"),
    "export_customer_data": ("warehouse", "write", "high"),
    "read_secrets": ("vault", "admin", "critical"),
    "send_email": ("email", "write", "medium"),
}


def prompt_injection(ctx: Context, n: int) -> Injection:
    a = ctx.pick(ctx.world.agents, lambda a: "fetch_url" in TOOLS[a.agent_type])
    principal = ctx.principal(a.principals[0]).name
    session = ctx.session_id()
    inj = injection("prompt_injection", n, a.tenant, "burst", [("agent", a.agent_id)],
                    f"Agent {a.agent_id} read untrusted web content and then took privileged actions it "
                    f"triggered")
    t = ctx.at_local(a.tenant, ctx.weekday_day(), ctx.work_hour())
    first = next(iter(TOOLS[a.agent_type]))
    sys0, priv0, risk0, _ = TOOLS[a.agent_type][first]
    r = agent_row(ctx, a, session=session, principal=principal, action=first, system=sys0, privilege=priv0,
                  risk=risk0, approval="not_required", triggered_by="user")
    inj.add(t, r)
    t += 4_000
    r = agent_row(ctx, a, session=session, principal=principal, action="fetch_url", system="web", privilege="read",
                  risk="low", approval="not_required", triggered_by="agent", untrusted=True, parent=r["event_id"])
    inj.add(t, r)
    tools = list(INJECTED_TOOLS)
    injected = [tools[(i + n) % len(tools)] for i in range(int(ctx.rng.integers(2, 5)))]
    return injected_actions(ctx, inj, a, session=session, principal=principal, after=r, t=t, tools=injected,
                            gap_ms=(2_000, 9_000))


def injected_actions(ctx: Context, inj: Injection, a: Agent, *, session: str, principal: str, after: dict, t: int,
                     tools: list[str], gap_ms: tuple[int, int]) -> Injection:
    """``a`` runs ``tools`` (of :data:`INJECTED_TOOLS`) one after another, triggered by the content it read in
    ``after``, each a uniform ``gap_ms`` after the one before."""
    r = after
    for tool in tools:
        t += int(ctx.rng.integers(*gap_ms))
        system, priv, risk = INJECTED_TOOLS[tool]
        r = agent_row(ctx, a, session=session, principal=principal, action=tool, system=system, privilege=priv,
                      risk=risk, approval="not_required", triggered_by="external_content", parent=r["event_id"])
        inj.add(t, r)
    return inj.finish()


def approval_bypassed(ctx: Context, n: int) -> Injection:
    a = ctx.pick(ctx.world.agents, lambda a: a.agent_type in ("ops-automation", "data-analyst"))
    principal = ctx.principal(a.principals[0]).name
    session = ctx.session_id()
    high = [(tool, spec) for tool, spec in TOOLS[a.agent_type].items() if spec[2] in ("high", "critical")]
    inj = injection("approval_bypassed", n, a.tenant, "burst", [("agent", a.agent_id)],
                    f"Agent {a.agent_id} ran high-risk actions with approval bypassed")
    t = ctx.at_local(a.tenant, ctx.attack_day(), float(ctx.rng.uniform(0, 24)))
    parent = None
    for i in range(int(ctx.rng.integers(1, 4))):
        tool, (system, priv, risk, _) = high[i % len(high)]
        r = agent_row(ctx, a, session=session, principal=principal, action=tool, system=system, privilege=priv,
                      risk=risk, approval="bypassed", triggered_by="user" if i == 0 else "agent", parent=parent)
        inj.add(t, r)
        parent = r["event_id"]
        t += int(ctx.rng.integers(3_000, 30_000))
    return inj.finish()


def runaway_agent(ctx: Context, n: int) -> Injection:
    a = ctx.pick(ctx.world.agents)
    principal = ctx.principal(a.principals[0]).name
    session = ctx.session_id()
    tools = list(TOOLS[a.agent_type].items())[:2]
    inj = injection("runaway_agent", n, a.tenant, "burst", [("agent", a.agent_id)],
                    f"Agent {a.agent_id} looped: hundreds of actions per minute with exploding token use")
    t = ctx.at_local(a.tenant, ctx.attack_day(), float(ctx.rng.uniform(0, 24)))
    parent = None
    steps = int(ctx.rng.integers(400, 700))
    for i in range(steps):
        tool, (system, priv, risk, _) = tools[i % 2]
        r = agent_row(ctx, a, session=session, principal=principal, action=tool, system=system, privilege=priv,
                      risk=risk, approval="approved" if risk in ("high", "critical") else "not_required",
                      triggered_by="user" if i == 0 else "agent", parent=parent, tokens=1.0 + 8.0 * i / steps,
                      outcome="error" if ctx.rng.random() < 0.3 else "success")
        inj.add(t, r)
        parent = r["event_id"]
        t += int(ctx.rng.integers(200, 1_500))
    return inj.finish()


def slow_drip_exfiltration(ctx: Context, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human" and bool(ctx.sensitive_datasets(p)))
    ds = ctx.sensitive_datasets(p)[0]
    inj = injection("slow_drip_exfiltration", n, p.tenant, "slow", [("principal", p.name)],
                    f"{p.name} read a little more of {ctx.world.datasets[ds].name} every day, "
                    "growing ~40% a day")
    first = 1 if ctx.days > 2 else 0
    for day in range(first, ctx.days):
        growth = 1.4 ** (day - first)
        for _ in range(4):
            t = ctx.at_local(p.tenant, day, ctx.work_hour())
            rows = int(p.rows_scale * 2.0 * growth * ctx.rng.uniform(0.8, 1.2))
            inj.add(t, data_row(ctx, p, ds, op="read", rows=rows))
    return inj.finish()


def access_probing(ctx: Context, n: int) -> Injection:
    p = ctx.pick(ctx.world.principals, lambda p: p.kind == "human")
    targets = [i for i, d in enumerate(ctx.world.datasets)
               if d.tenant == p.tenant and d.sensitivity in ("restricted", "confidential") and i not in p.datasets]
    inj = injection("access_probing", n, p.tenant, "burst", [("principal", p.name)],
                    f"{p.name} was denied access to many sensitive datasets in a few minutes (probing)")
    t = ctx.at_local(p.tenant, ctx.weekday_day(), ctx.work_hour())
    return denied_reads(ctx, inj, p, targets, t, int(ctx.rng.integers(20, 40)), 8_000.0)


def denied_reads(ctx: Context, inj: Injection, p: Principal, targets: list[int], t: int, count: int,
                 mean_gap_ms: float) -> Injection:
    """``count`` refused reads by ``p`` cycling over ``targets`` from ``t``, ``mean_gap_ms`` apart on average."""
    return spaced_events(ctx, inj, t, count, mean_gap_ms,
                         lambda i: data_row(ctx, p, targets[i % len(targets)], op="read", rows=0, granted=False))


def spaced_events(ctx: Context, inj: Injection, t: int, count: int, mean_gap_ms: float,
                  row: Callable[[int], dict]) -> Injection:
    """Add ``count`` events ``row(0)``, ``row(1)``, ... to ``inj`` after ``t``, exponentially spaced
    ``mean_gap_ms`` apart on average (each gap is drawn before its row), and finish it."""
    for i in range(count):
        t += int(ctx.rng.exponential(mean_gap_ms))
        inj.add(t, row(i))
    return inj.finish()


SCENARIOS: dict[str, Callable[[Context, int], Injection]] = {
    "leaked_api_key": leaked_api_key,
    "credential_stuffing": credential_stuffing,
    "model_extraction": model_extraction,
    "new_scope_use": new_scope_use,
    "bulk_exfiltration": bulk_exfiltration,
    "cross_department_restricted": cross_department_restricted,
    "off_hours_confidential": off_hours_confidential,
    "training_data_poisoning": training_data_poisoning,
    "prompt_injection": prompt_injection,
    "approval_bypassed": approval_bypassed,
    "runaway_agent": runaway_agent,
    "slow_drip_exfiltration": slow_drip_exfiltration,
    "access_probing": access_probing,
}


def inject(world: World, seed: int, start_ms: int, days: int, instances: int,
           scenarios: list[str] | None = None) -> list[Injection]:
    """All attack instances of a run, each scenario ``instances`` times (seed-determined)."""
    out = []
    taken: set[tuple[str, str]] = set()
    for name in scenarios or list(SCENARIOS):
        fn = SCENARIOS[name]
        for i in range(instances):
            rng = np.random.default_rng([seed, 2, list(SCENARIOS).index(name), i])
            out.append(fn(Context(world, rng, start_ms, days, taken), i))
    return out
