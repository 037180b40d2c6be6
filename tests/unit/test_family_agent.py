"""The agent family's patterns and benign twins: habits per agent type, scored as calibrated surprise."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from tests.unit.test_detectors import T0, Stream, _agent_history, _first_hit, _hits

ATTACK = T0 + timedelta(days=3, hours=10)


def injection(tools: tuple[str, ...], minimal: bool = False) -> tuple[list, set[str]]:
    """The helper type's ordinary sessions, then one that reads an e-mail and takes ``tools`` (writes)."""
    s = Stream()
    _agent_history(s, sessions=240)
    s.agent(ATTACK, "agt2", "x2", "read_email", untrusted_input=True)
    ids = {s.agent(ATTACK + timedelta(seconds=5 * (k + 1)), "agt2", "x2", tool, target="iam", privilege="write",
                   risk_level="medium", triggered_by="external_content") for k, tool in enumerate(tools)}
    return s.run(minimal=minimal), ids


def test_a_session_taking_tools_its_type_never_uses_after_untrusted_input_is_an_injection():
    alerts, ids = injection(("create_api_key", "export_contacts", "read_secrets"))
    hit = _first_hit(alerts, "agent.untrusted_privileged", ids, "agt2")
    assert "1 in" in hit.explanation and "helper" in hit.explanation
    assert hit.severity in ("medium", "high", "critical")
    _first_hit(alerts, "agent.new_privileged_action", ids, "agt2")


def test_the_types_routine_write_after_untrusted_input_is_not_alerted():
    """update_ticket after read_email (then a search) is what the helper type does: no alert."""
    s = Stream()
    _agent_history(s)
    s.agent(ATTACK, "agt2", "x2", "read_email", untrusted_input=True)
    s.agent(ATTACK + timedelta(seconds=5), "agt2", "x2")
    s.agent(ATTACK + timedelta(seconds=10), "agt2", "x2", "update_ticket", target="tickets", privilege="write",
            risk_level="medium")
    alerts = s.run()
    assert not _hits(alerts, "agent.untrusted_privileged")
    assert not _hits(alerts, "agent.new_privileged_action")


def untrusted_work(minimal: bool = False) -> tuple[list, set[str]]:
    """An inbox type whose every session reads mail (untrusted) and replies triggered by it: its job."""
    s = Stream()
    ids = set()
    for i in range(300):
        t = T0 + timedelta(minutes=15 * i)
        a, sid = f"inbox{i % 3}", f"m{i}"
        s.agent(t, a, sid, "read_email", agent_type="inbox", untrusted_input=True)
        ids.add(s.agent(t + timedelta(seconds=5), a, sid, "send_reply", agent_type="inbox", target="email",
                        privilege="write", risk_level="medium", triggered_by="external_content"))
    return s.run(minimal=minimal), ids


def test_an_agent_type_whose_job_is_acting_on_untrusted_mail_is_not_alerted_for_it():
    alerts, ids = untrusted_work()
    assert not _hits(alerts, "agent.untrusted_privileged")
    assert not _hits(alerts, "agent.new_privileged_action")


def blocked_approval(approval: str, outcome: str, minimal: bool = False) -> tuple[list, set[str]]:
    s = Stream()
    _agent_history(s)
    ids = {s.agent(ATTACK, "agt1", "x1", "refund", target="billing", privilege="write", risk_level="high",
                   approval=approval)}
    s.rows[-1][1]["outcome"] = outcome
    return s.run(minimal=minimal), ids


def test_a_pending_or_denied_approval_that_ended_blocked_is_the_control_working():
    for approval in ("pending", "denied"):
        alerts, ids = blocked_approval(approval, "blocked")
        assert not [a for a in _hits(alerts, "agent.approval_bypass", ids) if a.severity != "info"], approval


def test_a_high_risk_step_that_ran_while_its_approval_was_pending_is_an_alert():
    alerts, ids = blocked_approval("pending", "success")
    _first_hit(alerts, "agent.approval_bypass", ids, "agt1")


def loop(failing: bool, minimal: bool = False) -> tuple[list, set[str]]:
    """Helper sessions with a failure now and then, then one session calling the same tool 20 times."""
    s = Stream()
    for i in range(200):
        t = T0 + timedelta(minutes=20 * i)
        for j in range(5):
            s.agent(t + timedelta(seconds=5 * j), f"agt{i % 4}", f"s{i}")
            if (i * 5 + j) % 25 == 0:
                s.rows[-1][1]["outcome"] = "error"
    ids = set()
    for k in range(20):
        ids.add(s.agent(ATTACK + timedelta(seconds=3 * k), "agt1", "loop"))
        if failing or k % 5 == 0:
            s.rows[-1][1]["outcome"] = "error"
    return s.run(minimal=minimal), ids


def test_a_tool_failing_again_and_again_in_one_session_is_a_loop_caught_within_a_minute():
    alerts, ids = loop(True)
    hit = _first_hit(alerts, "agent.tool_loop", ids, "agt1")
    assert hit.first_seen[:19] <= (ATTACK + timedelta(seconds=60)).isoformat()[:19]
    assert "in a row" in hit.explanation and "1 in" in hit.explanation


def test_a_tool_failing_now_and_then_is_not_a_loop():
    alerts, _ = loop(False)
    assert not _hits(alerts, "agent.tool_loop")


def short_sessions(burst: bool, minimal: bool = False) -> tuple[list, set[str]]:
    """Four helper agents' sessions every hour, then one agent starting a two-step session every 10 s."""
    s = Stream()
    for i in range(300):
        t = T0 + timedelta(minutes=15 * i)
        for j in range(4):
            s.agent(t + timedelta(seconds=5 * j), f"agt{i % 4}", f"s{i}")
    ids = set()
    for k in range(40 if burst else 3):
        t = ATTACK + timedelta(seconds=(10 if burst else 1200) * k)
        ids |= {s.agent(t, "agt1", f"r{k}"), s.agent(t + timedelta(seconds=2), "agt1", f"r{k}")}
    return s.run(minimal=minimal), ids


def test_hundreds_of_short_sessions_far_above_the_agents_rate_are_a_runaway_within_a_minute():
    alerts, ids = short_sessions(True)
    hit = _first_hit(alerts, "agent.runaway", ids, "agt1")
    assert hit.first_seen[:19] <= (ATTACK + timedelta(seconds=60)).isoformat()[:19]
    assert "sessions a minute" in hit.explanation
    assert hit.title == "Runaway agent: session rate explosion"  # what fired, not the session length


def test_sessions_at_the_agents_own_rate_are_not_a_runaway():
    alerts, ids = short_sessions(False)
    assert not _hits(alerts, "agent.runaway", ids)


def _long_session(steps: int, minimal: bool = False) -> tuple[list, set[str]]:
    """The helper type's ordinary sessions (3 to 10 steps, from ``_helper_sessions``), then one of ``steps``."""
    from tests.unit.test_detectors import _helper_sessions

    s = _helper_sessions()
    ids = {s.agent(ATTACK + timedelta(days=2, seconds=2 * j), "agt0", "long") for j in range(steps)}
    return s.run(minimal=minimal), ids


def test_a_session_ever_longer_than_its_type_runs_gets_ever_more_unusual_and_pages():
    """Its surprise is the type's length tail extrapolated beyond the longest session, so it keeps growing with the
    session (it does not stop at 1 in sessions + 1) and passes the alert budget within the session."""
    alerts, ids = _long_session(300)
    hits = _hits(alerts, "agent.runaway", ids)
    assert hits and hits[0].entity == "agt0"
    assert "taken as exponential" in hits[0].explanation
    assert any(a.severity in ("high", "critical") for a in hits)


def test_the_length_tail_grows_with_the_length_and_stays_modest_just_past_the_longest():
    from detectors.families.agent import length_surprise

    h = np.zeros(1024)
    rng = np.random.default_rng(3)
    for n in rng.geometric(0.2, size=500):  # sessions of mean length 5
        h[1:n + 1] += 1
    longest = int(np.flatnonzero(h >= 2)[-1])
    just_past = length_surprise(h, longest + 1)
    assert just_past < 3.5  # one step past the longest is not a page on its own
    assert length_surprise(h, 3 * longest) > just_past + 2.0
    assert all(np.diff([length_surprise(h, m) for m in range(1, 200)]) >= -1e-9)  # never less unusual when longer


def test_sessions_within_their_types_lengths_are_not_a_runaway():
    """The benign twin: a session as long as the type's usual ones."""
    alerts, ids = _long_session(8)
    assert not _hits(alerts, "agent.runaway", ids)


def test_docstring_examples():
    import doctest

    from detectors.families import agent

    assert doctest.testmod(agent).failed == 0


# -- agent.runaway: session starts judged at the tenant's hour, over two windows ------------------
def _office_agents(s: Stream, days: int = 6) -> None:
    """Four agents of one tenant that start a session every 2 minutes in office hours (08-16 UTC) and every 15
    outside them: their daily rate is about 0.2 a minute, their office-hours rate 0.5."""
    for day in range(days):
        for hour in range(24):
            every = 2 if 8 <= hour < 16 else 15
            for m in range(0, 60, every):
                for a in range(4):
                    t = T0 + timedelta(days=day, hours=hour, minutes=m, seconds=7 * a)
                    sid = f"o{a}-{day}-{hour}-{m}"
                    s.agent(t, f"office{a}", sid)
                    s.agent(t + timedelta(seconds=3), f"office{a}", sid)


def test_an_agent_working_at_its_tenants_office_hours_rate_is_not_a_runaway():
    """The benign twin: eight sessions in 80 seconds at 09:00 are about 1 in 10,000 for an agent at its tenant's
    office-hours rate (0.5 a minute), but 1 in 10 million at its daily average: judged without the hour's level,
    every busy morning minute would be a runaway."""
    s = Stream()
    _office_agents(s)
    day = T0 + timedelta(days=6, hours=9, seconds=30)
    for j in range(8):
        s.agent(day + timedelta(seconds=10 * j), "office0", f"busy{j}")
    assert not _hits(s.run(), "agent.runaway")


def test_a_sustained_moderate_runaway_is_caught_by_the_half_hour_window():
    """The pattern: a quiet agent (a session an hour) starting one session a minute for an hour. Over two
    minutes that is two sessions, too few to be sure of; over half an hour it is thirty against about one."""
    s = Stream()
    _office_agents(s)
    for h in range(6 * 24):
        s.agent(T0 + timedelta(hours=h, minutes=30), "quiet", f"q{h}")
    start = T0 + timedelta(days=6, hours=2)
    ids = {s.agent(start + timedelta(seconds=60 * j + 13 * (j % 3)), "quiet", f"run{j}") for j in range(60)}
    alerts = s.run()
    hit = _first_hit(alerts, "agent.runaway", ids, "quiet")
    assert datetime.fromisoformat(hit.first_seen.replace("Z", "+00:00")) <= start + timedelta(minutes=30)
    assert "at this hour" in hit.explanation
