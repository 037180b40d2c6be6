"""The simulated organisation: tenants, departments, people, API keys, datasets, agents.

Everything is drawn once from the seed, so the same seed always gives the same world.
Entities carry their *habits* (usual IPs, scopes they actually use, datasets they read,
typical volumes) so benign traffic is consistent per entity and attacks can break them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEPARTMENTS = ("engineering", "data-science", "finance", "hr", "sales", "marketing", "support", "security", "legal")

# Route template -> (HTTP method, scope it needs, uses a model, typical tokens_in, tokens_out)
ENDPOINTS: dict[str, tuple[str, str, bool, int, int]] = {
    "/v1/chat/completions": ("POST", "inference:chat", True, 900, 350),
    "/v1/embeddings": ("POST", "inference:embed", True, 400, 0),
    "/v1/completions": ("POST", "inference:complete", True, 300, 200),
    "/v1/moderations": ("POST", "inference:moderate", True, 200, 0),
    "/v1/models": ("GET", "models:read", False, 0, 0),
    "/v1/files/{file_id}": ("GET", "files:read", False, 0, 0),
    "/v1/files": ("POST", "files:write", False, 0, 0),
    "/v1/fine_tuning/jobs": ("POST", "fine_tune:write", False, 0, 0),
    "/v1/batches": ("POST", "inference:batch", True, 5000, 2000),
    "/v1/admin/keys": ("POST", "admin:keys", False, 0, 0),
    "/v1/admin/users/{user_id}": ("DELETE", "admin:users", False, 0, 0),
}
SCOPE_ENDPOINTS: dict[str, list[str]] = {}
for _route, (_m, _scope, *_rest) in ENDPOINTS.items():
    SCOPE_ENDPOINTS.setdefault(_scope, []).append(_route)

MODELS = ("llm-large-2026", "llm-small-2026", "embed-v3", "moderation-v2", "code-llm-2026")
USER_AGENTS = (
    "python-requests/2.32.3",
    "openai-python/1.54.0",
    "Go-http-client/2.0",
    "node-fetch/3.3.2",
    "Mozilla/5.0 (X11; Linux x86_64) InternalPortal/4.2",
    "langchain/0.3.7",
    "curl/8.5.0",
    "java-http-client/21",
)

# Agent types: tool -> (target system, privilege, risk, consumes external content)
TOOLS: dict[str, dict[str, tuple[str, str, str, bool]]] = {
    "support-assistant": {
        "search_kb": ("knowledge-base", "read", "low", False),
        "read_ticket": ("helpdesk", "read", "low", False),
        "fetch_url": ("web", "read", "low", True),
        "draft_reply": ("helpdesk", "write", "medium", False),
        "send_email": ("email", "write", "medium", False),
        "close_ticket": ("helpdesk", "write", "low", False),
    },
    "code-assistant": {
        "read_repo": ("git", "read", "low", False),
        "fetch_url": ("web", "read", "low", True),
        "run_tests": ("ci", "write", "low", False),
        "comment_issue": ("git", "write", "low", False),
        "open_pull_request": ("git", "write", "medium", False),
        "merge_pull_request": ("git", "write", "high", False),
    },
    "data-analyst": {
        "list_tables": ("warehouse", "read", "low", False),
        "run_query": ("warehouse", "read", "medium", False),
        "create_chart": ("bi", "write", "low", False),
        "export_csv": ("warehouse", "write", "high", False),
    },
    "ops-automation": {
        "read_metrics": ("monitoring", "read", "low", False),
        "read_logs": ("logging", "read", "low", False),
        "restart_service": ("kubernetes", "write", "high", False),
        "scale_deployment": ("kubernetes", "write", "high", False),
        "rotate_secret": ("vault", "admin", "critical", False),
    },
    "research-agent": {
        "web_search": ("web", "read", "low", True),
        "fetch_url": ("web", "read", "low", True),
        "summarize": ("llm", "read", "low", False),
        "write_note": ("notes", "write", "low", False),
    },
    # agents whose normal work is reading untrusted content and acting on it (varied worlds only)
    "inbox-assistant": {
        "read_email": ("email", "read", "low", True),
        "search_kb": ("knowledge-base", "read", "low", False),
        "draft_reply": ("email", "write", "medium", False),
        "send_email": ("email", "write", "medium", False),
        "create_ticket": ("helpdesk", "write", "low", False),
        "forward_invoice": ("finance", "write", "high", False),
    },
    "ticket-triage": {
        "read_ticket": ("helpdesk", "read", "low", True),
        "classify": ("llm", "read", "low", False),
        "assign_ticket": ("helpdesk", "write", "low", False),
        "update_crm": ("crm", "write", "medium", False),
        "issue_refund": ("payments", "write", "high", False),
    },
    "browser-agent": {
        "browse": ("web", "read", "low", True),
        "download_file": ("web", "read", "low", True),
        "summarize": ("llm", "read", "low", False),
        "fill_form": ("web", "write", "medium", False),
        "submit_order": ("procurement", "write", "high", False),
    },
}
# Normal tool sequences: first-order transitions (None = session start / end).
TRANSITIONS: dict[str, dict[str | None, dict[str | None, float]]] = {
    "support-assistant": {
        None: {"read_ticket": 0.8, "search_kb": 0.2},
        "read_ticket": {"search_kb": 0.6, "draft_reply": 0.3, "fetch_url": 0.1},
        "search_kb": {"search_kb": 0.2, "draft_reply": 0.6, "fetch_url": 0.2},
        "fetch_url": {"draft_reply": 0.7, "search_kb": 0.3},
        "draft_reply": {"send_email": 0.8, "draft_reply": 0.2},
        "send_email": {"close_ticket": 0.7, None: 0.3},
        "close_ticket": {None: 1.0},
    },
    "code-assistant": {
        None: {"read_repo": 1.0},
        "read_repo": {"read_repo": 0.4, "run_tests": 0.3, "fetch_url": 0.1, "comment_issue": 0.2},
        "fetch_url": {"read_repo": 1.0},
        "run_tests": {"open_pull_request": 0.5, "read_repo": 0.4, None: 0.1},
        "comment_issue": {None: 0.6, "read_repo": 0.4},
        "open_pull_request": {None: 0.8, "merge_pull_request": 0.2},
        "merge_pull_request": {None: 1.0},
    },
    "data-analyst": {
        None: {"list_tables": 0.6, "run_query": 0.4},
        "list_tables": {"run_query": 1.0},
        "run_query": {"run_query": 0.5, "create_chart": 0.35, "export_csv": 0.05, None: 0.1},
        "create_chart": {None: 0.7, "run_query": 0.3},
        "export_csv": {None: 1.0},
    },
    "ops-automation": {
        None: {"read_metrics": 0.7, "read_logs": 0.3},
        "read_metrics": {"read_logs": 0.5, None: 0.4, "scale_deployment": 0.1},
        "read_logs": {None: 0.6, "restart_service": 0.15, "read_metrics": 0.2, "rotate_secret": 0.05},
        "restart_service": {"read_metrics": 1.0},
        "scale_deployment": {"read_metrics": 1.0},
        "rotate_secret": {None: 1.0},
    },
    "research-agent": {
        None: {"web_search": 1.0},
        "web_search": {"fetch_url": 0.8, "web_search": 0.2},
        "fetch_url": {"fetch_url": 0.3, "summarize": 0.7},
        "summarize": {"write_note": 0.7, "web_search": 0.3},
        "write_note": {None: 1.0},
    },
    "inbox-assistant": {
        None: {"read_email": 1.0},
        "read_email": {"read_email": 0.3, "search_kb": 0.2, "draft_reply": 0.3, "create_ticket": 0.15,
                       "forward_invoice": 0.05},
        "search_kb": {"draft_reply": 1.0},
        "draft_reply": {"send_email": 0.9, None: 0.1},
        "send_email": {None: 0.6, "read_email": 0.4},
        "create_ticket": {None: 0.5, "read_email": 0.5},
        "forward_invoice": {None: 1.0},
    },
    "ticket-triage": {
        None: {"read_ticket": 1.0},
        "read_ticket": {"classify": 0.8, "read_ticket": 0.2},
        "classify": {"assign_ticket": 0.7, "update_crm": 0.2, "issue_refund": 0.1},
        "assign_ticket": {None: 0.6, "read_ticket": 0.4},
        "update_crm": {None: 0.7, "read_ticket": 0.3},
        "issue_refund": {None: 1.0},
    },
    "browser-agent": {
        None: {"browse": 1.0},
        "browse": {"browse": 0.4, "download_file": 0.15, "summarize": 0.3, "fill_form": 0.15},
        "download_file": {"summarize": 1.0},
        "summarize": {None: 0.5, "browse": 0.3, "fill_form": 0.2},
        "fill_form": {None: 0.6, "submit_order": 0.2, "browse": 0.2},
        "submit_order": {None: 1.0},
    },
}
# Types whose normal work is acting on untrusted content (their writes are often triggered by it).
UNTRUSTED_WORK_TYPES = ("inbox-assistant", "ticket-triage", "browser-agent")
AGENT_DEPARTMENT = {
    "support-assistant": "support",
    "code-assistant": "engineering",
    "data-analyst": "data-science",
    "ops-automation": "engineering",
    "research-agent": "marketing",
    "inbox-assistant": "finance",
    "ticket-triage": "support",
    "browser-agent": "sales",
}


@dataclass(frozen=True)
class Tenant:
    name: str
    utc_offset_h: int  # where most of its people work
    ip_prefix: str  # its corporate egress range
    always_on: bool = False  # works around the clock (no office hours)
    nat_pool: tuple[str, ...] = ()  # egress addresses its people's data access rotates through (empty: fixed IPs)


@dataclass
class Principal:
    name: str
    tenant: str
    department: str
    kind: str  # "human" | "service"
    ips: list[str]
    datasets: list[int]  # indices into World.datasets it normally touches
    rows_scale: float  # typical rows per read (log-normal median)
    weight: float  # share of activity (heavy-tailed)
    join_day: int = 0  # run day it first appears (new joiners)
    on_call_nights: tuple[int, ...] = ()  # run days whose local night it works
    nightly_rows: float = 0.0  # rows per nightly batch read as a multiple of rows_scale (0: no batch)


@dataclass
class ApiKey:
    key_id: str
    tenant: str
    owner: int  # index into World.principals
    granted: list[str]
    used: list[str]  # scopes actually used (subset of granted)
    ips: list[str]
    user_agent: str
    model: str
    weight: float
    join_day: int = 0  # run day it is first used
    ip_pool: tuple[str, ...] = ()  # NAT pool / proxy: every call from a random one of these
    models: tuple[str, ...] = ()  # model router: each call to a random one of these
    token_scale: float = 1.0  # typical request size relative to the route's


@dataclass
class Dataset:
    name: str
    tenant: str
    owner_department: str
    sensitivity: str
    training: bool


@dataclass
class Agent:
    agent_id: str
    tenant: str
    agent_type: str
    principals: list[int]  # on whose behalf it usually runs
    weight: float


@dataclass
class World:
    tenants: list[Tenant]
    principals: list[Principal] = field(default_factory=list)
    keys: list[ApiKey] = field(default_factory=list)
    datasets: list[Dataset] = field(default_factory=list)
    agents: list[Agent] = field(default_factory=list)

    def of_tenant(self, items: list, tenant: str) -> list[int]:
        return [i for i, x in enumerate(items) if x.tenant == tenant]


TENANTS = (
    Tenant("acme", -5, "10.20"),
    Tenant("globex", 1, "10.40"),
    Tenant("initech", 9, "10.60"),
)
FIRST = ("ana", "ben", "chen", "dara", "eli", "fatima", "gus", "hana", "ivan", "jun", "kofi", "lena", "mo",
         "nia", "omar", "priya", "quinn", "raj", "sofia", "tom", "uma", "vic", "wen", "yara", "zoe")
LAST = ("smith", "garcia", "kim", "okafor", "novak", "tanaka", "silva", "muller", "haddad", "ivanova", "lee",
        "brown", "rossi", "patel", "nguyen", "cohen")
DATASET_STEMS = {
    "engineering": ["service-logs", "incident-reports", "repo-metadata"],
    "data-science": ["feature-store", "experiment-results", "eval-sets"],
    "finance": ["ledger", "invoices", "payroll-summary"],
    "hr": ["employee-records", "compensation", "performance-reviews"],
    "sales": ["crm-accounts", "pipeline-forecast", "contracts"],
    "marketing": ["campaign-metrics", "web-analytics", "brand-assets"],
    "support": ["support-tickets", "chat-transcripts", "kb-articles"],
    "security": ["auth-logs", "vuln-scans", "threat-intel"],
    "legal": ["legal-holds", "nda-register", "litigation-docs"],
}
SENSITIVITY = {
    "employee-records": "restricted", "compensation": "restricted", "performance-reviews": "restricted",
    "payroll-summary": "restricted", "ledger": "confidential", "invoices": "confidential",
    "contracts": "confidential", "crm-accounts": "confidential", "chat-transcripts": "confidential",
    "support-tickets": "confidential", "auth-logs": "confidential", "vuln-scans": "restricted",
    "legal-holds": "restricted", "litigation-docs": "restricted", "nda-register": "confidential",
    "pipeline-forecast": "confidential", "threat-intel": "confidential",
    "brand-assets": "public", "kb-articles": "public", "web-analytics": "internal",
}
TRAINING_SETS = ("training/support-chat", "training/code-completion", "training/intent-classifier")


# The agent types and service accounts of the default world (the varied worlds draw from wider sets).
BASE_AGENT_TYPES = ("code-assistant", "data-analyst", "ops-automation", "research-agent", "support-assistant")
# name stem, department, the departments whose datasets it touches ("training" = the training sets)
SERVICE_ACCOUNTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("svc-ml-pipeline", "data-science", ("training", "data-science")),
    ("svc-etl", "engineering", ("engineering", "sales")),
    ("svc-support-bot", "support", ("support",)),
    ("svc-reporting", "finance", ("finance",)),
)


@dataclass(frozen=True)
class Shape:
    """How activity is spread over an organisation's entities (Pareto tails of the weights)."""

    people_alpha: float = 1.6
    key_alpha: float = 1.3
    agent_alpha: float = 1.5
    rows_median_log: float = 5.0


def build_world(seed: int, *, people_per_tenant: int = 60, keys_per_tenant: int = 24,
                agents_per_tenant: int = 10) -> World:
    """Draw the organisation from ``seed``."""
    rng = np.random.default_rng([seed, 0xC0FFEE])
    w = World(tenants=list(TENANTS))
    for t in w.tenants:
        add_tenant(w, t, rng, people=people_per_tenant, keys=keys_per_tenant, agents=agents_per_tenant)
    return w


def add_tenant(w: World, t: Tenant, rng: np.random.Generator, *, people: int, keys: int, agents: int,
               services: tuple[tuple[str, str, tuple[str, ...]], ...] = SERVICE_ACCOUNTS,
               agent_types: tuple[str, ...] = BASE_AGENT_TYPES, shape: Shape = Shape()) -> None:
    """Add one tenant's datasets, people, service accounts, API keys and agents to ``w``."""
    # datasets: every department's, plus the training sets (owned by data-science)
    ds_by_dept: dict[str, list[int]] = {}
    for dept, stems in DATASET_STEMS.items():
        for stem in stems:
            ds_by_dept.setdefault(dept, []).append(len(w.datasets))
            w.datasets.append(Dataset(f"{dept}/{stem}", t.name, dept, SENSITIVITY.get(stem, "internal"), False))
    training = []
    for name in TRAINING_SETS:
        training.append(len(w.datasets))
        w.datasets.append(Dataset(name, t.name, "data-science", "confidential", True))
    shared = [i for i, d in enumerate(w.datasets) if d.tenant == t.name and d.sensitivity in ("public", "internal")]

    # people: heavy-tailed activity; department sizes uneven
    dept_p = rng.dirichlet(np.full(len(DEPARTMENTS), 2.0))
    first_ix = len(w.principals)
    used_names: set[str] = set()
    for _ in range(people):
        dept = DEPARTMENTS[int(rng.choice(len(DEPARTMENTS), p=dept_p))]
        while True:
            name = f"{FIRST[rng.integers(len(FIRST))]}.{LAST[rng.integers(len(LAST))]}@{t.name}.example"
            if name not in used_names:
                used_names.add(name)
                break
        own = ds_by_dept[dept]
        n_own = int(rng.integers(1, len(own) + 1))
        ds = list(rng.choice(own, size=n_own, replace=False)) + list(
            rng.choice(shared, size=min(2, len(shared)), replace=False)
        )
        w.principals.append(Principal(
            name, t.name, dept, "human",
            ips=[f"{t.ip_prefix}.{rng.integers(1, 250)}.{rng.integers(2, 250)}"
                 for _ in range(int(rng.integers(1, 3)))],
            datasets=[int(x) for x in ds],
            rows_scale=float(np.exp(rng.normal(shape.rows_median_log, 1.2))),
            weight=float(rng.pareto(shape.people_alpha) + 0.2),
        ))
    # service accounts: pipelines that write training data, ETL, gateways
    for svc, dept, touches in services:
        ds = [i for d in touches for i in (training if d == "training" else ds_by_dept[d])]
        w.principals.append(Principal(
            f"{svc}@{t.name}.example", t.name, dept, "service",
            ips=[f"{t.ip_prefix}.0.{rng.integers(10, 99)}"],
            datasets=[int(x) for x in ds],
            rows_scale=float(np.exp(rng.normal(8.0, 0.8))),
            weight=float(rng.pareto(shape.people_alpha) + 1.0),
        ))
    staff = list(range(first_ix, len(w.principals)))

    # API keys: a few scopes each; about a third are over-permissioned (granted >> used)
    scopes = sorted(SCOPE_ENDPOINTS)
    inference = ["inference:chat", "inference:embed", "inference:complete", "inference:moderate"]
    for k in range(keys):
        owner = int(rng.choice(staff))
        used = [str(s) for s in rng.choice(inference, size=int(rng.integers(1, 3)), replace=False)]
        if rng.random() < 0.4:
            used.append("models:read")
        if rng.random() < 0.2:
            used.append("files:read")
        granted = list(used)
        if rng.random() < 0.35:  # over-permissioned: admin or fine-tune scopes never used
            granted += [str(s) for s in rng.choice(scopes, size=3, replace=False) if s not in granted]
        p = w.principals[owner]
        w.keys.append(ApiKey(
            key_id=f"key_{t.name[:3]}_{k:03d}_{rng.integers(16**6):06x}",
            tenant=t.name, owner=owner, granted=sorted(granted), used=sorted(used),
            ips=p.ips if p.kind == "human" else [f"{t.ip_prefix}.0.{rng.integers(100, 200)}"],
            user_agent=USER_AGENTS[int(rng.integers(len(USER_AGENTS)))],
            model=MODELS[int(rng.integers(3))],
            weight=float(rng.pareto(shape.key_alpha) + 0.1),
        ))
    # agents
    for a in range(agents):
        atype = agent_types[a % len(agent_types)]
        dept = AGENT_DEPARTMENT[atype]
        pool = [i for i in staff if w.principals[i].department == dept] or staff
        w.agents.append(Agent(
            agent_id=f"agt-{t.name[:3]}-{atype.split('-')[0]}-{a:02d}",
            tenant=t.name, agent_type=atype,
            principals=[int(x) for x in rng.choice(pool, size=min(3, len(pool)), replace=False)],
            weight=float(rng.pareto(shape.agent_alpha) + 0.3),
        ))
