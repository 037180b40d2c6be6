"""docker-compose.yml, Grafana provisioning and the README stay consistent with the settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_full_topology():
    c = compose()
    assert {"kafka", "clickhouse", "grafana", "worker", "simulator"} <= set(c["services"])
    for name, svc in c["services"].items():
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), f"{name}: pin the image"


def test_compose_kafka_is_the_version_the_local_stack_runs():
    image = compose()["services"]["kafka"]["image"]
    assert image == f"apache/kafka:{Settings.model_fields['kafka_version'].default}"


def test_compose_env_vars_are_settings():
    fields = {f"SPYGLASS_{n.upper()}" for n in Settings.model_fields}
    env = compose()["x-spyglass-env"]
    assert set(env) <= fields
    assert env["SPYGLASS_TOPIC_API_USAGE"] == Settings.model_fields["topic_api_usage"].default
    assert env["SPYGLASS_TOPIC_DEAD_LETTER"] == Settings.model_fields["topic_dead_letter"].default


def test_compose_commits_no_password():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${CLICKHOUSE_PASSWORD:?" in text
    assert not re.search(r"PASSWORD:\s*[\"']?[A-Za-z0-9]", text.replace("${CLICKHOUSE_PASSWORD", ""))


def test_compose_gives_the_administrator_password_to_init_only():
    """The worker and Grafana connect as the least-privilege users `spyglass db users` creates in init."""
    services = compose()["services"]
    worker_url = services["worker"]["environment"]["SPYGLASS_CLICKHOUSE_URL"]
    assert worker_url.startswith("clickhouse://worker:${SPYGLASS_CLICKHOUSE_WRITER_PASSWORD:?")
    assert services["grafana"]["environment"]["SPYGLASS_GRAFANA_CH_USER"] == "grafana"
    grafana_pw = services["grafana"]["environment"]["SPYGLASS_GRAFANA_CH_PASSWORD"]
    assert grafana_pw.startswith("${SPYGLASS_CLICKHOUSE_GRAFANA_PASSWORD:?")
    assert "&& spyglass db users" in services["init"]["command"][-1]
    for name, svc in services.items():
        admin = "${CLICKHOUSE_PASSWORD:?" in yaml.safe_dump(svc, width=1000)
        assert admin == (name in ("init", "clickhouse")), name
    for name in ("worker", "grafana"):
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"


def test_compose_mounts_grafana_provisioning_from_the_repo():
    vols = compose()["services"]["grafana"]["volumes"]
    for v in vols:
        src = v.split(":")[0]
        assert (ROOT / src).exists(), v


def test_compose_workers_install_the_native_decoder_init_builds():
    services = compose()["services"]
    assert "pip wheel -q -c constraints.txt -w /wheels ./schemas/native" in services["init"]["command"][-1]
    assert "/wheels/spyglass_native-*.whl" in services["worker"]["command"][-1]
    assert (ROOT / "schemas/native/pyproject.toml").exists()


def test_compose_commands_are_real_cli_commands():
    from streams.cli import build_parser

    parser = build_parser()
    for name in ("init", "worker", "simulator"):
        cmd = compose()["services"][name]["command"][-1]
        for part in cmd.split("&& spyglass ")[1:]:
            parser.parse_args(part.split())  # raises SystemExit on an unknown command or flag


def test_grafana_datasource_is_the_official_clickhouse_plugin():
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    assert ds["type"] == "grafana-clickhouse-datasource"
    assert ds["secureJsonData"]["password"].startswith("${")


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_parses_where_the_client_offers_it(tmp_path):
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("this docker client has no compose plugin")
    r = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                       capture_output=True, text=True, env={"CLICKHOUSE_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
                       check=False)
    assert r.returncode == 0, r.stderr


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`SPYGLASS_{name.upper()}`" in readme, f"README lacks SPYGLASS_{name.upper()}"


def test_compose_runs_the_alertmanager_the_local_stack_builds_with_the_example_routing():
    services = compose()["services"]
    am = services["alertmanager"]
    assert am["image"] == f"prom/alertmanager:v{Settings.model_fields['alertmanager_version'].default}"
    config = next(v.split(":")[0] for v in am["volumes"] if v.endswith("/etc/alertmanager/alertmanager.yml:ro"))
    assert (ROOT / config).resolve() == (ROOT / "streams/stack/alertmanager.yml").resolve()
    assert services["notify"]["environment"]["SPYGLASS_ALERTMANAGER_URL"] == "http://alertmanager:9093"
    routing = yaml.safe_load((ROOT / config).read_text())
    assert routing["route"]["group_by"][0] == "tenant" and "entity" in routing["route"]["group_by"]
    incident, duplicate = routing["inhibit_rules"]
    assert incident["source_matchers"] == ['detector="risk.incident"'] and incident["equal"] == ["tenant", "principal"]
    assert duplicate["target_matchers"] == ['source="grafana"'] and duplicate["equal"] == ["alert_id"]
    # Grafana's on-call rule carries what that inhibition and the routing match on
    from grafana.dashboards_src.alerting import RULES, rule
    from streams.notify.alertmanager import SOURCE

    assert duplicate["source_matchers"] == [f'source="{SOURCE}"']
    paging = rule(RULES[0])
    assert paging["labels"]["source"] == "grafana" and "severity" not in paging["labels"]
    assert {"alert_id", "tenant", "severity", "entity"} <= set(RULES[0].columns)
