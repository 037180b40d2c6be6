"""The Python emitter without a broker: light to import, typed constructors, validation before send."""

from __future__ import annotations

import doctest
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from schemas import validate
from streams import emitter
from streams.cli import build_parser
from streams.emitter import InvalidEvent, agent_execution, api_usage, data_access, errors


def test_importing_the_emitter_loads_none_of_the_workers_heavy_dependencies():
    code = ("import sys, streams.emitter; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'faust', 'aiokafka', 'numba', 'river', 'numpy', 'detectors', 'kafka'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.strip() == "[]"


def test_constructors_fill_id_and_time_and_make_valid_events():
    before = datetime.now(UTC)
    events = [
        api_usage(api_key_id="k", principal="p", client_ip="10.0.0.1", method="GET", endpoint="/v1/models",
                  status=200, auth_result="ok", model="m"),
        data_access(principal="p", principal_department="d", dataset="x", dataset_owner_department="d",
                    sensitivity="internal", operation="read", granted=True),
        agent_execution(agent_id="a", agent_type="t", session_id="s", principal="p", action="x", target_system="y",
                        privilege="read", approval="approved", triggered_by="user", outcome="success"),
    ]
    assert [errors(e) for e in events] == [[], [], []]
    assert len({e.event_id for e in events}) == 3
    assert all(e.ts >= before and e.ts.tzinfo is not None for e in events)
    with pytest.raises(TypeError):  # an unknown field is the caller's typo, not silently dropped
        api_usage(api_key_id="k", principal="p", client_ip="10.0.0.1", method="GET", endpoint="/", status=200,
                  auth_result="ok", modell="m")


def test_invalid_event_names_every_field():
    ev = data_access(principal="", principal_department="d", dataset="x", dataset_owner_department="d",
                     sensitivity="secret", operation="read", granted=True, ts=datetime(2026, 1, 1))  # noqa: DTZ001
    exc = InvalidEvent(errors(ev))
    assert {e.field for e in exc.errors} == {"$.ts", "$.principal", "$.sensitivity"}
    assert "allowed: public, internal, confidential, restricted" in str(exc)


def test_the_docstring_examples_hold():
    assert doctest.testmod(emitter).failed == 0
    assert doctest.testmod(validate).failed == 0


def test_produce_explains_itself(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["produce", "--help"])
    out = capsys.readouterr().out
    assert "--topic-from-kind" in out and "--input" in out
