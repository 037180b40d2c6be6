"""Every panel, variable and alert-rule query, macros expanded, on the embedded current ClickHouse (chDB).

The database is migrated and filled by a replay of simulated traffic (attacks included) through the real
engine; pipeline_health / engine_checkpoints / alert_status rows are derived from that replay (see
streams/bench/panelfill.py). The same checks run on the ClickHouse 18.16 server in tests/integration.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from streams.bench.panelfill import Filled, ensure_tables, fill
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore
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
    assert by_title["Critical Spyglass alert"].columns == ["tenant", "detector", "open_critical"]


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
                                              "range", "Alerts by mode: enforced, shadow (trial), suppressed"}
               for r in results if r.spec.dashboard != "alerting")
