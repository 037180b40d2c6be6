"""The small typed layer over grafana-foundation-sdk that every Spyglass dashboard uses.

The SDK has no ClickHouse query type, so :class:`ClickHouseQuery` is one (the target model of
the official ``grafana-clickhouse-datasource`` plugin, SQL editor). Each panel keeps its SQL
and the columns it must return in a :class:`PanelSpec`, so tests and ``spyglass bench panels``
run exactly what Grafana runs, after :func:`expand` (the plugin's macros and our variables).

Dialect: every query must run on ClickHouse 18.16 and on a current release. 18.16 has no
``toStartOfInterval``, so ``$__timeInterval`` is not used: time buckets are
``toDateTime(intDiv(toUInt32(col), $__interval_s) * $__interval_s)`` (see :func:`bucket`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as dm

DATASOURCE_UID = "spyglass-clickhouse"
DATASOURCE_TYPE = "grafana-clickhouse-datasource"
DS = dm.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)
PROM_UID = "spyglass-prometheus"  # grafana/provisioning/datasources/prometheus.yaml: the workers' /metrics
PROM_TYPE = "prometheus"
PROM_DS = dm.DataSourceRef(type_val=PROM_TYPE, uid=PROM_UID)
ALL = "__all"  # the value of a variable's "All" option: queries test for it, so an empty list never yields IN ()

FORMAT_TIMESERIES = 0  # the plugin's Format enum
FORMAT_TABLE = 1


class ClickHouseQuery(cogvariants.Dataquery):
    """A target of the ClickHouse plugin in SQL-editor mode."""

    def __init__(self, ref_id: str, raw_sql: str, *, timeseries: bool) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.timeseries = timeseries

    def to_json(self) -> dict[str, Any]:
        return {
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorType": "sql",
            "format": FORMAT_TIMESERIES if self.timeseries else FORMAT_TABLE,
            "queryType": "timeseries" if self.timeseries else "table",
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: ClickHouseQuery) -> None:
        self._internal = query

    def build(self) -> ClickHouseQuery:
        return self._internal


class PromQuery(cogvariants.Dataquery):
    """A target of Grafana's Prometheus data source (code editor, range query)."""

    def __init__(self, ref_id: str, expr: str, legend: str) -> None:
        self.ref_id = ref_id
        self.expr = expr
        self.legend = legend

    def to_json(self) -> dict[str, Any]:
        return {
            "datasource": {"type": PROM_TYPE, "uid": PROM_UID},
            "editorMode": "code",
            "expr": self.expr,
            "legendFormat": self.legend,
            "range": True,
            "refId": self.ref_id,
        }


class PromQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, query: PromQuery) -> None:
        self._internal = query

    def build(self) -> PromQuery:
        return self._internal


@dataclass(frozen=True)
class PromSpec:
    """A panel that reads Prometheus: its PromQL targets (legend, expression), checked against the worker's
    metrics registry and, where a Prometheus binary is built, run through Prometheus's HTTP API."""

    dashboard: str
    panel_id: int
    title: str
    targets: tuple[tuple[str, str], ...]


def prom_expand(expr: str, *, rate_interval: str = "1m") -> str:
    """The expression as Prometheus receives it from Grafana (``$__rate_interval`` replaced)."""
    return expr.replace("$__rate_interval", rate_interval)


@dataclass(frozen=True)
class PanelSpec:
    """What a panel runs and must return: the test and bench contract of one panel."""

    dashboard: str
    panel_id: int
    title: str
    sql: str
    columns: tuple[str, ...]
    # why this panel may legitimately be empty on the simulated fixture (None = it must have data)
    may_be_empty: str | None = None


@dataclass
class Board:
    """A dashboard under construction: the SDK builder plus the specs of its panels."""

    uid: str
    title: str
    builder: Any
    specs: list[PanelSpec] = field(default_factory=list)  # the ClickHouse panels
    prom_specs: list[PromSpec] = field(default_factory=list)  # the Prometheus panels
    variables: dict[str, str] = field(default_factory=dict)  # name -> SQL of query variables
    _next_id: int = 1
    _x: int = 0  # layout cursor: panels flow left to right, wrapping at 24 columns
    _y: int = 0
    _row_h: int = 0

    def _place(self, panel: Any) -> None:
        pos = panel.build().grid_pos
        w, h = pos.w, pos.h
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        panel.grid_pos(dm.GridPos(x=self._x, y=self._y, w=w, h=h))
        self._x += w
        self._row_h = max(self._row_h, h)

    def add(self, panel: Any, sql: str, columns: tuple[str, ...] | list[str], *, timeseries: bool = False,
            may_be_empty: str | None = None) -> None:
        sql = _dedent(sql)
        pid = self._next_id
        self._next_id += 1
        panel.id(pid).datasource(DS).with_target(
            ClickHouseQueryBuilder(ClickHouseQuery("A", sql, timeseries=timeseries)))
        title = panel.build().title or ""
        self._place(panel)
        self.builder.with_panel(panel)
        self.specs.append(PanelSpec(self.uid, pid, title, sql, tuple(columns), may_be_empty))

    def add_prom(self, panel: Any, targets: list[tuple[str, str]]) -> None:
        """Add a panel of PromQL ``targets`` (legend format, expression) on the Prometheus data source."""
        pid = self._next_id
        self._next_id += 1
        panel.id(pid).datasource(PROM_DS)
        for i, (legend, expr) in enumerate(targets):
            panel.with_target(PromQueryBuilder(PromQuery(chr(ord("A") + i), expr, legend)))
        title = panel.build().title or ""
        self._place(panel)
        self.builder.with_panel(panel)
        self.prom_specs.append(PromSpec(self.uid, pid, title, tuple(targets)))


def _dedent(sql: str) -> str:
    lines = [ln.rstrip() for ln in sql.strip("\n").splitlines()]
    indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    return "\n".join(ln[indent:] for ln in lines)


def bucket(col: str) -> str:
    """A time bucket of the dashboard's interval on a DateTime column, valid on ClickHouse 18.16."""
    return f"toDateTime(intDiv(toUInt32({col}), $__interval_s) * $__interval_s)"


def minute_bucket(col: str) -> str:
    """Like :func:`bucket`, at least one minute wide (for the per-minute aggregate tables)."""
    return (f"toDateTime(intDiv(toUInt32({col}), greatest($__interval_s, 60)) * greatest($__interval_s, 60))")


def var_value(var: str) -> str:
    """The value of dashboard variable ``var`` as a ClickHouse string expression that no value can escape.

    Grafana's ``percentencode`` format leaves only ``A-Z a-z 0-9 - _ . ~`` and ``%XX`` escapes, none of which
    ends or escapes a string literal; ``decodeURLComponent`` (ClickHouse 18.16 and current) gives the value
    back byte for byte. ``sqlstring`` would not do: it doubles ``'`` but leaves ``\\``, which ClickHouse
    reads as an escape, so ``\\'`` ends the literal and the rest of the value is SQL.
    """
    return f"decodeURLComponent('${{{var}:percentencode}}')"


def var_filter(var: str, col: str) -> str:
    """``col`` equals the variable, or the variable is All (see :func:`var_value`)."""
    return f"({var_value(var)} = '{ALL}' OR {col} = {var_value(var)})"


# --- macro and variable expansion: what Grafana and the plugin do before the SQL reaches ClickHouse ----------

_MACRO = re.compile(r"\$__(timeFilter|dateFilter|fromTime|toTime|interval_s)\b(?:\(([^()]*)\))?")
_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def expand(sql: str, *, start: datetime, end: datetime, interval_s: int = 60,
           variables: dict[str, str] | None = None) -> str:
    """Expand the plugin's macros (as its Go code does) and dashboard variables for a time range.

    Examples
    --------
    >>> from datetime import UTC
    >>> t0, t1 = datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC)
    >>> expand("SELECT 1 FROM t WHERE $__timeFilter(ts) AND tenant = '${tenant:percentencode}'", start=t0, end=t1,
    ...        variables={"tenant": "O'Brien"})
    "SELECT 1 FROM t WHERE ts >= toDateTime(1793577600) AND ts <= toDateTime(1793664000) AND tenant = 'O%27Brien'"
    """
    f, t = int(start.timestamp()), int(end.timestamp())

    def macro(m: re.Match[str]) -> str:
        name, arg = m.group(1), (m.group(2) or "").strip()
        if name == "timeFilter":
            return f"{arg} >= toDateTime({f}) AND {arg} <= toDateTime({t})"
        if name == "dateFilter":
            return f"{arg} >= toDate('{start:%Y-%m-%d}') AND {arg} <= toDate('{end:%Y-%m-%d}')"
        if name == "fromTime":
            return f"toDateTime({f})"
        if name == "toTime":
            return f"toDateTime({t})"
        return str(max(1, interval_s))

    out = _MACRO.sub(macro, sql)
    values = variables or {}

    def var(m: re.Match[str]) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if name.startswith("__") or name not in values:
            return m.group(0)
        if fmt == "percentencode":  # Grafana's: encodeURIComponent, and !'()* too (RFC 3986 unreserved stay)
            return quote(values[name], safe="")
        return values[name]

    return _VAR.sub(var, out)
