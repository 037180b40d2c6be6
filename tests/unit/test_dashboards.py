"""Dashboards and alert rules are valid Grafana provisioning; the committed files are what the code generates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from grafana.dashboards_src import DASHBOARD_DIR, GRAFANA_DIR, boards, render
from grafana.dashboards_src.dashboards import INVESTIGATION_UID
from grafana.dashboards_src.kit import var_value

PROVISIONING = GRAFANA_DIR / "provisioning"
RENDERED = render()
DASHBOARDS = {rel: json.loads(text) for rel, text in RENDERED.items() if rel.endswith(".json")}


def provisioned_datasource_uids() -> set[str]:
    out = set()
    for f in (PROVISIONING / "datasources").glob("*.yaml"):
        out |= {d["uid"] for d in yaml.safe_load(f.read_text())["datasources"]}
    return out


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_six_dashboards_with_distinct_uids_and_titles():
    assert len(DASHBOARDS) == 6
    assert len({d["uid"] for d in DASHBOARDS.values()}) == 6
    assert {d["title"] for d in DASHBOARDS.values()} == {
        "Security overview", "API governance", "Data access", "Agent execution", "Alert investigation",
        "Pipeline health"}


@pytest.mark.parametrize("rel", sorted(RENDERED))
def test_committed_file_is_what_the_code_generates(rel):
    path = GRAFANA_DIR / rel
    assert path.exists(), f"{rel} missing: run make dashboards"
    assert path.read_text(encoding="utf-8") == RENDERED[rel], f"{rel} is stale: run make dashboards"


def test_no_stray_dashboard_files():
    committed = {f"dashboards/{p.name}" for p in DASHBOARD_DIR.glob("*.json")}
    assert committed == {r for r in RENDERED if r.startswith("dashboards/")}


def test_provisioning_reads_the_generated_dashboards():
    prov = yaml.safe_load((PROVISIONING / "dashboards" / "spyglass.yaml").read_text())["providers"][0]
    assert prov["type"] == "file"
    compose = yaml.safe_load((GRAFANA_DIR.parent / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == prov["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"


@pytest.mark.parametrize("rel", sorted(DASHBOARDS))
def test_dashboard_is_valid_grafana_json(rel):
    d = DASHBOARDS[rel]
    uids = provisioned_datasource_uids()
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["uid"] and len(d["uid"]) <= 40 and re.fullmatch(r"[a-z0-9-]+", d["uid"])
    assert d["time"]["from"].startswith("now-") and d["time"]["to"] == "now"
    ps = panels(d)
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {rel}"
    for p in ps:
        if p["type"] == "row":
            continue
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24
        assert p["targets"], f"{p['title']}: no targets"
        if p["datasource"]["type"] == "prometheus":  # PromQL: checked in test_prom_panels.py
            assert p["datasource"]["uid"] in uids and d["uid"] == "spyglass-pipeline-health", p["title"]
            for t in p["targets"]:
                assert t["datasource"] == p["datasource"] and t["expr"].strip() and "rawSql" not in t
            continue
        assert p["datasource"]["uid"] in uids and p["datasource"]["type"] == "grafana-clickhouse-datasource"
        for t in p["targets"]:
            assert t["datasource"]["uid"] in uids
            assert t["rawSql"].strip().upper().startswith("SELECT"), p["title"]
            assert t["editorType"] == "sql" and t["format"] in (0, 1)
            # 18.16 has no toStartOfInterval ($__timeInterval) and no DateTime64 (the *_ms macros)
            assert "$__timeInterval" not in t["rawSql"] and "_ms(" not in t["rawSql"]
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"]["uid"] in uids
        if v.get("includeAll"):
            assert v["allValue"] == "__all"


@pytest.mark.parametrize("rel", sorted(DASHBOARDS))
def test_panels_have_units_or_are_tables(rel):
    for p in panels(DASHBOARDS[rel]):
        if p["type"] in ("timeseries", "stat", "bargauge"):
            assert p["fieldConfig"]["defaults"].get("unit") or p["title"] in (
                "Explanation", "Evidence features vs baseline"), p["title"]


def test_tenant_and_entity_variables():
    for rel, d in DASHBOARDS.items():
        names = {v["name"] for v in d["templating"]["list"]}
        if d["uid"] == "spyglass-pipeline-health":
            assert names == {"worker"}  # pipeline_health rows carry no tenant
        elif d["uid"] == INVESTIGATION_UID:
            assert {"tenant", "alert"} <= names
        else:
            assert {"tenant", "entity"} <= names, rel


def test_every_alert_table_links_to_the_investigation():
    n = 0
    the_alert = f"alert_id = {var_value('alert')}"
    for d in DASHBOARDS.values():
        for p in panels(d):
            sql = p["targets"][0].get("rawSql", "")
            if p["type"] != "table" or not sql.startswith("SELECT alert_id,"):
                continue
            if d["uid"] == INVESTIGATION_UID and f"FROM alerts FINAL WHERE {the_alert}\n)" in sql:
                continue  # the investigated alert itself
            n += 1
            links = [prop["value"] for o in p["fieldConfig"]["overrides"] if o["matcher"]["options"] == "alert_id"
                     for prop in o["properties"] if prop["id"] == "links"]
            assert links, p["title"]
            url = links[0][0]["url"]
            assert url.startswith(f"/d/{INVESTIGATION_UID}/") and "var-alert=${__data.fields.alert_id}" in url
    assert n >= 5


def test_specs_match_the_json():
    """Every panel is either a ClickHouse panel (``specs``: executed by the panel-query tests) or a Prometheus
    one (``prom_specs``: test_prom_panels.py), never neither, so no query of the provisioning goes unchecked."""
    for b in boards():
        d = DASHBOARDS[f"dashboards/{b.uid.removeprefix('spyglass-')}.json"]
        by_id = {p["id"]: p for p in panels(d)}
        ch, prom = {s.panel_id for s in b.specs}, {s.panel_id for s in b.prom_specs}
        assert not ch & prom and ch | prom == {i for i, p in by_id.items() if p["type"] != "row"}, b.uid
        for s in b.prom_specs:
            assert [(t["legendFormat"], t["expr"]) for t in by_id[s.panel_id]["targets"]] == list(s.targets)
            assert by_id[s.panel_id]["datasource"]["type"] == "prometheus" and by_id[s.panel_id]["title"] == s.title
        for s in b.specs:
            assert by_id[s.panel_id]["targets"][0]["rawSql"] == s.sql
            assert by_id[s.panel_id]["title"] == s.title
            assert s.columns


def test_alert_rules_contact_point_and_template():
    doc = yaml.safe_load(RENDERED["provisioning/alerting/spyglass.yaml"])
    uids = provisioned_datasource_uids()
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["uid"] for r in rules} >= {"spyglass-critical-alert", "spyglass-worker-stalled"}
    for r in rules:
        refs = {q["refId"] for q in r["data"]}
        assert r["condition"] in refs
        for q in r["data"]:
            assert q["datasourceUid"] in uids | {"__expr__"}
    contact = {c["name"] for c in doc["contactPoints"]}
    assert {p["receiver"] for p in doc["policies"]} <= contact
    template_names = set(re.findall(r'define "([^"]+)"', doc["templates"][0]["template"]))
    assert {"spyglass.title", "spyglass.message"} <= template_names
    for c in doc["contactPoints"]:
        for rcv in c["receivers"]:
            # on-call goes through Alertmanager's routing (critical pages, high to chat)
            assert rcv["type"] == "prometheus-alertmanager"
            assert rcv["settings"]["url"] == "${SPYGLASS_ALERTMANAGER_URL}", "no endpoint committed"
            assert rcv["disableResolveMessage"] is False
    [paging] = [r for r in rules if r["uid"] == "spyglass-critical-alert"]
    sql = paging["data"][0]["model"]["rawSql"]
    assert "severity IN ('critical', 'high')" in sql and "alert_id NOT IN (SELECT alert_id FROM alert_status" in sql
    assert paging["data"][0]["relativeTimeRange"]["from"] >= 86400, "an alert nobody looked at must stay firing"
    assert "$labels.entity" in paging["annotations"]["summary"]
    assert paging["annotations"]["description"] == "{{ $labels.explanation }}"
    assert "var-alert={{ $labels.alert_id }}" in paging["annotations"]["investigate"]
    assert {"tenant", "entity"} <= set(doc["policies"][0]["group_by"])


def test_alert_boards_have_severity_detector_status_and_an_entity_search():
    for d in DASHBOARDS.values():
        sqls = [p["targets"][0].get("rawSql", "") for p in panels(d)]
        tables = [q for q in sqls if q.startswith("SELECT alert_id,")]
        if d["uid"] in (INVESTIGATION_UID, "spyglass-pipeline-health"):
            continue
        names = {v["name"]: v for v in d["templating"]["list"]}
        assert {"severity", "detector", "status", "search", "entity"} <= set(names), d["uid"]
        assert names["search"]["type"] == "textbox"
        assert var_value("search") in names["entity"]["query"] and "LIMIT 100" in names["entity"]["query"]
        for q in tables:
            for var in ("severity", "detector", "status"):
                assert var_value(var) in q, (d["uid"], var)


def test_committed_dashboards_match_the_files_grafana_reads():
    # the provisioning path in the repository holds exactly the generated dashboards, parseable as JSON
    for p in Path(DASHBOARD_DIR).glob("*.json"):
        assert json.loads(p.read_text())["uid"].startswith("spyglass-")


def test_every_variable_reaches_sql_percent_encoded_and_decoded():
    """A dashboard variable in SQL is only ever ``decodeURLComponent('${name:percentencode}')`` (kit.var_value):
    any other form (bare, ``:sqlstring``, ``:singlequote``) lets a value from the URL end its string literal."""
    found = 0
    for d in DASHBOARDS.values():
        sqls = [t["rawSql"] for p in panels(d) for t in p["targets"] if "rawSql" in t]
        sqls += [v["query"] for v in d["templating"]["list"] if v.get("type") == "query"]
        for sql in sqls:
            refs = re.findall(r"\$\{?(?!__)\w+(?::\w+)?\}?", sql)
            safe = re.findall(r"decodeURLComponent\('\$\{(\w+):percentencode\}'\)", sql)
            assert len(refs) == len(safe), sql
            found += len(safe)
    assert found >= 50
