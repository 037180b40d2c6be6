"""Analyst feedback through the real broker, the real ClickHouse server and a real worker: ``spyglass alerts
set-status ... false_positive`` reaches the engine that raised the alert, survives the worker's crash (it was
checkpointed before its record was committed), and the same behaviour again raises nothing for that entity."""

from __future__ import annotations

import re
import subprocess
import time

from streams.settings import Settings
from tests.fault.harness import SPYGLASS, Run, WorkerProc, committed, end_offsets, produce_rows, wait_committed
from tests.unit.test_feedback import big_reads, usual_reads


def _spikes(run: Run) -> dict[str, list[str]]:
    st = run.store()
    try:
        rows = st.query(f"SELECT entity, alert_id FROM {run.db}.alerts FINAL "  # noqa: S608
                        f"WHERE detector = 'data.volume_spike' ORDER BY first_seen")
    finally:
        st.close()
    out: dict[str, list[str]] = {}
    for entity, aid in rows:
        out.setdefault(str(entity), []).append(str(aid))
    return out


def _cli(run: Run, *args: str) -> subprocess.CompletedProcess:
    env = run.env("cli", 0)
    return subprocess.run([str(SPYGLASS), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def _applied(w: WorkerProc, status: str) -> float:
    found = re.search(rf'^spyglass_feedback_total\{{status="{status}"\}} ([0-9.e+]+)$', w.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def test_a_false_positive_mark_teaches_the_worker_that_raised_the_alert(stack_settings: Settings, tmp_path):
    run = Run.create(stack_settings, tmp_path)
    run.worker_settings = {"engine_learning_hours": 0}
    workers: list[WorkerProc] = []
    try:
        first = usual_reads() + big_reads("x", 3, 10)
        produce_rows(run, first, rate=100_000).join()
        w = WorkerProc(run, "fb-1").start()
        workers.append(w)
        wait_committed(run, len(first), workers, timeout_s=180)
        spikes = _spikes(run)
        assert set(spikes) == {"mallory", "bob"}, w.tail()

        listed = _cli(run, "alerts", "list", "--detector", "data.volume_spike", "--status", "open", "--json")
        assert listed.returncode == 0, listed.stderr
        assert {line.split('"entity": "')[1].split('"')[0] for line in listed.stdout.splitlines()} == {"mallory",
                                                                                                        "bob"}
        t0 = time.monotonic()
        marked = _cli(run, "alerts", "set-status", spikes["mallory"][0], "false_positive", "--note", "batch export",
                      "--by", "ana")
        t_sent = time.monotonic()
        assert marked.returncode == 0, marked.stderr
        while _applied(w, "false_positive") < 1:
            assert time.monotonic() - t0 < 60, w.tail()
            time.sleep(0.02)
        t_applied = time.monotonic()
        print(f"\nfeedback: set-status took {t_sent - t0:.3f}s (store row, mark acked by the broker); mark sent -> "
              f"applied in the worker {t_applied - t_sent:.3f}s; command start -> applied {t_applied - t0:.3f}s")
        ends = {tp: n for tp, n in end_offsets(run, [run.settings.topic_feedback]).items() if n}
        while not all(committed(run).get(tp, 0) >= n for tp, n in ends.items()):  # a checkpoint holds the mark
            assert time.monotonic() - t0 < 90, w.tail()
            time.sleep(0.2)
        shown = _cli(run, "alerts", "list", "--status", "false_positive", "--json")
        assert spikes["mallory"][0] in shown.stdout and spikes["bob"][0] not in shown.stdout

        w.kill9()  # the mark must come back from the checkpoint, not from the worker's memory
        again = big_reads("y", 4, 10)
        produce_rows(run, again, rate=100_000).join()
        w2 = WorkerProc(run, "fb-2").start()
        workers.append(w2)
        wait_committed(run, len(first) + len(again), workers, timeout_s=180)
        after = _spikes(run)
        assert len(after["bob"]) == 2, w2.tail()  # bob's same behaviour alerts again: it could have failed
        assert after["mallory"] == spikes["mallory"]  # mallory's is normal now
    finally:
        for w in workers:
            w.terminate()
        run.cleanup()


def test_bad_feedback_records_are_refused_by_field_and_do_not_stop_the_worker(stack_settings: Settings, tmp_path):
    from kafka import KafkaProducer

    run = Run.create(stack_settings, tmp_path)
    w = WorkerProc(run, "fb-bad")
    try:
        producer = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all")
        for value in (b"{", b'{"alert_id": "a", "status": "maybe", "tenant": "t", "detector": "d", "entity": "e"}'):
            producer.send(run.settings.topic_feedback, value=value, partition=0)
        producer.flush()
        producer.close()
        rows = usual_reads()[:20]
        produce_rows(run, rows, rate=100_000).join()
        w.start()
        wait_committed(run, len(rows), [w], timeout_s=120)
        deadline = time.monotonic() + 60
        while _applied(w, "invalid") < 2:
            assert time.monotonic() < deadline, w.tail()
            time.sleep(0.2)
        log = w.log.read_text()
        assert '"field": "$.status"' in log and "feedback record refused" in log
        assert w.alive()
    finally:
        w.terminate()
        run.cleanup()
