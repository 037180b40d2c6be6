"""``spyglass grafana provision`` against a recording stand-in of Grafana's HTTP API (http.server in a thread).

Grafana is not available here; the stand-in answers like Grafana's API (404 for unknown uids, then 200)
and records every call, so the test checks what is pushed, where, and with which credentials.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from grafana.dashboards_src import GRAFANA_DIR, boards, dashboard_json
from streams.cli import main


class FakeGrafana(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, dict, dict]] = []
    known: set[str] = set()

    def log_message(self, *args):  # quiet
        pass

    def _reply(self, code: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else {}
        self.calls.append((method, self.path, body, dict(self.headers)))
        if self.headers.get("Authorization") != "Bearer s3cret-token":
            return self._reply(401, {"message": "Unauthorized"})
        if method == "GET" and self.path == "/api/v1/provisioning/contact-points":
            return self._reply(200, [])
        if method == "GET":
            return self._reply(200, {"uid": "x"}) if self.path in self.known else self._reply(404, {"message": "nf"})
        if method == "POST" and self.path == "/api/datasources":
            self.known.add(f"/api/datasources/uid/{body['uid']}")
        if method == "POST" and self.path == "/api/folders":
            self.known.add(f"/api/folders/{body['uid']}")
        if method == "POST" and self.path == "/api/v1/provisioning/alert-rules":
            self.known.add(f"/api/v1/provisioning/alert-rules/{body['uid']}")
            return self._reply(201, body)
        return self._reply(200, {"status": "success", "id": 1, "uid": body.get("uid", "x")})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")


@pytest.fixture
def grafana():
    FakeGrafana.calls = []
    FakeGrafana.known = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", FakeGrafana
    server.shutdown()
    server.server_close()
    t.join(5)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("SPYGLASS_GRAFANA_TOKEN", "s3cret-token")
    monkeypatch.setenv("SPYGLASS_GRAFANA_CH_USER", "grafana_ro")
    monkeypatch.setenv("SPYGLASS_GRAFANA_CH_PASSWORD", "ro-pass")
    monkeypatch.setenv("SPYGLASS_ALERTMANAGER_URL", "https://alertmanager.example.invalid")
    monkeypatch.delenv("SPYGLASS_GRAFANA_URL", raising=False)


def test_provision_pushes_datasource_dashboards_and_rules(grafana, env, capsys):
    url, g = grafana
    assert main(["grafana", "provision", "--url", url, "--clickhouse-host", "ch.internal"]) == 0
    assert all(h.get("Authorization") == "Bearer s3cret-token" for *_, h in g.calls)
    posts = [(m, p, b) for m, p, b, _ in g.calls if m in ("POST", "PUT")]
    ds = [b for m, p, b in posts if p == "/api/datasources"]
    assert len(ds) == 1 and ds[0]["uid"] == "spyglass-clickhouse" and ds[0]["type"] == "grafana-clickhouse-datasource"
    assert ds[0]["jsonData"]["username"] == "grafana_ro" and ds[0]["secureJsonData"]["password"] == "ro-pass"
    assert ds[0]["jsonData"]["host"] == "ch.internal"
    dash = [b for m, p, b in posts if p == "/api/dashboards/db"]
    assert sorted(d["dashboard"]["uid"] for d in dash) == sorted(b.uid for b in boards())
    assert all(d["overwrite"] and d["folderUid"] == "spyglass" for d in dash)
    for d in dash:  # exactly the committed files
        committed = json.loads((GRAFANA_DIR / "dashboards" / f"{d['dashboard']['uid'][9:]}.json").read_text())
        assert d["dashboard"] == committed
    rules = [b for m, p, b in posts if p == "/api/v1/provisioning/alert-rules"]
    assert {r["uid"] for r in rules} == {"spyglass-critical-alert", "spyglass-worker-stalled",
                                         "spyglass-lag-not-draining"}
    assert all(r["folderUID"] == "spyglass" and r["ruleGroup"] for r in rules)
    cps = [b for m, p, b in posts if p == "/api/v1/provisioning/contact-points"]
    assert cps[0]["settings"]["url"] == "https://alertmanager.example.invalid"
    assert cps[0]["type"] == "prometheus-alertmanager"
    # the investigation link starts with the Grafana being provisioned (SPYGLASS_GRAFANA_URL is unset here)
    [paging] = [r for r in rules if r["uid"] == "spyglass-critical-alert"]
    assert paging["annotations"]["investigate"].startswith(f"{url}/d/spyglass-alert-investigation/")
    assert "${" not in json.dumps(paging)
    assert any(p == "/api/v1/provisioning/templates/spyglass" and m == "PUT" for m, p, _ in posts)
    assert "6 dashboards; 3 alert rules" in capsys.readouterr().out


def test_second_run_updates_instead_of_creating(grafana, env):
    url, g = grafana
    assert main(["grafana", "provision", "--url", url]) == 0
    g.calls.clear()
    assert main(["grafana", "provision", "--url", url]) == 0
    paths = [(m, p) for m, p, *_ in g.calls]
    assert ("PUT", "/api/datasources/uid/spyglass-clickhouse") in paths
    assert ("POST", "/api/datasources") not in paths and ("POST", "/api/folders") not in paths
    assert sum(1 for m, p in paths if m == "PUT" and p.startswith("/api/v1/provisioning/alert-rules/")) == 3


def test_token_from_a_named_variable_and_never_an_argument(grafana, monkeypatch, env, capsys):
    url, g = grafana
    monkeypatch.delenv("SPYGLASS_GRAFANA_TOKEN")
    monkeypatch.setenv("MY_TOKEN", "s3cret-token")
    assert main(["grafana", "provision", "--url", url, "--token-env", "MY_TOKEN", "--no-alerting"]) == 0
    assert not any("provisioning" in p for _, p, *_ in g.calls)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["grafana", "provision", "--url", url, "--token", "s3cret-token"])
    err = capsys.readouterr().err
    assert "SPYGLASS_GRAFANA_TOKEN" in err and "s3cret" not in err
    # a token passed where the variable's name goes is refused without being echoed
    assert main(["grafana", "provision", "--url", url, "--token-env", "glsa_abc-123.x"]) == 1
    assert "glsa_abc-123.x" not in capsys.readouterr().err


def test_missing_token_is_a_clear_error(grafana, monkeypatch, env, capsys):
    url, g = grafana
    monkeypatch.delenv("SPYGLASS_GRAFANA_TOKEN")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    assert main(["grafana", "provision", "--url", url]) != 0
    assert "SPYGLASS_GRAFANA_TOKEN" in capsys.readouterr().err
    assert g.calls == []


def test_grafana_refusal_names_the_object(grafana, monkeypatch, env, capsys):
    url, _ = grafana
    monkeypatch.setenv("SPYGLASS_GRAFANA_TOKEN", "wrong")
    assert main(["grafana", "provision", "--url", url]) == 1
    err = capsys.readouterr().err
    assert re.search(r"data source spyglass-clickhouse", err) and "wrong" not in err


def test_provision_with_a_ca_file_makes_grafana_verify_clickhouse_over_tls(grafana, env, tmp_path, capsys):
    url, g = grafana
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert main(["grafana", "provision", "--url", url, "--no-alerting", "--clickhouse-ca-file", str(ca)]) == 0
    (ds,) = [b for m, p, b, _ in g.calls if m == "POST" and p == "/api/datasources"]
    assert ds["jsonData"]["secure"] is True and ds["jsonData"]["tlsSkipVerify"] is False
    assert ds["jsonData"]["tlsAuthWithCACert"] is True and ds["jsonData"]["port"] == 9440
    assert ds["secureJsonData"]["tlsCACert"] == ca.read_text()
    assert ds["secureJsonData"]["password"] == "ro-pass"
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    assert main(["grafana", "provision", "--url", url, "--clickhouse-ca-file", str(not_pem)]) != 0
    assert "--clickhouse-ca-file" in capsys.readouterr().err


def test_prometheus_data_source_is_pushed_only_with_its_url(grafana, env):
    """Without --prometheus-url only ClickHouse is pushed (the file names compose's Prometheus); with it, the
    Prometheus data source the pipeline-health board's live panels read, at that URL, untouched by the
    ClickHouse host option."""
    url, g = grafana
    assert main(["grafana", "provision", "--url", url, "--no-alerting", "--clickhouse-host", "ch.internal",
                 "--prometheus-url", "http://prom.internal:9090"]) == 0
    ds = {b["uid"]: b for m, p, b, _ in g.calls if m == "POST" and p == "/api/datasources"}
    assert set(ds) == {"spyglass-clickhouse", "spyglass-prometheus"}
    prom = ds["spyglass-prometheus"]
    assert prom["type"] == "prometheus" and prom["url"] == "http://prom.internal:9090"
    assert "host" not in prom["jsonData"] and ds["spyglass-clickhouse"]["jsonData"]["host"] == "ch.internal"
    uses = {p["datasource"]["uid"] for b in boards() for p in json.loads(dashboard_json(b))["panels"]}
    assert "spyglass-prometheus" in uses
