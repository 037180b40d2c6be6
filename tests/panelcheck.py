"""Shared by the unit (chDB) and integration (ClickHouse 18.16 server) panel tests: run every panel and rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from grafana.dashboards_src import boards
from grafana.dashboards_src.alerting import RULES
from grafana.dashboards_src.kit import ALL, PanelSpec
from streams.bench.panelfill import Filled, run_panel


@dataclass
class Result:
    spec: PanelSpec
    columns: list[str]
    rows: list[tuple]


def all_specs() -> list[PanelSpec]:
    """Every panel, every query variable (columns: one) and every alert rule of the provisioning."""
    out = []
    for b in boards():
        out.extend(b.specs)
        out.extend(PanelSpec(b.uid, -i, f"variable {name}", sql, ("*",)) for i, (name, sql) in
                   enumerate(sorted(b.variables.items()), start=1))
    out.extend(PanelSpec("alerting", -100 - i, r.title, r.sql, r.columns) for i, r in enumerate(RULES))
    return out


def run_all(store: Any, filled: Filled, *, tenant: str = ALL, entity: str = ALL) -> list[Result]:
    variables = {"tenant": tenant, "entity": entity, "worker": ALL, "alert": filled.alert_id, "severity": ALL,
                 "detector": ALL, "status": ALL, "search": ""}
    out = []
    rule_window = {r.title: r.window_s for r in RULES}
    for spec in all_specs():
        start = filled.start
        if spec.dashboard == "alerting":
            start = filled.end - timedelta(seconds=rule_window[spec.title])
        cols, rows = run_panel(store, spec, start=start, end=filled.end, variables=variables)
        out.append(Result(spec, cols, rows))
    return out


def check(results: list[Result], *, want_data: bool) -> list[str]:
    """Problems found: wrong columns, or (with data) an empty panel that has no reason to be empty."""
    problems = []
    for r in results:
        s = r.spec
        name = f"{s.dashboard} / {s.title}"
        if s.columns == ("*",):
            if len(r.columns) != 1:
                problems.append(f"{name}: a variable query must return one column, got {r.columns}")
        elif tuple(r.columns) != s.columns:
            problems.append(f"{name}: columns {r.columns} != {list(s.columns)}")
        if want_data and not r.rows and s.may_be_empty is None and s.dashboard != "alerting":
            problems.append(f"{name}: no rows")
    return problems
