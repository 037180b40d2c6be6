"""The README's main job, end to end on the real broker, leaves a store the dashboards light up."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.bench.panelfill import Filled
from streams.settings import Settings, StoreURL
from streams.sinks.clickhouse import ChdbStore
from streams.stack.kafka import delete_topics
from tests.panelcheck import check, run_all

SPYGLASS = Path(sys.executable).with_name("spyglass")


def test_demo_scores_everything_and_every_dashboard_query_has_data(stack_settings: Settings, tmp_path: Path):
    tag = uuid.uuid4().hex[:8]
    topics = {"topic_api_usage": f"d-{tag}.api-usage", "topic_data_access": f"d-{tag}.data-access",
              "topic_agent_execution": f"d-{tag}.agent-execution", "topic_alerts": f"d-{tag}.alerts",
              "topic_dead_letter": f"d-{tag}.dead-letter", "topic_risk_evidence": f"d-{tag}.risk-evidence",
        "topic_feedback": f"d-{tag}.feedback"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPYGLASS_")}
    env.update(stack_settings.child_env(
        **topics, clickhouse_url=f"chdb://{tmp_path / 'chdb'}", worker_group=f"d-{tag}",
        checkpoint_key=uuid.uuid4().hex))
    env["COLUMNS"] = "100"
    try:
        out = subprocess.run([str(SPYGLASS), "demo", "--events", "20000", "--keep-stack"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "20,000 scored by the worker (0 dead letters)" in " ".join(out.stdout.split())
    finally:
        delete_topics(stack_settings, list(topics.values()))
    store = ChdbStore(StoreURL.parse(f"chdb://{tmp_path / 'chdb'}"))
    try:
        store.execute("USE spyglass")
        lo, hi, n = store.query("SELECT toUnixTimestamp(min(ts)), toUnixTimestamp(max(ts)), uniqExact(event_id) "
                                "FROM spyglass.events")[0]
        assert int(n) == 20_000
        alerts = store.query("SELECT count() FROM spyglass.alerts FINAL")[0][0]
        assert int(alerts) > 0
        # the alert the investigation dashboard opens: the top-scoring one whose entity has others too (the
        # "other alerts on the same entity" panel), ties broken by id, so the choice does not vary by run
        best = store.query("SELECT argMax(alert_id, (score, alert_id)) FROM spyglass.alerts FINAL "
                           "WHERE (tenant, entity) IN (SELECT tenant, entity FROM spyglass.alerts FINAL "
                           "GROUP BY tenant, entity HAVING count() > 1)")[0][0]
        events_range = Filled(start=datetime.fromtimestamp(int(lo), UTC),
                              end=datetime.fromtimestamp(int(hi), UTC) + timedelta(minutes=1), events=int(n),
                              alerts=int(alerts), tenant="", alert_id=best, seconds=0)
        results = [r for r in run_all(store, events_range) if r.spec.dashboard != "spyglass-pipeline-health"]
        # pipeline health is wall-clock time: the worker's own rows, over the minutes it ran
        lo, hi = store.query("SELECT toUnixTimestamp(min(ts)), toUnixTimestamp(max(ts)) "
                             "FROM spyglass.pipeline_health")[0]
        wall = Filled(start=datetime.fromtimestamp(int(lo), UTC), end=datetime.fromtimestamp(int(hi), UTC)
                      + timedelta(minutes=1), events=0, alerts=0, tenant="", alert_id=best, seconds=0)
        results += [r for r in run_all(store, wall) if r.spec.dashboard == "spyglass-pipeline-health"]
        problems = check(results, want_data=True)
        # a 20k-event demo may not contain every attack kind a panel shows; those say why they may be empty
        assert problems == [], problems
    finally:
        store.close()
