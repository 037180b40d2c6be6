"""The pipeline-health board's Prometheus panels read series the worker really exports.

They cannot run on ClickHouse like the other panels (tests/panelcheck.py); here every PromQL expression is
checked against streams/metrics.py's registry: each series exists with a type the function suits (``rate``
on counters and histogram buckets, not on gauges). tests/integration/test_prometheus.py runs them through a
real Prometheus scraping a real worker where the Prometheus binary is built.
"""

from __future__ import annotations

import re

from grafana.dashboards_src import boards
from grafana.dashboards_src.kit import PromSpec, prom_expand
from streams.metrics import REGISTRY

SERIES = re.compile(r"\b(spyglass_\w+)\b")


def exported() -> dict[str, str]:
    """Series name -> type ("counter", "gauge", "histogram_bucket", ...), as /metrics names them."""
    out = {}
    for fam in REGISTRY.collect():
        if fam.type == "counter":
            out[f"{fam.name}_total"] = "counter"
        elif fam.type == "histogram":
            out |= {f"{fam.name}_bucket": "histogram_bucket", f"{fam.name}_sum": "counter",
                    f"{fam.name}_count": "counter"}
        else:
            out[fam.name] = fam.type
    return out


def prom_specs() -> list[PromSpec]:
    return [s for b in boards() for s in b.prom_specs]


def test_the_pipeline_health_board_has_prometheus_panels():
    specs = prom_specs()
    assert {s.dashboard for s in specs} == {"spyglass-pipeline-health"}
    assert len(specs) >= 4


def test_every_promql_series_is_one_the_worker_exports_with_a_fitting_type():
    series = exported()
    for s in prom_specs():
        for _legend, expr in s.targets:
            names = SERIES.findall(expr)
            assert names, f"{s.title}: {expr} reads no spyglass series"
            for name in names:
                assert name in series, f"{s.title}: {name} is not exported by streams/metrics.py"
                rated = re.search(rf"\brate\(\s*{name}\b", expr) is not None
                assert rated == (series[name] in ("counter", "histogram_bucket")), (s.title, name, series[name])
                if series[name] == "histogram_bucket":
                    assert "histogram_quantile(" in expr and "by (le)" in expr, s.title


def test_legends_name_labels_the_query_keeps():
    """A legend ``{{label}}`` shows only if the aggregation keeps that label (``sum by (label)``)."""
    for s in prom_specs():
        for legend, expr in s.targets:
            kept = {x.strip() for grp in re.findall(r"by \(([^)]*)\)", expr) for x in grp.split(",")}
            for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", legend):
                assert label in kept, (s.title, legend, expr)


def test_rate_interval_is_grafanas_variable_and_expands():
    for s in prom_specs():
        for _legend, expr in s.targets:
            if "rate(" in expr:
                assert "[$__rate_interval]" in expr, s.title
            assert "$" not in prom_expand(expr, rate_interval="2m")


def test_the_worker_starts_the_rated_counters_at_zero():
    """A counter series born at its first increment shows no rate for it: the worker creates them at 0."""
    from prometheus_client import generate_latest

    from streams.metrics import zero_series

    zero_series(["api_usage"], ["t-zero.api-usage"])
    text = generate_latest(REGISTRY).decode()
    assert 'spyglass_dead_letters_total{topic="t-zero.api-usage"} 0.0' in text
    assert re.search(r'spyglass_events_in_total\{kind="api_usage"\} \d', text)
