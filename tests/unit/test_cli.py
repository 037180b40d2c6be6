"""The command line as a user runs it (no services needed for these)."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

from schemas.events import KINDS
from schemas.publish import schema_path
from streams.cli import build_parser, main
from tests.unit.test_simulator import REQUIRED_SCENARIOS


def spyglass(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


@pytest.mark.parametrize("cmd", [[], ["simulate"], ["schemas"], ["schemas", "check"], ["demo"], ["stack"],
                                 ["stack", "up"], ["stack", "status"], ["replay"], ["eval", "scenarios"],
                                 ["eval", "nab"], ["eval", "adbench"], ["bench", "replay"], ["ingest"]])
def test_every_command_explains_itself(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: spyglass" in out
    assert len(out.splitlines()) > 3


def test_the_done_when_run_writes_valid_v1_events_with_every_scenario(tmp_path):
    """spyglass simulate --seed 7 --events 200000 --out x.jsonl --labels y.jsonl, checked by an
    independent JSON Schema validator against the published schemas."""
    out, labels = tmp_path / "x.jsonl", tmp_path / "y.jsonl"
    r = spyglass("simulate", "--seed", "7", "--events", "200000", "--out", str(out), "--labels", str(labels))
    assert r.returncode == 0, r.stderr
    assert "events/s" in r.stderr
    validators = {
        k: jsonschema.Draft202012Validator(json.loads(schema_path(k).read_text()),
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        for k in KINDS
    }
    n = 0
    with out.open("rb") as f:
        for line in f:
            ev = json.loads(line)
            v = validators[ev["kind"]]
            if not v.is_valid(ev):
                pytest.fail(f"line {n + 1}: {next(v.iter_errors(ev)).message}")
            n += 1
    assert n == 200_000
    scenarios = {json.loads(x)["scenario"] for x in labels.read_text().splitlines()}
    assert scenarios >= REQUIRED_SCENARIOS
    # and the contract's own checker agrees
    r = spyglass("schemas", "check", str(out))
    assert r.returncode == 0, r.stderr
    assert "200,000 valid, 0 invalid" in r.stdout


def test_schemas_check_names_line_and_field(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"kind":"api_usage"}\nnot json\n')
    r = spyglass("schemas", "check", str(p))
    assert r.returncode == 1
    assert ":1: $.api_key_id: Object missing required field" in r.stderr
    assert ":2: $: not valid JSON" in r.stderr


def test_bad_configuration_names_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("SPYGLASS_CLICKHOUSE_URL", "postgres://x@y/z")
    assert main(["schemas", "export", "--dir", "/nonexistent-never-written"]) == 2
    assert "SPYGLASS_CLICKHOUSE_URL" in capsys.readouterr().err


def test_too_small_run_is_a_clear_error(tmp_path):
    r = spyglass("simulate", "--events", "100", "--out", str(tmp_path / "x.jsonl"))
    assert r.returncode == 1
    assert "--events 100 is too small" in r.stderr


def test_bench_replay_drives_the_engine_both_ways_on_the_same_input():
    """The worker's path (records decoded into columns per topic) and the replay path (decoded structs) see
    the same events; both are printed against the River baseline, and they raise the same alerts."""
    import re

    r = spyglass("bench", "replay", "--events", "8000", "--batch", "2000", "--baseline-events", "300")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "engine as the worker drives it" in out and "engine on decoded structs" in out
    assert len(re.findall(r"\d+\.\dx", out)) == 3
    m = re.search(r"alerts: (\d+) \(worker's path: (\d+)\)", out)
    assert m and m.group(1) == m.group(2)
