"""Suppression as code through a real worker, broker and ClickHouse server: a rule added while the worker runs
keeps the matching alert off the alerts topic (stored, with the rule's id); expired, the next one goes out."""

from __future__ import annotations

import subprocess
import time

import msgspec

from streams.settings import Settings
from tests.fault.harness import SPYGLASS, Run, WorkerProc, produce_rows, read_topic, wait_committed
from tests.unit.test_feedback import big_reads, usual_reads


def _stored(run: Run) -> list[tuple[str, str, str, str]]:
    st = run.store()
    try:
        rows = st.query(f"SELECT toString(toDate(first_seen)), entity, alert_id, suppressed_by "  # noqa: S608
                        f"FROM {run.db}.alerts FINAL WHERE detector = 'data.volume_spike' ORDER BY first_seen, entity")
    finally:
        st.close()
    return [tuple(map(str, r)) for r in rows]


def _published(run: Run) -> set[str]:
    return {msgspec.json.decode(m.value)["alert_id"] for m in read_topic(run, run.settings.topic_alerts)}


def test_a_rule_added_and_expired_while_the_worker_runs(stack_settings: Settings, tmp_path):
    rules = tmp_path / "suppressions.yaml"
    run = Run.create(stack_settings, tmp_path)
    run.worker_settings = {"engine_learning_hours": 0, "suppressions_file": rules}
    w = WorkerProc(run, "sup").start()
    sent: list[dict] = []

    def step(rows: list[dict]) -> None:
        sent.extend(rows)
        produce_rows(run, rows, rate=100_000).join()
        wait_committed(run, len(sent), [w], timeout_s=180)

    def cli(*args: str) -> None:
        r = subprocess.run([str(SPYGLASS), "suppress", *args], env=run.env("cli", 0), capture_output=True, text=True,
                           timeout=60, check=False)
        assert r.returncode == 0, r.stderr

    try:
        step(usual_reads() + big_reads("x", 3, 10))
        cli("add", "--detector", "data.volume_spike", "--entity", "mall*", "--evidence", "rows>=1000",
            "--reason", "quarterly export", "--expires", "1d", "--by", "ana")
        time.sleep(1.5)  # the worker checks the file at most once a second
        step(big_reads("y", 4, 10))
        cli("expire", "sup-1")
        time.sleep(1.5)
        step(big_reads("z", 5, 10))
        stored = _stored(run)
        assert [(day, who, rule) for day, who, _, rule in stored] == [
            ("2026-11-03", "bob", ""), ("2026-11-03", "mallory", ""),
            ("2026-11-04", "bob", ""), ("2026-11-04", "mallory", "sup-1"),  # stored with the rule's id
            ("2026-11-05", "bob", ""), ("2026-11-05", "mallory", "")], w.tail()
        published = _published(run)
        assert {aid for *_, aid, rule in stored if rule} & published == set()  # suppressed: not published
        assert {aid for *_, aid, rule in stored if not rule} <= published
        assert "suppression rules loaded" in w.log.read_text()
    finally:
        w.terminate()
        run.cleanup()
