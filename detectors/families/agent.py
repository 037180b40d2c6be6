"""Agent-execution detectors: approval bypass, prompt-injection-driven privileged actions, new actions,
runaways and tool loops.

They share one feature stage over a batch's ``AgentColumns``. What an agent does is judged against what its
agent TYPE does, learned online and scored as calibrated surprise (``detectors.calibration``): how often the
type takes each action (and how often that action fails), which transitions (previous action -> action) it
takes after its session read untrusted input, how often its agents start sessions and how long they run.
An agent type whose job is reading untrusted mail and replying learns that replying after untrusted input is
what it does; a tool it never uses after untrusted input stays surprising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detectors.alerting import Finding
from detectors.calibration import one_in, poisson_surprise_many, score_of
from detectors.columns import AgentColumns
from detectors.families.common import DAY, HOUR, rank_in_batch
from detectors.kernels import (
    after_mark,
    burst_vs_baseline,
    failure_run_surprise,
    habit_session_surprise,
    pair,
    session_chain,
    session_runaway,
)
from detectors.registry import Column, Context, Detector, Family, Table, option
from detectors.state import NO_TIME, State
from schemas.alerts import Feature

_NO_TIME = NO_TIME  # a session never marked
_NO_LENGTHS = np.zeros(1024, dtype=np.int64)  # an agent type's session lengths before its first session
UNTRUSTED_WINDOW_MS = HOUR  # a privileged step this soon after the session read untrusted input follows from it
RUNAWAY_BASELINE_TAU_MS = 86_400_000.0  # time constant of an agent's baseline session-start rate (a day)
MAX_UNTRUSTED_SESSIONS = 200_000  # above this many marked sessions, marks older than a day are forgotten
MAX_SESSION_COUNTERS = 500_000  # above this many sessions (or evidence entries), the oldest half is forgotten
_ID_BITS = 21  # token ids in a transition key: agent type, previous action, action (each < 2**21)
_ID_MASK = (1 << _ID_BITS) - 1


@dataclass(frozen=True)
class AgentConfig:
    runaway_tau_s: float = option(120.0, "time constant of an agent's current session-start rate")
    runaway_surprise: float = option(4.5, "surprise (-log10 Poisson tail) of an agent's current session-start "
                                          "count against its own daily rate that is a runaway (a floor)")
    runaway_rate_floor: float = option(0.05, "the least session starts per `runaway_tau_s` an agent is "
                                             "expected to make (a documented floor: a quiet agent is not judged "
                                             "against zero)")
    runaway_long_tau_s: float = option(1800.0, "time constant of an agent's sustained session-start rate (a second "
                                               "window: a runaway at a moderate rate for an hour)")
    runaway_nb_size: float = option(10.0, "the most session starts an agent's expected count is trusted as resting "
                                          "on (negative-binomial size): counts over half an hour vary more than a "
                                          "Poisson's")
    runaway_rhythm_days: float = option(7.0, "time constant of a tenant's learned hour-of-day rhythm of session "
                                             "starts (0: judge every hour at the daily rate)")
    runaway_session_steps: int = option(30, "session steps before a session's length is judged")
    agent_type_warm_events: int = option(200, "events of an agent type before its session lengths are trusted")
    agent_prior_weight: float = option(20.0, "observations an agent type's own rates are worth against all "
                                              "types' while it is young")
    untrusted_surprise: float = option(4.0, "surprise of a privileged step after untrusted input (its "
                                            "transition for the agent type) that is an alert (a floor)")
    injection_surprise: float = option(2.3, "surprise from which a privileged step triggered directly by external "
                                            "content, in a transition its agent type never took after untrusted "
                                            "input, is an alert (a floor: 1 in 200 by the type's own novelty rate; "
                                            "the prompt-injection signature)")
    new_action_surprise: float = option(3.3, "surprise of a privileged action new to the agent type (its "
                                             "novelty rate) that is an alert (a floor)")
    evidence_step_surprise: float = option(2.0, "the least surprise of a step (1 in 100) that adds to its session's "
                                                "evidence for `untrusted_surprise` (a transition new to the type) and "
                                                "`new_action_surprise`")
    loop_surprise: float = option(6.0, "surprise of a run of failures of one tool in a session (the type's "
                                       "failure rate of that tool) that is a tool loop (a floor)")
    loop_fail_rate_floor: float = option(0.01, "the least failure rate a tool is judged with (a floor: a tool "
                                               "that never failed is not judged against zero)")


class TenantRhythm:
    """Per tenant (id): its agents' session starts per UTC hour of the day, decayed (``kernels.burst_vs_baseline``).

    An agent is judged at its daily rate times its tenant's level at this hour, so an agent that works in its
    tenant's office hours is not a runaway every morning; hours of the tenant's own event time, whatever its
    time zone."""

    def __init__(self) -> None:
        self.hours = np.zeros((0, 24))
        self.last = np.zeros(0)

    def fit(self, n: int) -> None:
        grow = n - self.hours.shape[0]
        if grow > 0:
            self.hours = np.vstack([self.hours, np.zeros((grow, 24))])
            self.last = np.concatenate([self.last, np.zeros(grow)])


@dataclass
class Habits:
    """Counts of int64 keys (an agent type's actions or transitions) by dense index, per agent type
    (token id) and over all types: what ``kernels.habit_surprise`` and ``failure_run_surprise`` learn."""

    index: dict[int, int] = field(default_factory=dict)  # key -> dense index
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per key: learned observations
    calls: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per key: calls (failure rates)
    fails: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per key: failed calls
    group_n: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per type: learned observations
    group_once: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per type: keys seen exactly once
    totals: np.ndarray = field(default_factory=lambda: np.zeros(4))  # observations, keys once, calls, failures

    def dense(self, keys: np.ndarray, groups: int) -> np.ndarray:
        """Each key's dense index (new keys are added); group arrays sized for ``groups`` types."""
        uniq, inv = np.unique(keys, return_inverse=True)
        ix = np.array([self.index.setdefault(k, len(self.index)) for k in uniq.tolist()], dtype=np.int64)
        self.counts, self.calls, self.fails = (_grown(a, len(self.index)) for a in (self.counts, self.calls,
                                                                                      self.fails))
        self.group_n, self.group_once = (_grown(a, groups) for a in (self.group_n, self.group_once))
        return ix[inv] if keys.size else np.zeros(0, dtype=np.int64)


def _grown(a: np.ndarray, n: int) -> np.ndarray:
    return a if a.size >= n else np.concatenate([a, np.zeros(max(n, 2 * a.size) - a.size)])


def _evidence_of(store: dict[str, float], names: list[str]) -> np.ndarray:
    """The accumulated evidence of each of a batch's sessions (0 for one without rare steps yet)."""
    return np.fromiter((store.get(x, 0.0) for x in names), dtype=np.float64, count=len(names))


def _keep_evidence(store: dict[str, float], names: list[str], before: np.ndarray, after: np.ndarray) -> None:
    """Write back the evidence of the sessions whose rare steps added to it in this batch."""
    for j in np.flatnonzero(after != before).tolist():
        store[names[j]] = float(after[j])


def _asset(c: AgentColumns, i: int) -> int:
    """The asset weight of a step for ``score_of``: its risk level (0..3), at least its privilege."""
    return int(max(c.risk[i], c.privilege[i]))


def stage(ctx: Context, c: AgentColumns) -> list[Finding]:
    """Every agent_execution detector over one batch (findings in any order; the engine sorts them)."""
    cfg, s, v = ctx.config, ctx.tables, ctx.tables.vocabs
    s.agent.fit(len(v.agent))
    a = s.agent
    fam = s.family
    out: list[Finding] = []
    types, inv = np.unique(c.agent_type, return_inverse=True)
    type_names = v.token.names
    groups = len(v.token)
    # approvals: a bypass, or a high-risk step that ran without approval. A pending or denied approval
    # whose step ended blocked is the control working: no finding at all.
    ran_unapproved = (c.risk >= 2) & c.unapproved & ~c.blocked
    for i in np.flatnonzero((c.bypassed & (c.risk >= 1)) | ran_unapproved):
        e = c.events[i]
        out.append(ctx.finding("agent.approval_bypass", c, i, e.agent_id, e.principal,
                               0.95 if c.bypassed[i] and c.risk[i] >= 3 else (0.85 if c.bypassed[i] else 0.75),
                               [Feature(name="risk_level", value=float(c.risk[i])),
                                Feature(name="approval_bypassed", value=float(c.bypassed[i]), baseline=0.0)],
                               f"Agent {e.agent_id} ran {e.risk_level}-risk action {e.action} on {e.target_system} "
                               f"with approval '{e.approval}' (outcome {e.outcome})."))
    # the session's chain: each step's previous action and its run of failures of the same tool
    sid, names = c.block.factor("session_id")  # per event, its session's index in names (first appearance)
    ses = s.sessions
    rows = ses.rows(names)  # each of the batch's sessions' row in the sessions table
    latest = np.zeros(len(names), dtype=np.int64)
    np.maximum.at(latest, sid, np.arange(sid.size))
    ses["last"][rows] = c.ts[latest]  # the idle clock: the time of each session's latest-arriving step
    last_action, fail_run = ses["action"][rows], ses["fail_run"][rows]
    prev, run = session_chain(sid, c.action, c.failed, last_action, fail_run)
    ses["action"][rows], ses["fail_run"][rows] = last_action, fail_run
    # untrusted context: the step was triggered by external content, or its session read untrusted input
    marked = ses["marked"][rows]
    after_untrusted = after_mark(sid, c.ts, c.untrusted, marked, marked != _NO_TIME, UNTRUSTED_WINDOW_MS)
    ses["marked"][rows] = marked
    priv = c.privilege >= 1
    context = c.external | after_untrusted
    # transitions after untrusted input, per agent type: (type, previous action, action, triggered externally)
    trans = fam["agent_untrusted_transitions"]
    t_key = ((c.agent_type.astype(np.int64) & _ID_MASK) << (2 * _ID_BITS + 1)) | (
        ((prev + 1) & _ID_MASK) << (_ID_BITS + 1)) | ((c.action.astype(np.int64) & _ID_MASK) << 1) | c.external
    t_ix = trans.dense(t_key[context], groups)
    ctx_ix = np.flatnonzero(context)
    # a session's evidence: its transitions new to the type (a rare one the type has taken is one of its habits)
    t_store = fam["agent_untrusted_evidence"]
    t_before = _evidence_of(t_store, names)
    t_ev = t_before.copy()
    _, t_total, t_alert = habit_session_surprise(
        t_ix, c.agent_type[context].astype(np.int64), np.ones(t_ix.size, np.bool_), priv[context], False,
        trans.counts, trans.group_n, trans.group_once, trans.totals, cfg.agent_prior_weight, cfg.untrusted_surprise,
        sid[ctx_ix], t_ev, cfg.evidence_step_surprise, True, c.external[ctx_ix], cfg.injection_surprise)
    _keep_evidence(t_store, names, t_before, t_ev)
    for j in np.flatnonzero(t_alert).tolist():
        i, sup = int(ctx_ix[j]), float(t_total[j])
        e = c.events[i]
        before = type_names[prev[i]] if prev[i] >= 0 else "the session's start"
        why = "triggered by external content" if c.external[i] else "right after the session read untrusted input"
        signed = sup < cfg.untrusted_surprise  # alerted by the signature: new transition, external trigger
        f = ctx.finding("agent.untrusted_privileged", c, i, e.agent_id, e.principal, score_of(sup, _asset(c, i)),
                        [Feature(name="privilege", value=float(c.privilege[i])),
                         Feature(name="triggered_by_external", value=float(c.external[i]), baseline=0.0),
                         Feature(name="after_untrusted_input", value=float(after_untrusted[i]), baseline=0.0),
                         Feature(name="surprise", value=round(sup, 2),
                                 baseline=cfg.injection_surprise if signed else cfg.untrusted_surprise)],
                        f"Agent {e.agent_id} ({e.agent_type}) took {e.privilege} action {e.action} on "
                        f"{e.target_system} {why}, after {before}: " + (
                            f"no {e.agent_type} took this step after untrusted input in "
                            f"{int(trans.group_n[c.agent_type[i]])} such steps of the type (by its own rate of new "
                            f"steps, about {one_in(sup)}), and the content it read invoked it directly. "
                            f"The prompt-injection signature." if signed else
                            f"with the session's other rare steps after untrusted input, about {one_in(sup)} for a "
                            f"{e.agent_type} (baseline: {int(trans.group_n[c.agent_type[i]])} such steps of the "
                            f"type). A likely prompt injection."))
        if not signed:  # a signature's finding is judged by its score (not held to the budget's cold floor)
            f.surprise = sup
        out.append(f)
    # actions new to the agent type, judged by the type's own novelty rate; tool loops by its failure rates
    acts = fam["agent_type_actions"]
    a_ix = acts.dense(pair(c.agent_type, c.action), groups)
    every = np.ones(a_ix.size, np.bool_)
    n_store = fam["agent_new_action_evidence"]
    n_before = _evidence_of(n_store, names)
    n_ev = n_before.copy()
    _, n_total, n_alert = habit_session_surprise(
        a_ix, c.agent_type.astype(np.int64), every, priv, True, acts.counts, acts.group_n, acts.group_once,
        acts.totals, cfg.agent_prior_weight, cfg.new_action_surprise, sid, n_ev, cfg.evidence_step_surprise, False,
        np.zeros(a_ix.size, np.bool_), np.inf)
    _keep_evidence(n_store, names, n_before, n_ev)
    for i in np.flatnonzero(n_alert).tolist():
        e, sup = c.events[i], float(n_total[i])
        f = ctx.finding("agent.new_privileged_action", c, i, e.agent_id, e.principal, score_of(sup, _asset(c, i)),
                        [Feature(name="type_action_first_use", value=1.0, baseline=0.0),
                         Feature(name="privilege", value=float(c.privilege[i])),
                         Feature(name="surprise", value=round(sup, 2), baseline=cfg.new_action_surprise)],
                        f"Agent {e.agent_id} took {e.privilege} action {e.action} on {e.target_system}, which no "
                        f"{e.agent_type} agent took in {int(acts.group_n[c.agent_type[i]])} earlier steps: with the "
                        f"session's other new actions, about {one_in(sup)} for a {e.agent_type}.")
        f.surprise = sup
        out.append(f)
    l_surprise, l_hit = failure_run_surprise(a_ix, c.failed, run, acts.calls, acts.fails, acts.totals[2:],
                                             cfg.agent_prior_weight, cfg.loop_fail_rate_floor, cfg.loop_surprise)
    for i in np.flatnonzero(l_hit).tolist():
        e = c.events[i]
        sup = float(l_surprise[i])
        k = int(a_ix[i])
        rate = (acts.fails[k] + 1.0) / (acts.calls[k] + 2.0)
        f = ctx.finding("agent.tool_loop", c, i, e.agent_id, e.principal, score_of(sup, _asset(c, i)),
                        [Feature(name="consecutive_failures", value=float(run[i]), baseline=1.0),
                         Feature(name="tool_failure_rate", value=round(float(rate), 4))],
                        f"Agent {e.agent_id} ({e.agent_type}) called {e.action} on {e.target_system} and it failed "
                        f"{run[i]} times in a row in session {e.session_id}; {e.agent_type} calls of {e.action} fail "
                        f"about {rate:.1%} of the time, so this is about {one_in(sup)}.")
        f.surprise = sup
        out.append(f)
    # runaway: a session far longer than its agent type runs, or session starts far above the agent's own rate
    seen_before = np.array([s.type_events.get(t, 0) for t in types.tolist()], dtype=np.int64)
    type_n = seen_before[inv] + rank_in_batch(c.agent_type)
    for t, n in zip(types.tolist(), (seen_before + np.bincount(inv, minlength=types.size)).tolist(), strict=True):
        s.type_events[t] = n
    type_warm = type_n >= cfg.agent_type_warm_events
    n_steps, flagged = ses["steps"][rows], ses["runaway"][rows]
    hists = np.stack([s.type_lengths.get(t, _NO_LENGTHS) for t in types.tolist()])
    longest_of = np.array([s.type_longest.get(t, 0) for t in types.tolist()], dtype=np.int64)
    step_n, long_session = session_runaway(sid, inv, type_warm, n_steps, flagged, hists, longest_of,
                                           cfg.runaway_session_steps)
    ses["steps"][rows], ses["runaway"][rows] = n_steps, flagged
    for t, h, top in zip(types.tolist(), hists, longest_of.tolist(), strict=True):
        s.type_lengths[t] = h.copy()  # its own array, not a view keeping this batch's stack alive
        if top != s.type_longest.get(t, 0):
            s.type_longest[t] = top
    for i in np.flatnonzero(long_session):
        e = c.events[i]
        t = int(c.agent_type[i])
        longest = s.type_longest.get(t, 0)
        h = s.type_lengths[t]
        sup = length_surprise(h, int(step_n[i]))
        f = ctx.finding("agent.runaway", c, i, e.agent_id, e.principal, score_of(sup, 1),
                        [Feature(name="session_steps", value=float(step_n[i]), baseline=float(longest)),
                         Feature(name="tokens", value=float(c.tokens[i]))],
                        f"Agent {e.agent_id} has taken {step_n[i]} steps in session {e.session_id}; of "
                        f"{int(h[1])} earlier {e.agent_type} sessions none ran longer than {longest} (a session "
                        f"this long is about {one_in(sup)} for a {e.agent_type}, its sessions' tail beyond their "
                        f"longest taken as exponential).")
        f.surprise = float(sup)
        f.title = "Runaway agent: session far longer than its type's"
        out.append(f)
    first = np.flatnonzero(step_n == 1)  # session starts: hundreds of short sessions count as much as one long
    rhythm: TenantRhythm = fam["agent_tenant_rhythm"]
    rhythm.fit(len(ctx.tables.vocabs.tenant))
    taus = np.array([cfg.runaway_tau_s, cfg.runaway_long_tau_s]) * 1000
    counts = np.stack([a["fast"], a["fast_long"]], axis=1)
    fasts, expects, level = burst_vs_baseline(c.agent[first], c.ts[first], counts, a["fast_last"], a["slow"],
                                              a["slow_last"], a["since"], taus, RUNAWAY_BASELINE_TAU_MS, 8.0,
                                              cfg.runaway_rate_floor, 3.0, c.tenant[first], rhythm.hours,
                                              rhythm.last, cfg.runaway_rhythm_days * DAY)
    a["fast"][:], a["fast_long"][:] = counts[:, 0], counts[:, 1]
    # the better window, less log10 of the windows tried
    # a negative-binomial spread (a Poisson of counts scaled by 1 + expected / size): over half an hour an agent's
    # real session counts vary more than a Poisson's
    phi = 1.0 + expects / cfg.runaway_nb_size
    per_window = np.stack([poisson_surprise_many(np.floor(fasts[:, w]) / phi[:, w], expects[:, w] / phi[:, w])
                           for w in range(2)], axis=1)
    best = np.argmax(per_window, axis=1) if len(first) else np.zeros(0, dtype=np.int64)
    r_surprise = np.max(per_window, axis=1, initial=0.0) - np.log10(2.0)
    rows = np.arange(len(first))
    fast, expected = fasts[rows, best], expects[rows, best]
    for j in np.flatnonzero(r_surprise >= cfg.runaway_surprise).tolist():
        i = int(first[j])
        e = c.events[i]
        sup = float(r_surprise[j])
        per_min = 60_000.0 / float(taus[best[j]])
        f = ctx.finding("agent.runaway", c, i, e.agent_id, e.principal, score_of(sup, 1),
                        [Feature(name="sessions_per_min", value=round(float(fast[j]) * per_min, 2),
                                 baseline=round(float(expected[j]) * per_min, 3)),
                         Feature(name="hour_level", value=round(float(level[j]), 2), baseline=1.0),
                         Feature(name="tokens", value=float(c.tokens[i]))],
                        f"Agent {e.agent_id} is starting about {fast[j] * per_min:.1f} sessions a minute, "
                        f"{fast[j] / expected[j]:.0f}x its usual {expected[j] * per_min:.2f} at this hour (its own "
                        f"rate over the last day, times {level[j]:.1f} for its tenant's agents at this hour): about "
                        f"{one_in(sup)} (session {e.session_id}).")
        f.surprise = sup
        f.title = "Runaway agent: session rate explosion"
        out.append(f)
    marks = ses["marked"]
    if np.count_nonzero(marks != _NO_TIME) > MAX_UNTRUSTED_SESSIONS:  # bounded: forget marks older than a day
        marks[marks < int(c.ts.max()) - DAY] = _NO_TIME
    if len(ses) > MAX_SESSION_COUNTERS:  # bounded: forget the oldest half of the sessions (by their first step)
        keep = np.zeros(len(ses), dtype=np.bool_)
        keep[len(ses) // 2:] = True
        _forget_evidence(fam, ses.keep(keep))
    for name in _EVIDENCE:
        if len(fam[name]) > MAX_SESSION_COUNTERS:  # bounded: keep the newest half
            fam[name] = dict(list(fam[name].items())[len(fam[name]) // 2:])
    return out


def expire(tables: State, day_start: int, config: Any) -> None:
    """Forget the sessions idle for ``session_idle_hours``: their step counts, marks, chains and idle clock."""
    if config.session_idle_hours > 0:
        ses = tables.sessions
        _forget_evidence(tables.family, ses.keep(ses["last"] >= day_start - int(config.session_idle_hours * HOUR)))


_EVIDENCE = ("agent_untrusted_evidence", "agent_new_action_evidence")  # per-session tables of the few rare steps


def _forget_evidence(family: dict[str, Any], gone: list[str]) -> None:
    """The evidence of the sessions ``gone`` dropped (each store rebuilt at its new size)."""
    if gone:
        drop = set(gone)
        for name in _EVIDENCE:
            store = family.get(name)
            if store and not drop.isdisjoint(store):
                family[name] = {x: v for x, v in store.items() if x not in drop}


_SESSION_EVICTION = "dropped with its session once idle past `session_idle_hours` (and bounded in size)"
_TOKENS = "not entity-keyed: agent types and actions are tokens (bounded by the token vocabulary)"

FAMILY = Family(
    name="agent",
    kind="agent_execution",
    doc="What an agent does, judged against what its agent type does (learned online, shrunk toward all types "
        "while young, scored as calibrated surprise): approvals, steps after untrusted input, new actions, "
        "session rates and lengths, failing tools.",
    config=AgentConfig,
    stage=stage,
    expire=expire,
    detectors=(
        Detector(
            "agent.untrusted_privileged", "Privileged agent action driven by untrusted content", "agent",
            ("atlas:AML.T0051.001", "owasp-llm:LLM01", "owasp-llm:LLM06"),
            "Learns, per agent type, which steps follow untrusted input: for every step triggered by external "
            "content or taken within an hour after its session read untrusted input, the transition (previous "
            "action -> action, and whether external content triggered it). A privileged (write or admin) step in "
            "that context alerts when its transition is rare for the type: its probability is how often the "
            "type took it, plus the type's own rate of new transitions (Good-Turing), shrunk toward all types' "
            "while the type is young. An assistant whose job is reading mail and replying learns that replying "
            "is normal; a tool its type never uses after untrusted input reaches `untrusted_surprise`. Several "
            "rare steps of one session add up (as independent chances multiply) only when each is a transition "
            "new to the type: a rare one the type has taken before (a form filled, then an order submitted) is one "
            "of its habits, and habits that follow each other are not independent evidence. The prompt-injection "
            "signature needs less: a privileged step that the content the agent read triggered directly (the "
            "runtime says `triggered_by: external_content`), in a transition its type never took after untrusted "
            "input, alerts from `injection_surprise` (1 in 200 by the type's own rate of new transitions, so a "
            "type that keeps taking new steps is not alerted by one more); its score follows that surprise and the "
            "asset, and the step is learned, so a new habit of the type alerts once, not on every use. A step "
            "that alerts by the calibrated floor is not learned, alone or as part of its session's evidence (an "
            "injected session's other tools do not become the type's habits)."),
        Detector(
            "agent.approval_bypass", "High-risk agent action without approval", "agent",
            ("atlas:AML.T0053", "owasp-llm:LLM06"),
            "An action whose approval was bypassed (at medium risk or above), or a high- or critical-risk "
            "action that ran without approval (not required or still pending, and not blocked). A step whose "
            "approval was pending or denied and whose outcome was blocked is the control working: never "
            "raised. No learning: the event says it. Critical bypasses score highest."),
        Detector(
            "agent.new_privileged_action", "Agent took a privileged action its type never takes", "agent",
            ("atlas:AML.T0053", "owasp-llm:LLM06"),
            "Counts the actions each agent type takes. A privileged action no agent of the type took before "
            "alerts when a new action is rare for the type: the chance of one is the type's own rate of new "
            "actions (Good-Turing: actions seen once over steps), shrunk toward all types' while it is young, "
            "and the alert needs it below `new_action_surprise` (1 in 2,000: one new write after 3,000 steps of a "
            "type that never adds tools). A type that keeps adding tools is not surprised by one more. A "
            "session's new privileged actions add up (as independent chances multiply), and a step that alerts, "
            "alone or with its session, is not learned."),
        Detector(
            "agent.runaway", "Runaway agent: session rate or length explosion", "agent",
            ("atlas:AML.T0034", "owasp-llm:LLM10"),
            "Two signals. An agent starting sessions far above its own rate: the decayed counts of its session "
            "starts over two minutes (`runaway_tau_s`) and half an hour (`runaway_long_tau_s`) against what its "
            "daily rate (at least `runaway_rate_floor`) expects at this hour, scaled by how busy its tenant's "
            "agents are at this hour of the day (learned, so office hours are not a runaway every morning), each "
            "judged as a negative binomial (real counts vary more than a Poisson's), the better window counted "
            "as two tests; it alerts at `runaway_surprise`. Hundreds of short sessions count as much as one long "
            "run, and a moderate runaway that lasts an hour is caught by the longer window. Or a "
            "session that passes `runaway_session_steps` and runs longer than 1.5x the longest length at least "
            "two earlier sessions of its agent type reached (one runaway session cannot raise the bar)."),
        Detector(
            "agent.tool_loop", "Agent looping on a failing tool", "agent",
            ("atlas:AML.T0034", "owasp-llm:LLM10"),
            "Counts, per agent type and tool, calls and failures. A run of consecutive failures of the same "
            "tool in one session is judged by that failure rate (shrunk toward all tools' while young, at "
            "least `loop_fail_rate_floor`): each further failure multiplies the chance by the rate, and the "
            "run alerts at `loop_surprise` (a tool failing 3% of the time: the sixth failure in a row)."),
    ),
    columns=(
        Column("agent", "fast", 0, "decayed session-start count, `runaway_tau_s`"),
        Column("agent", "fast_long", 0, "decayed session-start count, `runaway_long_tau_s`"),
        Column("agent", "fast_last", 0, "time of the fast count's last update"),
        Column("agent", "slow", 0, "decayed baseline session-start count (a day)"),
        Column("agent", "slow_last", 0, "time of the baseline's last update"),
        Column("agent", "since", 0, "start of the baseline's learning"),
    ),
    tables=(
        Table("type_events", "agent type (token) -> events seen", "not entity-keyed: agent types are tokens"),
        Table("sessions", "session -> its row of: time of its latest step (the idle clock), steps so far, time of "
              "its last untrusted-input step, runaway flag, last action and its run of failures",
              _SESSION_EVICTION),
        Table("type_lengths", "agent type (token) -> histogram of session lengths reached",
              "not entity-keyed: agent types are tokens"),
        Table("type_longest", "agent type (token) -> longest length two sessions reached",
              "not entity-keyed: agent types are tokens"),
        Table("agent_untrusted_evidence", "session -> its rare privileged steps' surprise after untrusted input",
              _SESSION_EVICTION, factory=dict),
        Table("agent_new_action_evidence", "session -> its new privileged actions' surprise", _SESSION_EVICTION,
              factory=dict),
        Table("agent_tenant_rhythm", "tenant -> its agents' session starts per hour of the day",
              "keyed by tenant id: tenants are never evicted (24 floats per tenant)", factory=TenantRhythm),
        Table("agent_type_actions", "per agent type: actions taken, calls and failures per action", _TOKENS,
              factory=Habits),
        Table("agent_untrusted_transitions", "per agent type: transitions taken after untrusted input", _TOKENS,
              factory=Habits),
    ),
)


LENGTH_PRIOR = 2.0  # weight, in sessions, of the prior mean excess (the threshold length itself) in the tail's scale


def length_surprise(reached: np.ndarray, m: int) -> float:
    """-log10 of the chance that a session of an agent type runs ``m`` steps or more (``reached[x]``: its sessions
    that reached length ``x``; ``reached[1]`` all of them).

    Up to where the type's sessions were seen, the empirical share (one more session as the prior); beyond that,
    the tail is extrapolated as exponential (peaks over threshold) from the length ``u`` that about sqrt(n) of the
    type's sessions reached, with their mean excess over ``u`` (shrunk toward ``u`` itself, worth ``LENGTH_PRIOR``
    sessions): a session ten times longer than any before is far rarer than one just past the longest, so its
    surprise keeps growing with its length instead of stopping at 1 in (sessions + 1).

    Examples:
        >>> h = np.zeros(1024); h[1:6] = [100, 80, 50, 20, 5]  # 100 sessions, none longer than 5 steps
        >>> round(length_surprise(h, 3), 2), round(length_surprise(h, 6), 2) >= 2.0
        (0.3, True)
        >>> length_surprise(h, 40) > length_surprise(h, 20) > length_surprise(h, 8)
        True
    """
    n = float(reached[1])
    if n <= 0.0:
        return 0.0
    top = int(reached.size - 1)
    empirical = -np.log10((float(reached[min(m, top)]) + 1.0) / (n + 1.0)) if m <= top else np.log10(n + 1.0)
    u = int(np.flatnonzero(reached >= max(np.sqrt(n), 1.0))[-1])  # the length that about sqrt(n) sessions reached
    if m <= u:
        return float(empirical)
    excess = (float(reached[u + 1:].sum()) + LENGTH_PRIOR * u) / (float(reached[u]) + LENGTH_PRIOR)
    tail = np.log10((float(reached[u]) + 1.0) / (n + 1.0)) - (m - u) / max(excess, 1.0) / np.log(10.0)
    return float(max(empirical, -tail))
