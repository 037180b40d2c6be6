"""Every panel, variable and alert-rule query, macros expanded, on the embedded current ClickHouse (chDB).

The database is migrated and filled by a replay of simulated traffic (attacks included) through the real
engine; pipeline_health / engine_checkpoints / alert_status rows are derived from that replay (see
streams/bench/panelfill.py). The same checks run on the ClickHouse 18.16 server in tests/integration.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from grafana.dashboards_src import boards
from grafana.dashboards_src.alerting import RULES
from grafana.dashboards_src.kit import ALL, PanelSpec
from streams.bench.panelfill import Filled, ensure_tables, fill, run_panel
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore
from tests.dashboard_attacks import TENANT_ESCAPES
from tests.panelcheck import all_specs, check, run_all


@pytest.fixture(scope="module")
def chdb(tmp_path_factory):
    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path_factory.mktemp('chdb-panels')}"))
    yield store
    store.close()


@pytest.fixture(scope="module")
def filled(chdb) -> Filled:
    chdb.execute("CREATE DATABASE IF NOT EXISTS gf_full")
    chdb.database = "gf_full"
    chdb.execute("USE gf_full")
    return fill(chdb, events=30_000, seed=7, days=3)


def test_every_panel_runs_and_returns_its_columns_with_data(chdb, filled):
    chdb.execute("USE gf_full")
    results = run_all(chdb, filled)
    assert len(results) == len(all_specs()) >= 50
    assert check(results, want_data=True) == []
    # the attacks light the security panels up
    by_title = {r.spec.title: r for r in results}
    assert sum(by_title["Open alerts by severity"].rows[0]) > 0
    assert by_title["Raw events behind the alert"].rows
    paging = by_title["Spyglass alert to page"]
    assert paging.columns == ["alert_id", "tenant", "severity", "detector", "entity_type", "entity", "explanation",
                              "open_alert"]


def test_panels_with_a_tenant_and_an_entity_selected(chdb, filled):
    chdb.execute("USE gf_full")
    tenant, entity = chdb.query(f"SELECT tenant, entity FROM alerts WHERE alert_id = '{filled.alert_id}'")[0]
    results = run_all(chdb, filled, tenant=tenant, entity=entity)
    assert check(results, want_data=False) == []
    latest = [r for r in results if r.spec.title.startswith("Latest alerts")][0]
    assert len(latest.rows) >= 2  # the investigated alert and its siblings on the same entity
    assert {(row[latest.columns.index("tenant")], row[latest.columns.index("entity")]) for row in latest.rows} == {
        (tenant, entity)}


def test_alert_status_is_the_latest_row(chdb, filled):
    chdb.execute("USE gf_full")
    alert = [r for r in run_all(chdb, filled) if r.spec.title == "Alert"][0]
    assert alert.rows[0][alert.columns.index("status")] == "resolved"


def test_no_panel_errors_on_an_empty_database(chdb):
    chdb.execute("CREATE DATABASE IF NOT EXISTS gf_empty")
    chdb.database = "gf_empty"
    chdb.execute("USE gf_empty")
    ensure_tables(chdb)
    t1 = datetime(2026, 11, 21, tzinfo=UTC)
    empty = Filled(start=t1 - timedelta(days=1), end=t1, events=0, alerts=0, tenant="acme", alert_id="",
                   seconds=0.0)
    results = run_all(chdb, empty)
    assert check(results, want_data=False) == []
    assert all(not r.rows or r.spec.title in {"Open alerts by severity", "New entities on the last day of the "
                                              "range", "variable status",  # 'open' is always a status
                                              "Alerts by mode: enforced, shadow (trial), suppressed"}
               for r in results if r.spec.dashboard != "alerting")


def _run(chdb, filled: Filled, spec: PanelSpec, start: datetime | None = None, **chosen: str) -> list[dict]:
    variables = {"tenant": ALL, "entity": ALL, "worker": ALL, "alert": filled.alert_id, "severity": ALL,
                 "detector": ALL, "status": ALL, "search": "", **chosen}
    cols, rows = run_panel(chdb, spec, start=start or filled.start, end=filled.end, variables=variables)
    return [dict(zip(cols, r, strict=True)) for r in rows]


def test_the_alert_boards_filter_by_severity_detector_and_status(chdb, filled):
    chdb.execute("USE gf_full")
    latest = next(s for b in boards() for s in b.specs if s.title.startswith("Latest alerts"))
    everything = _run(chdb, filled, latest)
    assert {r["severity"] for r in everything} - {"high", "critical"}, "the fixture has lesser alerts too"
    high = _run(chdb, filled, latest, severity="high")
    assert high and {r["severity"] for r in high} <= {"high", "critical"}
    detector = everything[0]["detector"]
    assert {r["detector"] for r in _run(chdb, filled, latest, detector=detector)} == {detector}
    assert [r["alert_id"] for r in _run(chdb, filled, latest, status="resolved")] == [filled.alert_id]
    assert filled.alert_id not in {r["alert_id"] for r in _run(chdb, filled, latest, status="open")}
    for crafted in TENANT_ESCAPES:  # a value from the URL selects nothing, and never more than All
        assert _run(chdb, filled, latest, status=crafted) == _run(chdb, filled, latest, detector=crafted) == []
        assert _run(chdb, filled, latest, severity=crafted) == everything


def test_the_entity_variable_searches(chdb, filled):
    chdb.execute("USE gf_full")
    board = next(b for b in boards() if b.uid == "spyglass-security-overview")
    entities = PanelSpec(board.uid, -1, "variable entity", board.variables["entity"], ("*",))
    listed = [r["entity"] for r in _run(chdb, filled, entities)]
    assert 0 < len(listed) <= 100
    needle = listed[-1][2:6].upper()
    found = [r["entity"] for r in _run(chdb, filled, entities, search=needle)]
    assert found and all(needle.lower() in e.lower() for e in found) and listed[-1] in found
    for crafted in TENANT_ESCAPES:
        assert _run(chdb, filled, entities, search=crafted) == []


def test_the_paging_rule_keeps_each_open_critical_or_high_alert_firing(chdb, filled):
    """One instance per open critical or high alert of the week, however old: nothing resolves by itself."""
    chdb.execute("USE gf_full")
    rule = RULES[0]
    spec = PanelSpec("alerting", -100, rule.title, rule.sql, rule.columns)
    rows = _run(chdb, filled, spec, start=filled.end - timedelta(seconds=rule.window_s))
    stored = chdb.query("SELECT alert_id FROM alerts FINAL WHERE severity IN ('critical', 'high')")
    assert rows and {r["severity"] for r in rows} <= {"critical", "high"}
    assert len({r["alert_id"] for r in rows}) == len(rows)
    assert filled.alert_id not in {r["alert_id"] for r in rows}  # the analyst resolved it
    assert {r["alert_id"] for r in rows} == {a for (a,) in stored} - {filled.alert_id}
    assert all(r["entity"] and r["explanation"] for r in rows)
