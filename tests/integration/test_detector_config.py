"""Detector configuration through a real worker, broker and ClickHouse 18.16 server: a detector in shadow mode
for a tenant stores its alerts with mode = shadow and publishes none; the backtest reads the stored events back
and says what another configuration adds and removes; stored alerts export as valid OCSF findings."""

from __future__ import annotations

import json
import subprocess

import msgspec

from streams.settings import Settings
from tests.fault.harness import SPYGLASS, Run, WorkerProc, produce_rows, read_topic, wait_committed
from tests.unit.test_feedback import big_reads, usual_reads
from tests.unit.test_ocsf import validate


def test_shadow_mode_backtest_and_ocsf_export_on_the_server(stack_settings: Settings, tmp_path):
    current = tmp_path / "detectors.yaml"
    current.write_text("version: 1\ndetectors:\n  data.volume_spike:\n    tenants:\n      acme: {mode: shadow}\n")
    new = tmp_path / "new.yaml"
    new.write_text("version: 1\ndetectors: {}\n")  # everything enforced
    run = Run.create(stack_settings, tmp_path)
    run.worker_settings = {"engine_learning_hours": 0, "detectors_file": current}
    w = WorkerProc(run, "modes").start()
    rows = usual_reads() + big_reads("x", 3, 10)

    def cli(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([str(SPYGLASS), *args], env=run.env("cli", 0), capture_output=True, text=True,
                           timeout=300, check=False)
        assert r.returncode == 0, r.stderr
        return r

    try:
        produce_rows(run, rows, rate=100_000).join()
        wait_committed(run, len(rows), [w], timeout_s=180)
        st = run.store()
        try:
            stored = st.query(f"SELECT alert_id, entity, mode, suppressed_by FROM {run.db}.alerts FINAL "  # noqa: S608
                              "WHERE detector = 'data.volume_spike' ORDER BY entity")
        finally:
            st.close()
        assert [(e, m, r) for _, e, m, r in stored] == [("bob", "shadow", ""), ("mallory", "shadow", "")], w.tail()
        published = {msgspec.json.decode(m.value)["alert_id"] for m in read_topic(run, run.settings.topic_alerts)}
        assert not {aid for aid, *_ in stored} & published  # shadow: stored, never published

        out = cli("replay", "--config", str(new), "--from-store", "--since", "7d", "--output",
                  str(tmp_path / "new.ocsf"), "--format", "ocsf").stdout
        line = next(x for x in out.splitlines() if "data.volume_spike" in x)
        cells = [c.strip() for c in line.split("│") if c.strip()]
        assert cells[1:] == ["acme", "0", "2", "+2", "-0", "2", "0"], out  # enforcing adds the two shadow ones
        findings = [json.loads(x) for x in (tmp_path / "new.ocsf").read_text().splitlines()]
        assert {f["finding_info"]["uid"] for f in findings} >= {aid for aid, *_ in stored}
        for f in findings:
            validate(f)

        cli("alerts", "export", "--format", "ocsf", "--detector", "data.volume_spike", "--output",
            str(tmp_path / "export.ocsf"))
        exported = [json.loads(x) for x in (tmp_path / "export.ocsf").read_text().splitlines()]
        assert sorted(f["finding_info"]["uid"] for f in exported) == sorted(aid for aid, *_ in stored)
        assert all(validate(f) and f["is_alert"] is False and f["unmapped"]["spyglass"]["mode"] == "shadow"
                   for f in exported)
    finally:
        w.terminate()
        run.cleanup()
