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


SPYGLASS_SERVICES = ("init", "worker", "simulator")
# services that run as their image's own non-root user (the image sets USER): no `user:` needed
IMAGE_USERS = {"kafka": "apache/kafka runs as appuser", "grafana": "grafana/grafana runs as uid 472",
               "alertmanager": "prom/alertmanager runs as nobody", "prometheus": "prom/prometheus runs as nobody"}


def _cli_commands(svc: dict) -> list[list[str]]:
    """The ``spyglass`` command lines a Spyglass service runs (exec form, or `sh -c "spyglass ... && ..."`)."""
    if svc.get("entrypoint") == ["sh", "-c"]:
        parts = [p.strip() for p in svc["command"][-1].split("&&")]
        assert all(p.startswith("spyglass ") for p in parts), parts
        return [p.split()[1:] for p in parts]
    assert "entrypoint" not in svc  # the image's entrypoint: spyglass
    return [list(svc["command"])]


def test_compose_commands_are_real_cli_commands():
    from streams.cli import build_parser

    parser = build_parser()
    services = compose()["services"]
    assert [c[:1] for c in _cli_commands(services["init"])] == [["topics"], ["db"], ["db"]]
    for name in SPYGLASS_SERVICES:
        for argv in _cli_commands(services[name]):
            parser.parse_args(argv)  # raises SystemExit on an unknown command or flag


def test_compose_runs_the_dockerfile_image_and_installs_nothing_at_start():
    services = compose()["services"]
    for name in SPYGLASS_SERVICES:
        svc = services[name]
        assert svc["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        assert svc["image"] == services["worker"]["image"], name  # one image for all three
        text = yaml.safe_dump(svc, width=1000)
        for word in ("pip ", "apt-get", "cargo", "maturin", "/src"):
            assert word not in text, f"{name} runs {word!r} at start"
        assert "volumes" not in svc, name  # no source mount: the code is in the image


def test_compose_publishes_on_loopback_only_and_runs_nothing_as_root():
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
        user = str(svc.get("user", ""))
        assert (user and not user.startswith(("0", "root"))) or name in IMAGE_USERS, f"{name} runs as root"


def test_compose_has_no_default_admin_password():
    grafana = compose()["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    ch = compose()["services"]["clickhouse"]["environment"]
    assert ch["CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD:?")


def _stages(dockerfile: str) -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split into its stages."""
    lines = re.sub(r"\\\n", " ", dockerfile).splitlines()
    stages: list[list[str]] = []
    for line in (x.strip() for x in lines):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_dockerfile_builds_the_native_decoder_once_and_runs_unprivileged():
    rust, build, runtime = _stages((ROOT / "Dockerfile").read_text())
    assert rust == ["FROM ${RUST_IMAGE} AS rust"]  # only a source of the toolchain
    build_text, runtime_text = "\n".join(build), "\n".join(runtime)
    assert "COPY --from=rust /usr/local/cargo /usr/local/cargo" in build_text
    assert "pip wheel -q --no-deps -w /wheels ./schemas/native" in build_text
    assert "pip wheel -q --no-deps -w /wheels ." in build_text
    assert "COPY --from=build /opt/spyglass /opt/spyglass" in runtime_text
    for word in ("cargo", "rust", "pip ", "apt-get", "RUN pip"):
        assert word not in runtime_text, f"the runtime stage runs {word!r}"
    args = dict(line.split()[1].split("=", 1) for line in (ROOT / "Dockerfile").read_text().splitlines()
                if line.startswith("ARG "))
    for image in args.values():  # pinned, like the compose images
        assert ":" in image and not image.endswith(":latest"), image
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users and users[-1] == compose()["services"]["worker"]["user"] and not users[-1].startswith("0")
    assert runtime[-2:] == ['ENTRYPOINT ["spyglass"]', 'CMD ["--help"]']
    for line in build:  # everything it copies exists
        if line.startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), line


def test_grafana_datasource_is_the_official_clickhouse_plugin():
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    assert ds["type"] == "grafana-clickhouse-datasource"
    assert ds["secureJsonData"]["password"].startswith("${")


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_parses_where_the_client_offers_it(tmp_path):
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("this docker client has no compose plugin")
    required = dict.fromkeys(re.findall(r"\$\{(\w+):\?", (ROOT / "docker-compose.yml").read_text()), "x")
    r = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                       capture_output=True, text=True, env={**required, "PATH": "/usr/bin:/bin"},
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


def test_compose_prometheus_scrapes_every_worker_and_notify_with_the_repo_config():
    services = compose()["services"]
    prom = services["prometheus"]
    assert prom["image"].startswith("prom/prometheus:v") and "user" not in prom  # the image's nobody
    config = next(v.split(":")[0] for v in prom["volumes"] if v.endswith("/etc/prometheus/prometheus.yml:ro"))
    assert (ROOT / config).resolve() == (ROOT / "streams/stack/prometheus.yml").resolve()
    scrape = {j["job_name"]: j for j in yaml.safe_load((ROOT / config).read_text())["scrape_configs"]}
    # every replica of the worker service, on the port it serves /metrics on in compose
    (sd,) = scrape["spyglass-worker"]["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert "SPYGLASS_WORKER_WEB_PORT" not in services["worker"]["environment"]
    assert sd["port"] == Settings.model_fields["worker_web_port"].default
    assert services["worker"]["environment"]["SPYGLASS_WORKER_WEB_HOST"] == "0.0.0.0"
    notify_env = services["notify"]["environment"]
    notify_target = f"notify:{notify_env['SPYGLASS_NOTIFY_WEB_PORT']}"
    assert scrape["spyglass-notify"]["static_configs"] == [{"targets": [notify_target]}]
    assert notify_env["SPYGLASS_WORKER_WEB_HOST"] == "0.0.0.0"
    # Grafana's Prometheus data source is this service, at the interval it scrapes
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"
    interval = yaml.safe_load((ROOT / config).read_text())["global"]["scrape_interval"]
    assert ds["jsonData"]["timeInterval"] == interval
