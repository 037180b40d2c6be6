"""Every panel, variable and alert-rule query on the real ClickHouse server (Debian's 18.16: the old dialect).

Same fill and checks as tests/unit/test_panel_queries.py (chDB), in a fresh database of the session's server.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from grafana.dashboards_src.kit import ALL
from streams.bench.panelfill import Filled, ensure_tables, fill, run_panel
from streams.settings import StoreURL
from streams.sinks.clickhouse import NativeStore
from tests import dashboard_attacks as attack
from tests.panelcheck import check, run_all


def _store(url: str, db: str) -> NativeStore:
    base = StoreURL.parse(url)
    store = NativeStore(base.with_database(db))
    store.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    store.execute(f"USE {db}")  # the panels name tables unqualified, as the data source's default database
    return store


@pytest.fixture(scope="module")
def server(ch_server_url):
    db = f"gf_{uuid.uuid4().hex[:8]}"
    store = _store(ch_server_url, db)
    yield store
    store.execute(f"DROP DATABASE IF EXISTS {db}")
    store.close()


def test_server_is_the_old_dialect_or_newer(server):
    assert server.version()


def test_every_panel_runs_on_the_server_with_data(server):
    filled = fill(server, events=30_000, seed=7, days=3)
    results = run_all(server, filled)
    assert check(results, want_data=True) == []
    assert sum([r for r in results if r.spec.title == "Open alerts by severity"][0].rows[0]) > 0
    tenant, entity = server.query(f"SELECT tenant, entity FROM alerts WHERE alert_id = '{filled.alert_id}'")[0]
    assert check(run_all(server, filled, tenant=tenant, entity=entity), want_data=False) == []


def test_no_panel_errors_on_an_empty_server_database(ch_server_url):
    db = f"gf_empty_{uuid.uuid4().hex[:8]}"
    store = _store(ch_server_url, db)
    try:
        ensure_tables(store)
        t1 = datetime(2026, 11, 21, tzinfo=UTC)
        empty = Filled(start=t1 - timedelta(days=1), end=t1, events=0, alerts=0, tenant="acme", alert_id="",
                       seconds=0.0)
        assert check(run_all(store, empty), want_data=False) == []
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {db}")
        store.close()


def test_hostile_variables_and_nested_decoys_on_the_server(ch_server_url):
    """tests/unit/test_dashboard_security.py's cases on 18.16: decodeURLComponent and the typed columns exist
    there too, a crafted tenant value matches no tenant, and the panel shows the field the worker decoded."""
    db = f"gf_attacks_{uuid.uuid4().hex[:8]}"
    store = _store(ch_server_url, db)
    try:
        ensure_tables(store)
        attack.write_hostile_events(store)
        window = {"start": attack.START, "end": attack.START + timedelta(hours=1)}
        spec = attack.panel("Auth failures by client IP")

        def ips(tenant: str) -> list[tuple[str, str]]:
            cols, rows = run_panel(store, spec, variables={"tenant": tenant, "entity": ALL}, **window)
            return [(r[cols.index("client_ip")], r[cols.index("auth_result")]) for r in rows]

        assert sorted(ips(ALL)) == [(attack.REAL_IP, "forbidden"), (attack.OTHER_IP, "forbidden")]
        assert ips(attack.TENANT) == [(attack.REAL_IP, "forbidden")]
        assert ips(attack.OTHER_TENANT) == [(attack.OTHER_IP, "forbidden")]
        for crafted in attack.TENANT_ESCAPES:
            assert ips(crafted) == []
        assert attack.DECOY_IP not in store.query(f"SELECT groupArray(client_ip) FROM {db}.events")[0][0]
    finally:
        store.execute(f"DROP DATABASE IF EXISTS {db}")
        store.close()
