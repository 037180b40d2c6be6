"""The README's main job, end to end on the real broker, leaves a store the dashboards light up."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.bench.panelfill import Filled
from streams.settings import Settings, StoreURL
from streams.sinks.clickhouse import ChdbStore
from streams.stack.kafka import delete_topics, group_offsets
from tests.integration.browser import dump_dom, render_check
from tests.panelcheck import check, run_all

SPYGLASS = Path(sys.executable).with_name("spyglass")


def _demo_env(stack_settings: Settings, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The demo's environment on the session's broker, with topics, group and store of its own."""
    tag = uuid.uuid4().hex[:8]
    topics = Settings.topic_names(f"d-{tag}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPYGLASS_")}
    env.update(stack_settings.child_env(
        **topics, clickhouse_url=f"chdb://{tmp_path / 'chdb'}", worker_group=f"d-{tag}",
        checkpoint_key=uuid.uuid4().hex))
    env["COLUMNS"] = "100"
    return env, list(topics.values())


def test_demo_scores_everything_and_every_dashboard_query_has_data(stack_settings: Settings, tmp_path: Path):
    env, topics = _demo_env(stack_settings, tmp_path)
    report = tmp_path / "out" / "report.html"
    try:
        out = subprocess.run([str(SPYGLASS), "demo", "--events", "20000", "--keep-stack", "--report", str(report)],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        said = " ".join(out.stdout.split())
        assert "20,000 scored by the worker (0 dead letters)" in said
        assert f"stored in the embedded ClickHouse engine (chDB) in {tmp_path / 'chdb'}" in said  # words, no repr
        assert "StoreURL(" not in said
        assert f"HTML report (open it in a browser): {report}" in said
    finally:
        delete_topics(stack_settings, topics)
    # the report the demo wrote opens in a real browser with every chart drawn
    checks = render_check(dump_dom(report, tmp_path))
    assert {"by-severity", "by-detector", "entities", "evidence-1", "timeline-1"} <= {c["id"] for c in checks}
    assert all(c["marks"] > 0 and c["drawn"] == c["marks"] and c["width"] > 0 for c in checks), checks
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


def _as_in_a_terminal() -> None:
    """Run the demo with SIGINT at its default, as a terminal's foreground job has it: a test run started in the
    background (``nohup``, ``cmd &``) ignores SIGINT, its children inherit that, and Python then installs no
    KeyboardInterrupt handler, so the Ctrl-C below would not reach the demo."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_the_demo_with_its_summary_and_report(stack_settings: Settings, tmp_path: Path):
    """Ctrl-C (SIGINT to the demo alone, as a terminal sends it to the foreground process group) stops the
    simulator and the worker in order, prints the summary and writes the report; exit status 130."""
    env, topics = _demo_env(stack_settings, tmp_path)
    report = tmp_path / "report.html"
    try:
        demo = subprocess.Popen([str(SPYGLASS), "demo", "--events", "400000", "--rate", "3000", "--keep-stack",
                                 "--report", str(report)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=_as_in_a_terminal)
        deadline = time.monotonic() + 180
        group = env["SPYGLASS_WORKER_GROUP"]
        while time.monotonic() < deadline and demo.poll() is None:  # until the worker has scored and committed
            with contextlib.suppress(Exception):  # the group does not exist until the worker joins
                if sum(group_offsets(stack_settings.kafka_bootstrap, group).values()) > 0:
                    break
            time.sleep(1)
        os.killpg(demo.pid, signal.SIGINT)
        out, err = demo.communicate(timeout=180)
    finally:
        delete_topics(stack_settings, topics)
    said = " ".join(out.split())
    assert demo.returncode == 130, said[-3000:] + err[-3000:]
    assert "interrupted: stopping the simulator and the worker" in said
    assert "stopped in" in said and "scored by the worker" in said
    assert f"HTML report (open it in a browser): {report}" in said
    stored = re.search(r"now holds ([\d,]+) distinct events", said)
    assert stored is not None and int(stored.group(1).replace(",", "")) > 0, said[-2000:]
    assert report.exists() and "<svg" in report.read_text()
