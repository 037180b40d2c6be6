"""The pipeline-health board's PromQL, run by a real Prometheus scraping a real worker.

Prometheus is the compose stack's version, built from the Go module proxy into the cache by
``make prometheus`` (not part of ``make deps``: a cold build takes minutes); the test skips, saying so,
where it is not built. The scrape config is the repository's
(streams/stack/prometheus.yml) with the worker job's Docker DNS discovery replaced by the test worker's
loopback port; every panel target goes through Prometheus's HTTP API as Grafana sends it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from kafka import KafkaProducer

from grafana.dashboards_src import boards
from grafana.dashboards_src.kit import prom_expand
from streams.kafka_security import kafka_client_config
from streams.settings import Settings
from streams.stack.base import free_port
from tests.fault.harness import Run, WorkerProc, cross_kind_rows, produce_rows, wait_committed

ROOT = Path(__file__).resolve().parents[2]
VERSION = "3.16.0"  # docker-compose.yml's prom/prometheus image (the Go module's version is v0.316.0)
SCRAPE_S = 1


def binary(settings: Settings) -> Path:
    return settings.cache_dir.expanduser() / f"prometheus-v{VERSION}" / "prometheus"


PROM_BIN = binary(Settings())
needs_prometheus = pytest.mark.skipif(
    not PROM_BIN.is_file(), reason=f"no Prometheus binary at {PROM_BIN}: `make prometheus` builds it (go install "
    f"github.com/prometheus/prometheus/cmd/prometheus@v0.{int(VERSION.split('.')[1]) + 300}.0)")


def test_the_binary_is_the_compose_version_make_builds():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["prometheus"]["image"] == f"prom/prometheus:v{VERSION}"
    make = (ROOT / "Makefile").read_text()
    assert f"/prometheus-v{VERSION}\n" in make and f"prometheus@v0.{int(VERSION.split('.')[1]) + 300}.0 " in make


def scrape_config(worker_port: int) -> dict:
    """The repository's scrape config, the worker job on the test's loopback port (no notify runs here)."""
    cfg = yaml.safe_load((ROOT / "streams/stack/prometheus.yml").read_text())
    cfg["global"].update(scrape_interval=f"{SCRAPE_S}s", evaluation_interval=f"{SCRAPE_S}s")
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    worker = jobs["spyglass-worker"]
    del worker["dns_sd_configs"]
    worker["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
    cfg["scrape_configs"] = [worker]
    return cfg


def api(port: int, path: str, **params: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - loopback, the test's own Prometheus
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, check, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout_s}s")


@needs_prometheus
def test_prometheus_loads_the_repository_config_unchanged(tmp_path):
    """Compose mounts streams/stack/prometheus.yml as is: Prometheus accepts it, with both jobs (here the
    Docker names do not resolve, so the worker job finds no target and notify's is down)."""
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - the child owns it
    prom = subprocess.Popen(  # noqa: S603 - fixed argv
        [str(PROM_BIN), f"--config.file={ROOT / 'streams/stack/prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=log, start_new_session=True)
    log.close()
    try:
        wait_for("Prometheus discovers the notify target", lambda: prom.poll() is None and
                 api(port, "targets")["activeTargets"], timeout_s=30)
        config = yaml.safe_load(api(port, "status/config")["yaml"])
        jobs = {j["job_name"]: j for j in config["scrape_configs"]}
        assert jobs["spyglass-worker"]["dns_sd_configs"][0]["names"] == ["worker"]
        assert [t["labels"]["job"] for t in api(port, "targets")["activeTargets"]] == ["spyglass-notify"]
    finally:
        os.killpg(prom.pid, signal.SIGTERM)
        prom.wait(30)


@needs_prometheus
def test_every_promql_panel_returns_the_series_a_running_worker_exports(stack_settings: Settings, tmp_path):
    prom_bin = binary(stack_settings)
    run = Run.create(stack_settings, tmp_path)
    run.worker_settings = {"engine_learning_hours": 0}
    w = WorkerProc(run, "prom").start()
    prom = None
    try:
        wait_for("the worker serves /metrics", lambda: "spyglass_events_in_total" in w.metrics())
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(scrape_config(w.port)))
        port = free_port()
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - the child owns it
        prom = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(prom_bin), f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for("Prometheus scrapes the worker",
                 lambda: [r for r in api(port, "query", query='up{job="spyglass-worker"}')["result"]
                          if r["value"][1] == "1"])
        start = time.time()
        rows = cross_kind_rows(3)
        produce_rows(run, rows, rate=20).join()  # a few seconds of traffic: several scrapes see it move
        producer = KafkaProducer(bootstrap_servers=run.settings.kafka_bootstrap, acks="all",
                                 **kafka_client_config(run.settings))
        producer.send(run.settings.topic_api_usage, value=b"{not json")  # one dead letter
        producer.flush()
        producer.close()
        wait_committed(run, len(rows) + 1, [w], timeout_s=180)
        time.sleep(3 * SCRAPE_S)  # the last counts scraped
        end = time.time()

        specs = [s for b in boards() for s in b.prom_specs]
        assert specs
        results: dict[str, list[dict]] = {}
        for s in specs:
            for legend, expr in s.targets:
                data = api(port, "query_range", query=prom_expand(expr, rate_interval=f"{4 * SCRAPE_S + 6}s"),
                           start=f"{start - 5:.3f}", end=f"{end:.3f}", step=f"{SCRAPE_S}s")
                assert data["resultType"] == "matrix" and data["result"], f"{s.title} ({legend}): no series"
                finite = [float(v) for r in data["result"] for _, v in r["values"] if not math.isnan(float(v))]
                assert finite, f"{s.title} ({legend}): only NaN"
                results[f"{s.title} {legend}"] = data["result"]

        def peak(key: str, label: str) -> dict[str, float]:
            return {r["metric"][label]: max(float(v) for _, v in r["values"]) for r in results[key]}

        events = peak("Events in per second by kind (live) {{kind}}", "kind")
        assert {k for k, v in events.items() if v > 0} == {r["kind"] for r in rows}, events  # api_usage: 0
        dead = peak("Dead letters per second (live) {{topic}}", "topic")
        assert dead.get(run.settings.topic_api_usage, 0) > 0, dead
        lag = peak("Consumer lag by topic (live) {{topic}}", "topic")
        assert set(lag) <= set(run.event_topics()) | {run.settings.topic_risk_evidence} and lag, lag
        p99 = [float(v) for r in results["Worker batch latency (live) p99"] for _, v in r["values"]
               if not math.isnan(float(v))]
        assert p99 and all(0 < x < 30 for x in p99), p99  # within the histogram's buckets
    finally:
        if prom is not None:
            os.killpg(prom.pid, signal.SIGTERM)
            prom.wait(30)
        w.terminate()
        run.cleanup()
