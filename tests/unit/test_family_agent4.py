"""The agent family's prompt-injection evidence: new privileged actions of a mature type at 1 in 2,000 (the
`new_action_surprise` floor), and a session's evidence after untrusted input made of transitions new to the type
(a rare transition the type has taken is one of its habits)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from detectors.families.agent import AgentConfig
from detectors.kernels import habit_session_surprise, habit_surprise
from tests.unit.test_detectors import T0, Stream, _first_hit, _hits

ATTACK = T0 + timedelta(days=3, hours=10)


def _mature_helpers(s: Stream, sessions: int, *, adopt_every: int = 0, branch_every: int = 0,
                    trigger: str = "user") -> None:
    """Helper agents' sessions, one every 5 minutes from T0: search, read an e-mail (untrusted), search, update a
    ticket (a write), search. ``adopt_every``: every so many sessions an agent uses a tool no helper used before (a
    type that keeps adding tools). ``branch_every``: every so many sessions, after the e-mail, the agent fills a
    form and submits an order (two writes: a rare branch of the type's own work). ``trigger``: what triggered
    the write (``external_content``: the e-mail's content, as an inbox assistant's replies are)."""
    for i in range(sessions):
        t = T0 + timedelta(minutes=5 * i)
        a, sid = f"agt{i % 4}", f"s{i}"
        s.agent(t, a, sid)
        s.agent(t + timedelta(seconds=5), a, sid, "read_email", untrusted_input=True)
        if branch_every and i % branch_every == branch_every - 1:
            s.agent(t + timedelta(seconds=10), a, sid, "fill_form", target="shop", privilege="write")
            s.agent(t + timedelta(seconds=12), a, sid, "submit_order", target="shop", privilege="write")
        else:
            s.agent(t + timedelta(seconds=10), a, sid)
        tool = f"tool{i}" if adopt_every and i % adopt_every == adopt_every - 1 else "update_ticket"
        s.agent(t + timedelta(seconds=15), a, sid, tool, target="tickets", privilege="write", risk_level="medium",
                triggered_by=trigger)
        s.agent(t + timedelta(seconds=20), a, sid)


def one_new_write(adopt_every: int, minimal: bool = False) -> tuple[list, set[str]]:
    """600 helper sessions (3,000 steps), then one session that reads an e-mail and sends one (a write no helper
    ever took) on the e-mail's instruction."""
    s = Stream()
    _mature_helpers(s, 600, adopt_every=adopt_every)
    s.agent(ATTACK, "agt2", "x", "read_email", untrusted_input=True)
    ids = {s.agent(ATTACK + timedelta(seconds=4), "agt2", "x", "send_email", target="email", privilege="write",
                   risk_level="medium", triggered_by="external_content")}
    return s.run(minimal=minimal), ids


def test_a_mature_types_single_new_write_after_untrusted_input_is_a_new_privileged_action():
    """One new write in 3,000 steps of a type that never adds tools is about 1 in 3,000: past the floor."""
    alerts, ids = one_new_write(adopt_every=0)
    hit = _first_hit(alerts, "agent.new_privileged_action", ids, "agt2")
    assert hit.severity != "info"
    assert "send_email" in hit.explanation and "1 in" in hit.explanation


def test_the_floor_sits_between_one_new_write_of_a_mature_type_and_the_old_floor():
    """The pattern above is below the old floor of 1 in 10,000 and above the new one of 1 in 2,000."""
    cfg = AgentConfig()
    m, w = 3_000.0, cfg.agent_prior_weight
    q_all = 1.0 / (m + 1.0)  # every key of the type seen more than once: no singletons
    surprise = -np.log10((1.0 + w * q_all) / (m + 1.0 + w))
    assert cfg.new_action_surprise <= surprise < 4.0


def test_one_more_new_tool_of_a_type_that_keeps_adding_tools_is_not_alerted():
    """The benign twin: a type that uses a new tool every tenth session is not surprised by one more."""
    alerts, _ = one_new_write(adopt_every=10)
    assert not [a for a in _hits(alerts, "agent.new_privileged_action") if a.severity != "info"]


def rare_branch(attack: bool, minimal: bool = False) -> tuple[list, set[str]]:
    """Helper sessions that fill a form and submit an order after an e-mail now and then (every 60th session),
    then one session that does it again (benign) or that sends an e-mail and creates an API key on the e-mail's
    instruction (``attack``: two writes the type never took after untrusted input)."""
    s = Stream()
    _mature_helpers(s, 240, branch_every=60)
    s.agent(ATTACK, "agt2", "x", "read_email", untrusted_input=True)
    tools = ("send_email", "create_api_key") if attack else ("fill_form", "submit_order")
    ids = {s.agent(ATTACK + timedelta(seconds=4 + k), "agt2", "x", tool, target="shop", privilege="write",
                   triggered_by="external_content" if attack else "user") for k, tool in enumerate(tools)}
    return s.run(minimal=minimal), ids


def test_a_rare_branch_of_the_types_own_work_after_untrusted_input_is_not_an_injection():
    """Two rare writes (each about 1 in 150 after untrusted input) the type has taken before do not add up to an
    alert: they are its habits, and they follow each other."""
    alerts, _ = rare_branch(attack=False)
    assert not _hits(alerts, "agent.untrusted_privileged")


def test_two_writes_the_type_never_took_after_untrusted_input_are_an_injection():
    alerts, ids = rare_branch(attack=True)
    hit = _first_hit(alerts, "agent.untrusted_privileged", ids, "agt2")
    assert hit.severity != "info"


def _random_habits(n: int = 500):
    rng = np.random.default_rng(3)
    group = rng.integers(0, 3, n).astype(np.int64)
    key = group * 40 + rng.integers(0, 40, n)  # each group's own keys
    return key, group, np.ones(n, np.bool_), rng.random(n) < 0.5, rng.integers(0, 60, n).astype(np.int64)


def _fresh():
    return np.zeros(120), np.zeros(3), np.zeros(3), np.zeros(4)


def test_the_session_kernel_without_session_evidence_is_habit_surprise():
    key, group, learn, scored, session = _random_habits()
    a, b = _fresh(), _fresh()
    out, hit = habit_surprise(key, group, learn, scored, False, *a, 20.0, 1.5)
    out2, _, alert = habit_session_surprise(key, group, learn, scored, False, *b, 20.0, 1.5, session,
                                            np.zeros(60), np.inf, False, np.zeros(key.size, np.bool_), np.inf)
    assert np.array_equal(out, out2) and np.array_equal(hit, alert) and hit.any()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_a_sessions_rare_steps_add_up_and_an_alerted_sessions_steps_are_not_learned():
    """Two new keys at about 1 in 300 each: in one session they alert together (and neither is learned); in two
    sessions neither alerts (both learned)."""
    def run(sessions):
        counts, group_n, group_once, totals = np.zeros(3), np.zeros(1), np.zeros(1), np.zeros(4)
        counts[0], group_n[0], totals[0] = 5_000.0, 5_000.0, 5_000.0  # one habitual key, 5,000 times
        key, group = np.array([1, 2]), np.zeros(2, np.int64)
        ev = np.zeros(2)
        out, total, alert = habit_session_surprise(key, group, np.ones(2, np.bool_), np.ones(2, np.bool_), True,
                                                   counts, group_n, group_once, totals, 20.0, 4.0,
                                                   np.array(sessions), ev, 2.0, True, np.zeros(2, np.bool_), np.inf)
        return out, total, alert, counts
    out, total, alert, counts = run([0, 0])
    assert (out >= 2.0).all() and (out < 4.0).all()
    assert alert.tolist() == [False, True] and total[1] == pytest.approx(out.sum())
    assert counts[1] == 1.0 and counts[2] == 0.0  # the first step was learned before the session alerted
    out, total, alert, counts = run([0, 1])
    assert not alert.any() and counts[1] == counts[2] == 1.0


def test_with_new_evidence_a_rare_key_the_group_has_shown_adds_nothing():
    counts, group_n, group_once, totals = np.array([5_000.0, 3.0]), np.array([5_003.0]), np.zeros(1), np.zeros(4)
    totals[0] = 5_003.0
    key, group, every = np.array([1]), np.zeros(1, np.int64), np.ones(1, np.bool_)
    for new_evidence, added in ((True, False), (False, True)):
        ev = np.zeros(1)
        out, _, _ = habit_session_surprise(key, group, every, every, False, counts.copy(), group_n.copy(),
                                           group_once.copy(), totals.copy(), 20.0, 4.0, np.zeros(1, np.int64), ev,
                                           2.0, new_evidence, np.zeros(1, np.bool_), np.inf)
        assert out[0] >= 2.0 and (ev[0] > 0) == added


def test_a_signed_new_key_alerts_from_the_lower_floor_once():
    """A key new to its group at about 1 in 300: below the threshold, so only a signed event alerts, and is learned
    (the key alerts once by its signature); a signed key the group has shown does not alert."""
    def run(key, signed):
        counts, group_n, group_once, totals = np.zeros(3), np.zeros(1), np.zeros(1), np.zeros(4)
        counts[0], group_n[0], totals[0] = 300.0, 300.0, 300.0
        counts[2], group_n[0], totals[0] = 5.0, 305.0, 305.0
        every = np.ones(1, np.bool_)
        out, _, alert = habit_session_surprise(np.array([key]), np.zeros(1, np.int64), every, every, False, counts,
                                               group_n, group_once, totals, 20.0, 4.0, np.zeros(1, np.int64),
                                               np.zeros(1), 2.0, True, np.array([signed]), 2.3)
        return out[0], bool(alert[0]), counts[key]
    out, alert, learned = run(1, True)
    assert 2.3 <= out < 4.0 and alert and learned == 1.0
    assert run(1, False)[1:] == (False, 1.0)  # unsigned: evidence only
    assert run(2, True)[1] is False  # a key the group has shown is one of its habits


def small_helpers(trigger: str, adopt_every: int = 0) -> tuple[list, set[str]]:
    """100 helper sessions (500 steps; writes triggered by the e-mail's content), then one session that reads an
    e-mail and sends one, a write no helper ever took, on the e-mail's instruction (``trigger``)."""
    s = Stream()
    _mature_helpers(s, 100, adopt_every=adopt_every, trigger="external_content")
    s.agent(ATTACK, "agt2", "x", "read_email", untrusted_input=True)
    ids = {s.agent(ATTACK + timedelta(seconds=4), "agt2", "x", "send_email", target="email", privilege="write",
                   risk_level="medium", triggered_by=trigger)}
    return s.run(), ids


def test_a_small_types_new_write_invoked_by_the_content_it_read_is_the_injection_signature():
    """In 500 steps the new write is about 1 in 300: short of both calibrated floors, but the content the agent read
    triggered it directly."""
    alerts, ids = small_helpers("external_content")
    assert not [a for a in _hits(alerts, "agent.new_privileged_action") if a.severity != "info"]
    hit = _first_hit(alerts, "agent.untrusted_privileged", ids, "agt2")
    assert hit.severity != "info"
    assert "signature" in hit.explanation and "1 in" in hit.explanation


def test_the_same_new_write_taken_by_the_agent_itself_is_not_the_signature():
    """The benign twin: the same step not triggered by the content (the agent's own next step) needs the
    calibrated floor, which one step of a small type does not reach."""
    alerts, _ = small_helpers("agent")
    assert not [a for a in _hits(alerts, "agent.untrusted_privileged") if a.severity != "info"]


def test_a_type_whose_content_keeps_invoking_new_tools_is_not_alerted_by_one_more():
    """The benign twin: an inbox type whose mail invokes a tool no helper used before every tenth session (its own
    rate of new transitions is high) is not surprised by one more."""
    alerts, _ = small_helpers("external_content", adopt_every=10)
    assert not [a for a in _hits(alerts, "agent.untrusted_privileged") if a.severity != "info"]


def test_a_benign_new_habit_invoked_by_content_alerts_once_not_on_every_use():
    """An inbox type whose mail starts invoking a tool no helper used before, and keeps invoking it: the first use
    is the signature; the uses after it are the type's new habit."""
    s = Stream()
    _mature_helpers(s, 100, trigger="external_content")
    ids = []
    for k in range(5):
        t = ATTACK + timedelta(hours=k)
        s.agent(t, f"agt{k % 4}", f"y{k}", "read_email", untrusted_input=True)
        ids.append(s.agent(t + timedelta(seconds=4), f"agt{k % 4}", f"y{k}", "forward_invoice", target="finance",
                           privilege="write", risk_level="high", triggered_by="external_content"))
    alerted = [a for a in _hits(s.run(), "agent.untrusted_privileged") if a.severity != "info"]
    assert len(alerted) == 1 and alerted[0].evidence.event_ids[0] == ids[0]
