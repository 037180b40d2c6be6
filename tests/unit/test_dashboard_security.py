"""Hostile values against the dashboards (issue 26, item 8), on chDB through the panels' own SQL and expansion.

- A tenant value from the URL must not escape its string literal and return another tenant's rows.
- A payload with an unknown nested object that repeats a contract field must not show the nested value:
  the panels read the field the worker decoded (the one the detectors used).

The same cases run on the ClickHouse 18.16 server in tests/integration/test_panel_queries_server.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from grafana.dashboards_src.kit import ALL, expand, var_filter
from streams.bench.panelfill import ensure_tables, run_panel
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore
from tests.dashboard_attacks import (
    DECOY_IP,
    OTHER_IP,
    OTHER_TENANT,
    REAL_IP,
    START,
    TENANT,
    TENANT_ESCAPES,
    hostile_events,
    panel,
    write_hostile_events,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = ChdbStore(StoreURL.parse(f"chdb://{tmp_path_factory.mktemp('chdb-attacks')}"), database="gf_attacks")
    s.execute("USE gf_attacks")
    ensure_tables(s)
    write_hostile_events(s)
    yield s
    s.close()


def _auth_failures(store, tenant: str) -> list[tuple]:
    cols, rows = run_panel(store, panel("Auth failures by client IP"), start=START, end=START + timedelta(hours=1),
                           variables={"tenant": tenant, "entity": ALL})
    return [dict(zip(cols, r, strict=True)) for r in rows]


def test_the_fixture_has_a_failure_of_each_tenant(store):
    assert store.query("SELECT tenant, count() FROM events GROUP BY tenant ORDER BY tenant") == [
        (TENANT, 1), (OTHER_TENANT, 1)]
    # the raw JSON is stored as it came, decoy included (the investigation board shows it as evidence)
    assert store.query("SELECT payload FROM events ORDER BY event_id") == [
        (raw.decode(),) for _e, raw in hostile_events()]
    assert [r["client_ip"] for r in _auth_failures(store, OTHER_TENANT)] == [OTHER_IP]


@pytest.mark.parametrize("crafted", TENANT_ESCAPES)
def test_a_crafted_tenant_value_matches_no_tenant(store, crafted):
    assert _auth_failures(store, crafted) == []


@pytest.mark.parametrize("value", ["acme", "O'Brien & Sons", "back\\slash", "100%", "zoë/例え", "a+b c", ALL])
def test_a_variable_reaches_the_sql_as_the_value_itself(store, value):
    literal = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    sql = expand(f"SELECT {var_filter('tenant', 'x')} FROM (SELECT {literal} AS x)", start=START, end=START,
                 variables={"tenant": value})
    assert store.query(sql) == [(1,)]


def test_panels_show_the_decoded_field_not_a_nested_decoy(store):
    rows = _auth_failures(store, TENANT)
    assert [r["client_ip"] for r in rows] == [REAL_IP]
    assert DECOY_IP not in {r["client_ip"] for r in _auth_failures(store, ALL)}
    # the nested decoy says "ok": a panel reading it would hide the failure altogether
    assert rows[0]["auth_result"] == "forbidden"


def test_variable_expansion_percent_encodes_like_grafana():
    # Grafana's percentencode: encodeURIComponent, plus !'()* (RFC 3986 unreserved characters stay)
    got = expand("${v:percentencode}", start=START, end=START, variables={"v": "a-b_c.d~e !'()*\\%/zoë"})
    assert got == "a-b_c.d~e%20%21%27%28%29%2A%5C%25%2Fzo%C3%AB"

