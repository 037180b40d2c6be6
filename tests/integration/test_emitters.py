"""Getting events in, on the real broker: ``spyglass produce``, the Python emitter and its example, and the Go
example producer (built here with franz-go), whose events the worker scores and stores."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.errors import EventError
from schemas.events import ENTITY_FIELD, decode, entity_of
from schemas.samples import sample_stream
from streams.emitter import Delivery, Emitter, InvalidEvent, api_usage
from streams.settings import Settings
from tests.fault.harness import Run, WorkerProc, dead_letters, read_topic, stored_event_ids, wait_committed
from tests.integration.examples import build_go_example, example_env, run_python_example
from tests.integration.test_pipeline import consume_all


def _events_on_topics(settings: Settings, expected: int) -> dict[str, object]:
    """Every record on the event topics, decoded and checked: each valid, on its kind's topic, keyed by entity."""
    kind_of = {t: k for k, t in settings.topics().items()}
    out = {}
    for m in consume_all(settings, list(kind_of), expected, timeout_s=30):
        ev = decode(m.value)
        assert not isinstance(ev, EventError), (m.value, ev)
        assert type(ev).__struct_config__.tag == kind_of[m.topic]
        assert m.key.decode() == entity_of(ev)
        out[ev.event_id] = ev
    return out


def test_produce_sends_the_valid_lines_and_names_the_invalid_ones(fresh_topics: Settings, tmp_path: Path):
    rows = sample_stream(per_kind=20)
    lines = [json.dumps(r) for r in rows]
    lines.insert(5, json.dumps({**rows[0], "event_id": "bad-1", "status": "200", "auth_result": "maybe"}))
    lines.insert(9, "{not json")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = example_env(fresh_topics)
    r = subprocess.run([sys.executable, "-m", "streams.cli", "produce", "--input", str(path)], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1  # some lines were invalid
    assert f"{path}:6: $.status: Expected `int`, got `str`" in r.stderr
    assert f"{path}:6: $.auth_result: Invalid enum value 'maybe' (allowed: ok," in r.stderr
    assert f"{path}:10: $: not valid JSON" in r.stderr
    assert "sent 60 events to their kinds' topics" in r.stdout and "2 invalid lines not sent" in r.stdout
    got = _events_on_topics(fresh_topics, 60)
    assert set(got) == {row["event_id"] for row in rows}  # all the valid ones, none of the invalid

    # stdin, one topic: an event of another kind is refused for that topic, the rest go there
    agent_rows = [r for r in rows if r["kind"] == "agent_execution"][:3]
    stdin = "\n".join(json.dumps({**r, "event_id": f"again-{i}"}) for i, r in enumerate(agent_rows))
    stdin += "\n" + json.dumps({**rows[0], "event_id": "wrong-kind"}) + "\n"
    r = subprocess.run([sys.executable, "-m", "streams.cli", "produce", "--input", "-", "--topic",
                        fresh_topics.topic_agent_execution], input=stdin, env=env, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 1
    assert "<stdin>:4: $.kind: a api_usage event for the agent_execution topic" in r.stderr
    got = _events_on_topics(fresh_topics, 63)
    assert {f"again-{i}" for i in range(3)} <= set(got) and "wrong-kind" not in got


def test_the_python_emitter_validates_batches_and_reports_each_delivery(fresh_topics: Settings):
    deliveries: list[Delivery] = []
    rows = sample_stream(per_kind=10)
    with Emitter(fresh_topics, on_delivery=deliveries.append) as em:
        for row in rows:
            em.send_json(json.dumps(row))
        with pytest.raises(InvalidEvent) as bad:
            em.send(api_usage(api_key_id="", principal="p", client_ip="10.0.0.1", method="GET", endpoint="/",
                              status=99, auth_result="ok"))
        assert [e.field for e in bad.value.errors] == ["$.api_key_id", "$.status"]
        failed = em.flush()
    assert failed == []
    assert len(deliveries) == 30 and all(d.ok and d.offset is not None for d in deliveries)
    assert {d.event_id for d in deliveries} == {r["event_id"] for r in rows}
    got = _events_on_topics(fresh_topics, 30)
    assert set(got) == {r["event_id"] for r in rows}


def test_the_python_example_runs_as_documented(fresh_topics: Settings):
    r = run_python_example(fresh_topics)
    assert r.returncode == 0, r.stderr
    assert "refused before sending: invalid api_usage event" in r.stdout
    assert "$.status" in r.stdout and "$.auth_result" in r.stdout
    assert "3 events sent, 0 failed" in r.stdout
    got = _events_on_topics(fresh_topics, 3)
    assert {type(e).__struct_config__.tag for e in got.values()} == set(ENTITY_FIELD)


def test_the_go_example_delivers_events_the_worker_scores_and_stores(stack_settings: Settings, tmp_path: Path):
    binary = build_go_example(stack_settings)
    run = Run.create(stack_settings, tmp_path)
    try:
        r = subprocess.run([str(binary), "-n", "40", "-run", run.db], env=example_env(run.settings),  # noqa: S603
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"stored": {"api_usage": 40, "data_access": 40, "agent_execution": 40}}
        got = _events_on_topics(run.settings, 120)
        assert len(got) == 120 and all(e.source == "go-producer-example" for e in got.values())
        w = WorkerProc(run, "go-example").start()
        try:
            wait_committed(run, 120, [w], timeout_s=180)
        finally:
            assert w.terminate() == 0, w.tail()
        assert stored_event_ids(run) == 120
        assert dead_letters(run) == []
        assert read_topic(run, run.settings.topic_dead_letter, timeout_s=2) == []
    finally:
        run.cleanup()
