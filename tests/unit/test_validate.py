"""Validation a person can use: every error of a line, enums' allowed values, clear missing-file errors, ``-``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from schemas.events import decode
from schemas.samples import SAMPLES
from schemas.validate import check, errors_of
from streams.cli import main
from tests.unit.samples import MISTYPED, REQUIRED


def spyglass(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=300, check=False)


def line(kind_: str, **changes) -> str:
    ev = {**SAMPLES[kind_], **changes}
    return json.dumps({k: v for k, v in ev.items() if v is not ...})


def test_a_valid_event_has_no_errors():
    for kind in SAMPLES:
        assert errors_of(line(kind)) == []


@pytest.mark.parametrize(("kind", "field", "bad"), MISTYPED)
def test_each_mistyped_field_is_named_as_the_decoder_names_it(kind, field, bad):
    raw = line(kind, **{field: bad})
    first = decode(raw)
    errors = errors_of(raw)
    assert [e.field for e in errors] == [first.field]


def test_every_error_of_a_line_is_reported_in_field_order():
    raw = line("agent_execution", privilege="root", outcome=..., tokens_in=-3, session_id=7)
    errors = errors_of(raw)
    assert [e.field for e in errors] == ["$.session_id", "$.privilege", "$.outcome", "$.tokens_in"]
    assert "missing required field" in errors[2].reason


def test_every_required_field_missing_is_reported():
    for kind, required in REQUIRED.items():
        raw = json.dumps({"kind": kind})
        assert {e.field for e in errors_of(raw)} == {f"$.{f}" for f in required if f != "kind"}


def test_enum_errors_list_the_allowed_values():
    [err] = errors_of(line("api_usage", auth_result="maybe"))
    assert err.field == "$.auth_result"
    assert "allowed: ok, invalid_credentials, expired, forbidden, rate_limited" in err.reason
    [err] = errors_of(line("api_usage", kind="api_use"))
    assert err.field == "$.kind"
    assert "'api_use'" in err.reason and "allowed: api_usage, data_access, agent_execution" in err.reason


def test_a_list_element_is_named_with_its_index():
    [err] = errors_of(line("api_usage", scopes_granted=["a", ""]))
    assert err.field == "$.scopes_granted[1]"


def test_not_json_and_oversized_keep_the_decoders_one_error():
    assert [(e.field, e.reason[:14]) for e in errors_of(b"nope")] == [("$", "not valid JSON")]
    big = line("api_usage", user_agent="x" * 70_000)
    assert [e.field for e in errors_of(big)] == ["$"]


def test_check_returns_the_event_or_all_errors():
    ev = check(line("data_access"))
    assert msgspec.structs.asdict(ev)["dataset"] == "hr/payroll"
    errs = check(line("data_access", granted="no", rows="x"))
    assert [e.field for e in errs] == ["$.granted", "$.rows"]


def test_schemas_check_prints_every_error_of_a_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(line("api_usage") + "\n" + line("api_usage", status="200", auth_result="maybe") + "\n")
    r = spyglass("schemas", "check", str(p))
    assert r.returncode == 1
    assert f"{p}:2: $.status: Expected `int`, got `str`" in r.stderr
    assert f"{p}:2: $.auth_result: Invalid enum value 'maybe' (allowed: ok," in r.stderr
    assert "1 valid, 1 invalid of 2 lines" in r.stdout


def test_schemas_check_reads_stdin():
    r = spyglass("schemas", "check", "-", stdin=line("data_access") + "\n" + line("data_access", operation="x"))
    assert r.returncode == 1
    assert "<stdin>:2: $.operation: Invalid enum value 'x' (allowed: read, write, delete, export, train)" in r.stderr


@pytest.mark.parametrize("argv", [
    ["schemas", "check", "{missing}"],
    ["replay", "--input", "{missing}"],
    ["report", "scopes", "--input", "{missing}"],
    ["eval", "scenarios", "--events", "{events}", "--labels", "{missing}"],
    ["eval", "scenarios", "--events", "{missing}", "--labels", "{events}"],
])
def test_a_missing_file_is_one_clear_line(argv, tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    events.write_text(line("api_usage") + "\n")
    missing = tmp_path / "nope.jsonl"
    argv = [a.format(missing=missing, events=events) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"spyglass: cannot read {missing}: No such file or directory"]


def test_replay_writes_to_stdout_without_output_and_strict_fails_on_invalid_lines(tmp_path: Path):
    events = "\n".join(line("api_usage", event_id=f"e{i}") for i in range(5)) + "\nnot json\n"
    r = spyglass("replay", "--input", "-", stdin=events)
    assert r.returncode == 0, r.stderr
    assert "replayed 5 events (1 invalid lines skipped)" in r.stderr
    for out_line in r.stdout.splitlines():  # stdout is nothing but alerts JSONL
        assert "alert_id" in json.loads(out_line)
    strict = spyglass("replay", "--input", "-", "--strict", stdin=events)
    assert strict.returncode == 1
    assert ":6: $: not valid JSON" in strict.stderr
    ok = spyglass("replay", "--input", "-", "--strict", "--output", str(tmp_path / "a.jsonl"), stdin=events[:-9])
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "a.jsonl").exists()


def test_dash_is_stdout_and_stdin_for_the_simulators_labels_and_the_evaluation(tmp_path: Path):
    events = tmp_path / "events.jsonl"
    sim = spyglass("simulate", "--events", "20000", "--days", "1", "--instances", "1", "--out", str(events),
                   "--labels", "-")
    assert sim.returncode == 0, sim.stderr
    labels = [json.loads(x) for x in sim.stdout.splitlines()]
    assert labels and all("scenario" in x for x in labels)
    ev = spyglass("eval", "scenarios", "--events", str(events), "--labels", "-", stdin=sim.stdout)
    assert ev.returncode == 0, ev.stderr
    assert "20,000 events" in ev.stdout


def test_replay_prints_hostile_values_as_text():
    stdin = line("api_usage", auth_result="[/]") + "\n" + line("api_usage", event_id="ok-1") + "\n"
    r = spyglass("replay", "--input", "-", stdin=stdin)
    assert r.returncode == 0, r.stderr  # rich markup in a reason would have raised MarkupError
    assert "$.auth_result: Invalid enum value '[/]'" in r.stderr
