"""The HTML report opened in real headless Chromium: its charts are drawn, hostile event data stays text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.bench.panelfill import ensure_tables, fill
from streams.htmlreport import SEVERITY_COLOUR, gather, render
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore
from tests.integration.browser import dump_dom, render_check, screenshot


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory):
    """A chDB store with simulated traffic run through the engine (events, alerts), as the worker leaves it."""
    path = tmp_path_factory.mktemp("report") / "chdb"
    store = ChdbStore(StoreURL.parse(f"chdb://{path}"))
    ensure_tables(store)
    fill(store, events=20_000, days=2)
    try:
        yield store
    finally:
        store.close()


def test_the_report_reads_the_clickhouse_server_too(stack_settings, tmp_path: Path):
    """The same queries on the ClickHouse server the stack runs (Debian's 18.16), as with ``SPYGLASS_CLICKHOUSE_URL``
    pointing at a server."""
    import uuid

    from streams.sinks.clickhouse import NativeStore

    db = f"report_{uuid.uuid4().hex[:8]}"
    store = NativeStore(StoreURL.parse(f"clickhouse://default@127.0.0.1:{stack_settings.clickhouse_tcp_port}/{db}"))
    try:
        store.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        ensure_tables(store)
        fill(store, events=6_000, days=1)
        data = gather(store)
        assert data.events == 6_000 and data.alerts > 0 and data.top and data.entities
        assert any(a.timeline for a in data.top)  # the timeline's sub-queries run on the server as on chDB
        page = tmp_path / "report.html"
        page.write_text(render(data))
        assert all(c["drawn"] == c["marks"] > 0 for c in render_check(dump_dom(page, tmp_path)))
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {db}")
        store.close()


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def test_every_chart_of_the_report_is_drawn_in_chromium(filled: ChdbStore, tmp_path: Path):
    data = gather(filled, where="chDB test store")
    assert data.events == 20_000 and data.alerts > 0 and data.top
    page = tmp_path / "report.html"
    page.write_text(render(data))
    checks = render_check(dump_dom(page, tmp_path))
    ids = {c["id"] for c in checks}
    assert {"by-severity", "by-detector", "entities"} <= ids
    for i in range(1, len(data.top) + 1):
        assert {f"evidence-{i}", f"timeline-{i}"} <= ids
    for c in checks:  # each chart laid out by the browser with every mark of it drawn
        assert c["width"] > 0 and c["height"] > 0, c
        assert c["marks"] > 0 and c["drawn"] == c["marks"], c
    by_sev = next(c for c in checks if c["id"] == "by-severity")
    assert by_sev["marks"] == sum(len(v) for v in data.by_severity.values())  # one bar segment per (bucket, severity)
    # and on screen: the severity chart's colours are there in the first screenful
    image = screenshot(page, tmp_path, 900, 700)
    colours = {p: 0 for p in map(_rgb, SEVERITY_COLOUR.values())}
    for p in image.pixels:
        if p in colours:
            colours[p] += 1
    drawn = [s for s, c in SEVERITY_COLOUR.items() if colours[_rgb(c)] > 200]
    assert set(drawn) >= {s for s, v in data.by_severity.items() if sum(v.values()) >= 2}, colours


def test_hostile_event_data_is_text_and_the_page_loads_nothing(filled: ChdbStore, tmp_path: Path):
    data = gather(filled)
    evil = '</svg></title><img src=x onerror="document.title=1"><script>document.title=2</script>'
    top = [dataclasses.replace(a, entity=evil, title=evil, explanation=evil,
                               features=[(evil, 3.0, 1.0)], timeline=[(a.first_seen, evil, 0.5, evil)])
           for a in data.top]
    data = dataclasses.replace(data, top=top, entities=[("t", "principal", evil, 1.0, 1)], where=evil,
                               by_detector={evil: {data.start: 2}})
    page = tmp_path / "report.html"
    text = render(data)
    assert "<img" not in text and text.count("<script>") == 1 and "http" not in text.replace(
        "http-equiv", "")  # nothing fetched: no URL at all
    page.write_text(text)
    dom = dump_dom(page, tmp_path)
    assert "<img" not in dom and "<title>Spyglass report</title>" in dom  # no injected element, title unchanged
    checks = render_check(dom)  # the page's own (hashed) script still ran under its policy
    assert all(c["drawn"] == c["marks"] for c in checks)
