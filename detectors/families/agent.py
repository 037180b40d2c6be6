"""Agent-execution detectors: approval bypass, prompt-injection-driven privileged actions, new actions, runaways.

They share one feature stage over a batch's ``AgentColumns``: each session's untrusted-input
mark and step count, and each agent type's experience (events, actions, session lengths).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors.alerting import Finding
from detectors.columns import AgentColumns
from detectors.families.common import DAY, HOUR, rank_in_batch
from detectors.kernels import after_mark, burst_vs_baseline, pair, session_runaway
from detectors.registry import Column, Context, Detector, Family, NoveltySet, Table, option
from detectors.state import State
from schemas.alerts import Feature

_NO_TIME = np.iinfo(np.int64).min  # a session never marked
_NO_LENGTHS = np.zeros(1024, dtype=np.int64)  # an agent type's session lengths before its first session
UNTRUSTED_WINDOW_MS = HOUR  # a privileged step this soon after the session read untrusted input follows from it
RUNAWAY_BASELINE_TAU_MS = 86_400_000.0  # time constant of an agent's baseline action rate (a day)
RUNAWAY_RATE_FLOOR = 2.0  # kernels.burst_vs_baseline: the least expected rate an agent is judged against
MAX_UNTRUSTED_SESSIONS = 200_000  # above this many marked sessions, marks older than a day are forgotten
MAX_SESSION_COUNTERS = 500_000  # above this many session step counters, the oldest half is forgotten


@dataclass(frozen=True)
class AgentConfig:
    runaway_tau_s: float = option(120.0, "time constant of an agent's current action rate")
    runaway_min: float = option(60.0, "actions (decayed count) below which no rate explosion is raised")
    runaway_session_steps: int = option(30, "session steps before a session's length is judged")
    runaway_ratio: float = option(8.0, "current action rate over the agent's daily mean rate that is a runaway "
                                       "(a busy agent peaks well below it, and its sessions overlap)")
    agent_type_warm_events: int = option(200, "events of an agent type before its habits are trusted")


def stage(ctx: Context, c: AgentColumns) -> list[Finding]:
    """Every agent_execution detector over one batch (findings in any order; the engine sorts them)."""
    cfg, s, v = ctx.config, ctx.tables, ctx.tables.vocabs
    s.agent.fit(len(v.agent))
    a = s.agent
    out: list[Finding] = []
    # high-risk actions without approval
    hi = c.risk >= 2
    for i in np.flatnonzero((c.bypassed & (c.risk >= 1)) | (hi & c.unapproved)):
        e = c.events[i]
        out.append(ctx.finding("agent.approval_bypass", c, i, e.agent_id, e.principal,
                               0.95 if c.bypassed[i] and c.risk[i] >= 3 else (0.85 if c.bypassed[i] else 0.75),
                               [Feature(name="risk_level", value=float(c.risk[i])),
                                Feature(name="approval_bypassed", value=float(c.bypassed[i]), baseline=0.0)],
                               f"Agent {e.agent_id} ran {e.risk_level}-risk action {e.action} on {e.target_system} "
                               f"with approval '{e.approval}'."))
    # privileged actions triggered by (or right after) untrusted content
    sessions = s.untrusted_sessions
    sid, names = c.block.factor("session_id")  # per event, its session's index in names (first appearance)
    marked = np.array([sessions.get(x, _NO_TIME) for x in names], dtype=np.int64)
    after_untrusted = after_mark(sid, c.ts, c.untrusted, marked, marked != _NO_TIME, UNTRUSTED_WINDOW_MS)
    for j in np.unique(sid[c.untrusted]).tolist():
        sessions[names[j]] = int(marked[j])
    priv = c.privilege >= 1
    # agent-type novelty: an action (with privilege) this agent type never took
    new_ta = ctx.novel("type_action", pair(c.agent_type, c.action))
    types, inv, counts = np.unique(c.agent_type, return_inverse=True, return_counts=True)
    seen_before = np.array([s.type_events.get(t, 0) for t in types.tolist()], dtype=np.int64)
    type_n = seen_before[inv] + rank_in_batch(c.agent_type)
    for t, n in zip(types.tolist(), (seen_before + counts).tolist(), strict=True):
        s.type_events[t] = n
    type_warm = type_n >= cfg.agent_type_warm_events
    for i in np.flatnonzero(priv & (c.external | (after_untrusted & new_ta & type_warm))):
        e = c.events[i]
        why = "triggered by external content" if c.external[i] else "right after the session read untrusted input"
        out.append(ctx.finding("agent.untrusted_privileged", c, i, e.agent_id, e.principal,
                               0.95 if c.privilege[i] == 2 else 0.85,
                               [Feature(name="privilege", value=float(c.privilege[i])),
                                Feature(name="triggered_by_external", value=float(c.external[i]), baseline=0.0),
                                Feature(name="after_untrusted_input", value=float(after_untrusted[i]), baseline=0.0)],
                               f"Agent {e.agent_id} ({e.agent_type}) took {e.privilege} action {e.action} on "
                               f"{e.target_system} {why}: a likely prompt injection."))
    for i in np.flatnonzero(priv & new_ta & type_warm):
        e = c.events[i]
        out.append(ctx.finding("agent.new_privileged_action", c, i, e.agent_id, e.principal, 0.7,
                               [Feature(name="type_action_first_use", value=1.0, baseline=0.0),
                                Feature(name="privilege", value=float(c.privilege[i]))],
                               f"Agent {e.agent_id} took {e.privilege} action {e.action} on {e.target_system}, "
                               f"which no {e.agent_type} agent took in {int(type_n[i])} earlier steps."))
    # runaway: a session far longer than any its agent type has run, or an action-rate explosion
    # (the longest length at least two sessions of a type reached: one runaway session cannot raise it)
    steps = s.session_steps
    n_steps = np.array([steps.get(x, 0) for x in names], dtype=np.int64)
    flagged = np.array([x in s.runaway_sessions for x in names], dtype=np.bool_)
    was_flagged = flagged.copy()
    hists = np.stack([s.type_lengths.get(t, _NO_LENGTHS) for t in types.tolist()])
    longest_of = np.array([s.type_longest.get(t, 0) for t in types.tolist()], dtype=np.int64)
    step_n, long_session = session_runaway(sid, inv, type_warm, n_steps, flagged, hists, longest_of,
                                           cfg.runaway_session_steps)
    steps.update(zip(names, n_steps.tolist(), strict=True))
    s.runaway_sessions.update(names[j] for j in np.flatnonzero(flagged & ~was_flagged).tolist())
    for t, h, top in zip(types.tolist(), hists, longest_of.tolist(), strict=True):
        s.type_lengths[t] = h.copy()  # its own array, not a view keeping this batch's stack alive
        if top != s.type_longest.get(t, 0):
            s.type_longest[t] = top
    for i in np.flatnonzero(long_session):
        e = c.events[i]
        longest = s.type_longest.get(int(c.agent_type[i]), 0)
        out.append(ctx.finding("agent.runaway", c, i, e.agent_id, e.principal, min(1.0, 0.6 + step_n[i] / 500),
                               [Feature(name="session_steps", value=float(step_n[i]), baseline=float(longest)),
                                Feature(name="tokens", value=float(c.tokens[i]))],
                               f"Agent {e.agent_id} has taken {step_n[i]} steps in session {e.session_id}; normal "
                               f"{e.agent_type} sessions before ran longer than {longest}."))
    fast, expected = burst_vs_baseline(c.agent, c.ts, a["fast"], a["fast_last"], a["slow"], a["slow_last"],
                                       a["since"], cfg.runaway_tau_s * 1000, RUNAWAY_BASELINE_TAU_MS,
                                       cfg.runaway_ratio, RUNAWAY_RATE_FLOOR, cfg.runaway_min)
    for i in np.flatnonzero((fast >= cfg.runaway_min) & (fast >= cfg.runaway_ratio * expected)):
        e = c.events[i]
        out.append(ctx.finding("agent.runaway", c, i, e.agent_id, e.principal, min(1.0, 0.6 + fast[i] / 300),
                               [Feature(name="actions_per_min", value=round(float(fast[i]), 1),
                                        baseline=round(float(expected[i]), 2)),
                                Feature(name="tokens", value=float(c.tokens[i]))],
                               f"Agent {e.agent_id} is running about {fast[i]:.0f} actions a minute, "
                               f"{fast[i] / expected[i]:.0f}x its usual {expected[i]:.1f} (session {e.session_id})."))
    if len(sessions) > MAX_UNTRUSTED_SESSIONS:  # bounded: forget untrusted marks older than a day
        horizon = int(c.ts.max()) - DAY
        s.untrusted_sessions = {k: t for k, t in sessions.items() if t >= horizon}
    if len(steps) > MAX_SESSION_COUNTERS:  # bounded: keep the newest half of the session step counters
        s.session_steps = dict(list(steps.items())[len(steps) // 2:])
        s.runaway_sessions = {x for x in s.runaway_sessions if x in s.session_steps}
    return out


def expire(tables: State, day_start: int, config: Any) -> None:
    """Forget the sessions idle for ``session_idle_hours``: their step counts, marks and idle clock."""
    if config.session_idle_hours > 0:
        cut = day_start - int(config.session_idle_hours * HOUR)
        gone = [sid for sid, t in tables.session_last.items() if t < cut]
        for sid in gone:
            del tables.session_last[sid]
            tables.session_steps.pop(sid, None)
            tables.untrusted_sessions.pop(sid, None)
            tables.runaway_sessions.discard(sid)


_SESSION_EVICTION = "dropped with its session once idle past `session_idle_hours` (and bounded in size)"

FAMILY = Family(
    name="agent",
    kind="agent_execution",
    doc="Per-agent and per-session rules over agent steps: approvals, untrusted input in a session, what "
        "an agent type usually does and how long its sessions run.",
    config=AgentConfig,
    stage=stage,
    expire=expire,
    detectors=(
        Detector(
            "agent.untrusted_privileged", "Privileged agent action driven by untrusted content", "agent",
            ("atlas:AML.T0051.001", "owasp-llm:LLM01", "owasp-llm:LLM06"),
            "A privileged action (write or admin) triggered by external content, or taken within an hour "
            "after its session read untrusted input when its agent type (warm after `agent_type_warm_events` "
            "events) never took that action before: the shape of an indirect prompt injection."),
        Detector(
            "agent.approval_bypass", "High-risk agent action without approval", "agent",
            ("atlas:AML.T0053", "owasp-llm:LLM06"),
            "An action whose approval was bypassed (at medium risk or above), or a high- or critical-risk "
            "action without the approval it needs. No learning: the event says it. Critical bypasses score "
            "highest."),
        Detector(
            "agent.new_privileged_action", "Agent took a privileged action its type never takes", "agent",
            ("atlas:AML.T0053", "owasp-llm:LLM06"),
            "Remembers which actions each agent type took. Once the type is warm (`agent_type_warm_events` "
            "events), a privileged action no agent of the type took before is raised."),
        Detector(
            "agent.runaway", "Runaway agent: action rate explosion", "agent",
            ("atlas:AML.T0034", "owasp-llm:LLM10"),
            "Two signals. A session that passes `runaway_session_steps` and runs longer than the longest length "
            "at least two earlier sessions of its agent type reached (one runaway session cannot raise the "
            "bar). Or an agent whose decayed action count (`runaway_tau_s`) reaches `runaway_min` and "
            "`runaway_ratio` times its daily mean rate."),
    ),
    columns=(
        Column("agent", "fast", 0, "decayed action count, `runaway_tau_s`"),
        Column("agent", "fast_last", 0, "time of the fast count's last update"),
        Column("agent", "slow", 0, "decayed baseline action count (a day)"),
        Column("agent", "slow_last", 0, "time of the baseline's last update"),
        Column("agent", "since", 0, "start of the baseline's learning"),
    ),
    novelty=(NoveltySet("type_action", (None, None), "actions (tokens) each agent type (token) took"),),
    tables=(
        Table("type_events", "agent type (token) -> events seen", "not entity-keyed: agent types are tokens"),
        Table("untrusted_sessions", "session -> time of its last untrusted-input step", _SESSION_EVICTION),
        Table("session_steps", "session -> steps so far", _SESSION_EVICTION),
        Table("type_lengths", "agent type (token) -> histogram of session lengths reached",
              "not entity-keyed: agent types are tokens"),
        Table("type_longest", "agent type (token) -> longest length two sessions reached",
              "not entity-keyed: agent types are tokens"),
        Table("runaway_sessions", "sessions flagged as runaway (not learned)", _SESSION_EVICTION),
    ),
)
