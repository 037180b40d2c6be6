"""The demo's live view and store location, without services."""

from __future__ import annotations

import doctest
from pathlib import Path

from rich.console import Console

from streams.cli import demo
from streams.cli.demo import Flow, _view, cut, demo_settings, describe_store
from streams.settings import Settings


def test_the_store_follows_the_stack_dir_unless_a_url_is_given(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("SPYGLASS_CLICKHOUSE_URL", raising=False)
    s = demo_settings(Settings(stack_dir=tmp_path / "stack"))
    assert s.store().scheme == "chdb" and s.store().path == (tmp_path / "stack" / "chdb").resolve()
    assert describe_store(s.store()) == f"the embedded ClickHouse engine (chDB) in {(tmp_path / 'stack' / 'chdb')}"
    given = Settings(stack_dir=tmp_path / "stack", clickhouse_url="chdb:///elsewhere")
    assert demo_settings(given).store().path == Path("/elsewhere")


def test_text_is_cut_at_word_boundaries():
    text = "ana exported 36,898 rows of hr/performance-reviews (restricted), about 4x their usual"
    short = cut(text, 40)
    assert len(short) <= 40 and short.endswith(" …")
    assert text.startswith(short[:-2])  # whole words only
    assert text[len(short) - 2] == " "
    assert cut("x" * 50, 10) == "x" * 9 + "…"  # one word longer than the room is still cut


def test_alerts_are_listed_latest_event_time_first_with_the_rest_counted():
    flow = Flow()
    for i in (5, 1, 9, 3, 7, 2, 8, 6, 4, 0, 11, 10):
        flow.add_alert(f"2026-11-0{1 + i % 3}T10:{i:02d}:00Z", "high", f"det.{i % 10}", f"key_{i}", "why " * 30)
    latest = flow.latest(8)
    assert [r[0] for r in latest] == sorted((r[0] for r in flow.recent), reverse=True)[:8]
    console = Console(width=120, record=True, color_system=None)
    console.print(_view(flow, 100, "chDB store"))
    text = console.export_text()
    assert "+4 more alerts" in text  # 12 alerts, 8 shown
    assert "+2 more" in text  # 10 detectors, 8 shown
    assert "why why" in text and "wh…" not in text


def test_the_view_says_what_the_worker_is_doing():
    flow = Flow()
    assert "starting the worker" in flow.doing()
    flow.worker_up = True
    assert "joining its consumer group" in flow.doing()
    flow.partitions = 12
    assert "warming up on its first batch" in flow.doing()
    flow.scored, flow.produced = 10, 100
    assert "scoring" in flow.doing()
    flow.produced_all = True
    assert "catching up" in flow.doing()
    flow.scored = 100
    assert "commit" in flow.doing()


def test_the_docstring_examples_hold():
    assert doctest.testmod(demo).failed == 0


def test_event_data_in_the_view_is_text_not_markup():
    flow = Flow()
    flow.add_alert("2026-11-02T10:00:00Z", "high", "api.rate_burst", "[/][bold]key_1", "why [/] [link=x]not a link")
    console = Console(width=160, record=True, color_system=None)
    console.print(_view(flow, 1, "chDB store"))  # a markup error would raise here
    text = console.export_text()
    assert "[/][bold]key_1" in text and "why [/] [link=x]not a link" in text
