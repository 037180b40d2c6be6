"""``spyglass alerts list|show`` queries on chDB (the server's are run by tests/integration/test_feedback.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.errors import SpyglassError
from schemas.rows import alert_columns, alert_status_columns
from streams.cli.alerts import fetch_alert, list_alerts, since_epoch, sql_str, status_history
from streams.settings import StoreURL
from streams.sinks.clickhouse import ChdbStore, apply_ddl
from tests.unit.storage_contract import CREATED, sample_alerts


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = ChdbStore(StoreURL.parse(f"chdb://{tmp_path_factory.mktemp('chdb-alerts')}"), database="alerts_cli")
    apply_ddl(s)
    s.insert("alerts", alert_columns(sample_alerts(), CREATED, [("t.api", 2, 10 + i) for i in range(3)]))
    t0 = datetime(2026, 11, 2, 12, tzinfo=UTC)
    s.insert("alert_status", alert_status_columns("alert-1", "acme", "acknowledged", updated_at=t0, updated_by="a"))
    s.insert("alert_status", alert_status_columns("alert-1", "acme", "false_positive", updated_at=t0.replace(hour=13),
                                                  updated_by="b", note="it's fine"))
    s.insert("alert_status", alert_status_columns("alert-3", "acme", "open", updated_at=t0, updated_by="a"))
    yield s
    s.close()


def test_list_filters_by_status_severity_detector_and_age(store):
    every = list_alerts(store)
    assert [a["alert_id"] for a in every] == ["alert-3", "alert-2", "alert-1"]  # newest first
    assert {a["alert_id"]: a["status"] for a in every} == {"alert-1": "false_positive", "alert-2": "open",
                                                           "alert-3": "open"}
    assert [a["alert_id"] for a in list_alerts(store, status="false_positive")] == ["alert-1"]
    assert [a["alert_id"] for a in list_alerts(store, status="open")] == ["alert-3", "alert-2"]
    assert [a["alert_id"] for a in list_alerts(store, severity="high")] == ["alert-2", "alert-1"]
    assert [a["alert_id"] for a in list_alerts(store, detector="api.rate_burst", tenant="acme")] == ["alert-3",
                                                                                                  "alert-1"]
    assert list_alerts(store, tenant="x' OR 1=1 --") == []  # quoted, not run
    assert [a["alert_id"] for a in list_alerts(store, since=since_epoch("2026-11-02T10:02:00Z"))] == ["alert-3",
                                                                                                        "alert-2"]
    assert every[0]["first_seen"] == "2026-11-02T10:03:30Z" and list_alerts(store, limit=1)[0]["alert_id"] == "alert-3"


def test_show_gives_the_alert_with_its_source_and_status_history(store):
    a = fetch_alert(store, "alert-2")
    assert a is not None
    assert (a["detector"], a["entity"], a["severity"], a["source_topic"], a["source_partition"]) == (
        "api.new_client", "k1", "critical", "t.api", 2)
    assert a["evidence"]["event_ids"] == ["e2a", "e2b"] and a["tags"] == ["ATLAS:AML.T0024", "OWASP:LLM10"]
    assert fetch_alert(store, "nope") is None
    assert [(h["status"], h["note"]) for h in status_history(store, "alert-1")] == [
        ("acknowledged", ""), ("false_positive", "it's fine")]


def test_since_and_quoting():
    assert since_epoch("7d", datetime(2026, 11, 9, tzinfo=UTC)) == int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
    with pytest.raises(SpyglassError, match="--since"):
        since_epoch("yesterday")
    with pytest.raises(SpyglassError, match="UTC offset"):
        since_epoch("2026-11-02T10:00:00")
    assert sql_str("a\\'b") == "'a\\\\\\'b'"
