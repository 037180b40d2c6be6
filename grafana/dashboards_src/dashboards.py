"""The six Spyglass dashboards, as code. ``python -m grafana.dashboards_src`` writes them to grafana/dashboards/.

Tables (the storage contract, /schemas/clickhouse): ``events`` (raw audit trail: payload JSON, and the contract
fields the worker decoded as typed columns, which panels read instead of re-parsing payload),
``events_minute`` and ``entity_risk_minute`` (per-minute aggregates kept by materialized views:
time series read these, never raw events), ``alerts`` (ReplacingMergeTree: read with FINAL),
``alert_status`` (latest row wins, no row = open), ``pipeline_health``, ``engine_checkpoints``.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm

from .kit import ALL, DS, Board, bucket, minute_bucket, var_filter, var_value

LIVE = "Live, from Prometheus (the workers' /metrics, every worker; the worker variable does not apply)."

INVESTIGATION_UID = "spyglass-alert-investigation"
SEVERITY_RANK = "indexOf(['info', 'low', 'medium', 'high', 'critical'], severity)"
TENANT = var_filter("tenant", "tenant")
ENTITY = var_filter("entity", "entity")
# an alert is in the range when its activity overlaps it (partitioned by first_seen)
ALERT_RANGE = "first_seen <= $__toTime AND last_seen >= $__fromTime"
LATEST_STATUS = "(SELECT alert_id, argMax(status, updated_at) AS st FROM alert_status GROUP BY alert_id)"
NOT_CLOSED = ("alert_id NOT IN (SELECT alert_id FROM alert_status GROUP BY alert_id "
              "HAVING argMax(status, updated_at) != 'open')")
SEVERITIES = ("critical", "high", "medium", "low", "info")
# the alert boards' filters: severity at least the chosen one, the detector, the analyst status
SEVERITY_AT_LEAST = (f"({var_value('severity')} = '{ALL}' OR {SEVERITY_RANK} >= "
                     f"indexOf(['info', 'low', 'medium', 'high', 'critical'], {var_value('severity')}))")
DETECTOR = var_filter("detector", "detector")
ALERT_FILTERS = f"{SEVERITY_AT_LEAST} AND {DETECTOR}"
STATUS_OF = "if(st = '', 'open', st)"  # an alert's status after the LATEST_STATUS join (no row: open)
STATUS = var_filter("status", STATUS_OF)
def _steps(*pairs: tuple[float | None, str]) -> cb.Builder:  # type: ignore[name-defined]
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in pairs])


def _stat(title: str) -> stat.Panel:
    """A stat panel that shows every numeric column of the last row (one big number per column)."""
    return (stat.Panel().title(title).graph_mode(common.BigValueGraphMode.NONE)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def _investigate_link() -> list[dm.DynamicConfigValue]:
    url = (f"/d/{INVESTIGATION_UID}/alert-investigation?var-alert=${{__data.fields.alert_id}}"
           "&var-tenant=${__data.fields.tenant}&${__url_time_range}")
    return [dm.DynamicConfigValue(id_val="links", value=[{"title": "Investigate this alert", "url": url}])]


def _board(uid: str, title: str, *, tags: list[str], time_from: str, refresh: str, description: str) -> Board:
    b = (db.Dashboard(title).uid(uid).tags(["spyglass", *tags]).description(description)
         .time(time_from, "now").refresh(refresh).timezone("utc").readonly()
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .link(db.DashboardLink("Spyglass").type(dm.DashboardLinkType.DASHBOARDS).tags(["spyglass"])
               .as_dropdown(True).include_vars(True).keep_time(True)))
    board = Board(uid=uid, title=title, builder=b)
    _variable(board, "tenant", "Tenant",
              "SELECT DISTINCT tenant FROM events_minute WHERE $__timeFilter(minute) ORDER BY tenant")
    return board


def _variable(board: Board, name: str, label: str, sql: str, *, include_all: bool = True, sort: bool = True) -> None:
    v = (db.QueryVariable(name).label(label).datasource(DS).query(sql)
         .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
         .sort(dm.VariableSort.ALPHABETICAL_ASC if sort else dm.VariableSort.DISABLED))
    if include_all:
        v = v.include_all(True).all_value(ALL).current(dm.VariableOption(selected=True, text="All", value="$__all"))
    board.builder.with_variable(v)
    board.variables[name] = sql


def _entity_variable(board: Board, kind: str | None, label: str) -> None:
    """The entity picker: a search box, and the busiest entities whose name contains what it holds.

    The official ClickHouse plugin does not pass a dropdown's typed text to its query (no ``$__searchFilter``),
    so the search is a text box the entity query reads: it lists at most 100 matches, busiest first,
    instead of every entity of the range.
    """
    where = f"kind = '{kind}' AND " if kind else ""
    board.builder.with_variable(db.TextBoxVariable("search").label(f"{label} contains").default_value(""))
    _variable(board, "entity", label,
              f"SELECT entity FROM events_minute WHERE {where}$__timeFilter(minute) AND {TENANT} "
              f"AND position(lowerUTF8(entity), lowerUTF8({var_value('search')})) > 0 "
              "GROUP BY entity ORDER BY sum(events) DESC, entity LIMIT 100", sort=False)


def _alert_variables(board: Board, kind: str | None) -> None:
    """Severity (at least), detector and analyst-status pickers of an alert board."""
    sev = (db.CustomVariable("severity").label("Severity (at least)").values(",".join(SEVERITIES))
           .include_all(True).all_value(ALL).current(dm.VariableOption(selected=True, text="All", value="$__all")))
    board.builder.with_variable(sev)
    where = f" AND kind = '{kind}'" if kind else ""
    _variable(board, "detector", "Detector",
              f"SELECT DISTINCT detector FROM alerts FINAL WHERE {ALERT_RANGE} AND {TENANT}{where} ORDER BY detector")
    _variable(board, "status", "Status",
              "SELECT DISTINCT st FROM (SELECT 'open' AS st UNION ALL SELECT status AS st FROM alert_status) "
              "ORDER BY st")


def _alerts_table(board: Board, title: str, where: str, *, w: int = 24, h: int = 9, limit: int = 200,
                  may_be_empty: str | None = None, filtered: bool = True) -> None:
    """Alerts (deduplicated, with their latest status) where ``where``; the alert id links to the investigation.

    ``filtered``: the board's severity, detector and status pickers apply (see :func:`_alert_variables`).
    """
    if filtered:
        where, status = f"{where} AND {ALERT_FILTERS}", f"\n        WHERE {STATUS}"
    else:
        status = ""
    sql = f"""
        SELECT alert_id, first_seen, last_seen, tenant, severity, score, detector, entity_type, entity, title,
               {STATUS_OF} AS status
        FROM (
            SELECT alert_id, first_seen, last_seen, tenant, severity, score, detector, entity_type, entity, title
            FROM alerts FINAL
            WHERE {ALERT_RANGE} AND {TENANT} AND {where}
        ) AS a ANY LEFT JOIN {LATEST_STATUS} AS s USING alert_id{status}
        ORDER BY last_seen DESC, alert_id
        LIMIT {limit}
    """
    p = (table.Panel().title(title).span(w).height(h)
         .override_by_name("alert_id", _investigate_link())
         .override_by_name("score", [dm.DynamicConfigValue(id_val="unit", value="percentunit")])
         .override_by_name("severity", [
             dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
             dm.DynamicConfigValue(id_val="mappings", value=[{"type": "value", "options": {
                 "critical": {"color": "dark-red", "index": 0}, "high": {"color": "red", "index": 1},
                 "medium": {"color": "orange", "index": 2}, "low": {"color": "yellow", "index": 3},
                 "info": {"color": "blue", "index": 4}}}])]))
    board.add(p, sql, ["alert_id", "first_seen", "last_seen", "tenant", "severity", "score", "detector",
                       "entity_type", "entity", "title", "status"], may_be_empty=may_be_empty)


# --- 1. Security overview ------------------------------------------------------------------------------------


def security_overview() -> Board:
    b = _board("spyglass-security-overview", "Security overview", tags=["soc"], time_from="now-24h", refresh="1m",
               description="What is under attack right now: open alerts, risky entities, techniques.")
    _entity_variable(b, None, "Entity")
    _alert_variables(b, None)
    b.add(_stat("Open alerts by severity").span(8).height(5)
          .color_mode(common.BigValueColorMode.BACKGROUND)
          .thresholds(_steps((None, "green"), (1, "red"))).unit("short"),
          f"""
          SELECT countIf(severity = 'critical') AS critical, countIf(severity = 'high') AS high,
                 countIf(severity = 'medium') AS medium, countIf(severity = 'low') AS low
          FROM alerts FINAL
          WHERE {ALERT_RANGE} AND {TENANT} AND {ENTITY} AND {NOT_CLOSED} AND {ALERT_FILTERS}
          """, ["critical", "high", "medium", "low"])
    b.add(bargauge.Panel().title("Open alerts by detector").span(8).height(10)
          .orientation(common.VizOrientation.HORIZONTAL).display_mode(common.BarGaugeDisplayMode.GRADIENT)
          .thresholds(_steps((None, "orange"), (10, "red"))).unit("short").min(0),
          f"""
          SELECT detector, count() AS alerts
          FROM alerts FINAL
          WHERE {ALERT_RANGE} AND {TENANT} AND {ENTITY} AND {NOT_CLOSED} AND {ALERT_FILTERS}
          GROUP BY detector
          ORDER BY alerts DESC, detector
          LIMIT 20
          """, ["detector", "alerts"])
    b.add(table.Panel().title("Top risky principals, keys and agents").span(8).height(10)
          .override_by_name("risk", [dm.DynamicConfigValue(id_val="custom.cellOptions",
                                                           value={"type": "gauge", "mode": "gradient"})])
          .thresholds(_steps((None, "green"), (1, "orange"), (3, "red"))),
          f"""
          SELECT entity_type, entity, tenant, round(sum(score_sum), 2) AS risk, sum(alerts) AS alerts,
                 arrayElement(['info', 'low', 'medium', 'high', 'critical'], maxMerge(severity_max) + 1) AS worst
          FROM entity_risk_minute
          WHERE $__timeFilter(minute) AND {TENANT} AND {ENTITY}
          GROUP BY entity_type, entity, tenant
          ORDER BY risk DESC, entity
          LIMIT 15
          """, ["entity_type", "entity", "tenant", "risk", "alerts", "worst"])
    b.add(_stat("New entities on the last day of the range").span(8).height(5)
          .description("Keys, principals and agents whose first event ever falls on the range's last day.")
          .unit("short").thresholds(_steps((None, "green"), (5, "orange"), (20, "red"))),
          f"""
          SELECT countIf(kind = 'api_usage') AS api_keys, countIf(kind = 'data_access') AS principals,
                 countIf(kind = 'agent_execution') AS agents
          FROM (
              SELECT kind, entity, min(minute) AS first
              FROM events_minute
              WHERE minute <= $__toTime AND {TENANT}
              GROUP BY kind, entity
              HAVING first >= toStartOfDay($__toTime)
          )
          """, ["api_keys", "principals", "agents"])
    b.add(timeseries.Panel().title("Alert timeline by severity").span(16).height(8).unit("short")
          .draw_style(common.GraphDrawStyle.BARS).stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL))
          .fill_opacity(80),
          f"""
          SELECT {bucket('first_seen')} AS time,
                 countIf(severity = 'critical') AS critical, countIf(severity = 'high') AS high,
                 countIf(severity = 'medium') AS medium, countIf(severity = 'low') AS low,
                 countIf(severity = 'info') AS info
          FROM alerts FINAL
          WHERE $__timeFilter(first_seen) AND {TENANT} AND {ENTITY} AND {ALERT_FILTERS}
          GROUP BY time
          ORDER BY time
          """, ["time", "critical", "high", "medium", "low", "info"], timeseries=True)
    b.add(heatmap.Panel().title("ATLAS / OWASP techniques over time").span(24).height(9)
          .calculate(False).cell_gap(1)
          .description("Alerts per technique tag (MITRE ATLAS, OWASP LLM Top 10) per interval."),
          f"""
          SELECT {bucket('first_seen')} AS time, technique, count() AS alerts
          FROM alerts FINAL
          ARRAY JOIN tags AS technique
          WHERE $__timeFilter(first_seen) AND {TENANT} AND {ENTITY} AND {ALERT_FILTERS}
          GROUP BY time, technique
          ORDER BY time, technique
          """, ["time", "technique", "alerts"], timeseries=True)
    _alerts_table(b, "Latest alerts (click an id to investigate)", ENTITY)
    b.add(_stat("Alerts by mode: enforced, shadow (trial), suppressed").span(24).height(4)
          .description("Alerts above info in the range: enforced ones reach on-call; shadow ones come from a "
                       "detector trialled in shadow mode for the tenant, suppressed ones matched a suppression "
                       "rule (docs/analysts.md). Both are stored only.").unit("short"),
          f"""
          SELECT countIf(mode = 'enforce' AND suppressed_by = '') AS enforced, countIf(mode = 'shadow') AS shadow,
                 countIf(suppressed_by != '') AS suppressed
          FROM alerts FINAL
          WHERE {ALERT_RANGE} AND {TENANT} AND {ENTITY} AND severity != 'info'
          """, ["enforced", "shadow", "suppressed"])
    return b


# --- 2. API governance ---------------------------------------------------------------------------------------


def api_governance() -> Board:
    b = _board("spyglass-api-governance", "API governance", tags=["api"], time_from="now-24h", refresh="1m",
               description="API keys: request rate against the key's own baseline, auth failures, new client "
                           "IPs, scopes used versus granted, token consumption.")
    _entity_variable(b, "api_usage", "API key")
    _alert_variables(b, "api_usage")
    api = f"kind = 'api_usage' AND {TENANT} AND {ENTITY}"
    b.add(timeseries.Panel().title("Requests per minute vs 7-day baseline").span(12).height(8).unit("reqpm")
          .description("Baseline: the selection's average per-minute rate over the 7 days before the range's end."),
          f"""
          SELECT {minute_bucket('minute')} AS time,
                 sum(events) / (greatest($__interval_s, 60) / 60) AS requests_per_min,
                 (SELECT sum(events) / 10080 FROM events_minute
                  WHERE {api} AND minute > $__toTime - 604800 AND minute <= $__toTime) AS baseline_per_min
          FROM events_minute
          WHERE $__timeFilter(minute) AND {api}
          GROUP BY time
          ORDER BY time
          """, ["time", "requests_per_min", "baseline_per_min"], timeseries=True)
    b.add(timeseries.Panel().title("Auth failures per minute").span(12).height(8).unit("short")
          .thresholds(_steps((None, "green"), (50, "red")))
          .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
          f"""
          SELECT {minute_bucket('minute')} AS time,
                 sum(auth_failures) / (greatest($__interval_s, 60) / 60) AS failures_per_min
          FROM events_minute
          WHERE $__timeFilter(minute) AND {api}
          GROUP BY time
          ORDER BY time
          """, ["time", "failures_per_min"], timeseries=True)
    b.add(table.Panel().title("Keys bursting above their own rate").span(12).height(9)
          .override_by_name("burst_ratio", [dm.DynamicConfigValue(id_val="custom.cellOptions",
                                                                  value={"type": "color-background"})])
          .thresholds(_steps((None, "green"), (5, "orange"), (20, "red"))),
          f"""
          SELECT entity AS api_key, tenant, sum(n) AS requests, max(n) AS peak_per_min,
                 round(avg(n), 2) AS avg_per_active_min, round(max(n) / avg(n), 1) AS burst_ratio
          FROM (
              SELECT tenant, entity, minute, sum(events) AS n
              FROM events_minute
              WHERE $__timeFilter(minute) AND {api}
              GROUP BY tenant, entity, minute
          )
          GROUP BY api_key, tenant
          ORDER BY burst_ratio DESC, requests DESC
          LIMIT 20
          """, ["api_key", "tenant", "requests", "peak_per_min", "avg_per_active_min", "burst_ratio"])
    b.add(table.Panel().title("Auth failures by client IP").span(12).height(9),
          f"""
          SELECT client_ip, auth_result, count() AS failures,
                 uniqExact(entity) AS keys_tried, min(ts) AS first_seen, max(ts) AS last_seen
          FROM events
          WHERE $__timeFilter(ts) AND {api} AND auth_result != 'ok'
          GROUP BY client_ip, auth_result
          ORDER BY failures DESC, client_ip
          LIMIT 50
          """, ["client_ip", "auth_result", "failures", "keys_tried", "first_seen", "last_seen"])
    b.add(table.Panel().title("New client IPs per key (first seen in the range, 30-day lookback)").span(12)
          .height(9),
          f"""
          SELECT entity AS api_key, client_ip, min(ts) AS first_seen, count() AS requests,
                 any(user_agent) AS user_agent
          FROM events
          WHERE ts > $__toTime - 2592000 AND ts <= $__toTime AND {api}
          GROUP BY api_key, client_ip
          HAVING first_seen >= $__fromTime
          ORDER BY first_seen DESC, api_key
          LIMIT 100
          """, ["api_key", "client_ip", "first_seen", "requests", "user_agent"])
    b.add(table.Panel().title("Scope usage vs grant").span(12).height(9)
          .description("Granted scopes never used in the range: candidates for least privilege."),
          f"""
          SELECT api_key, length(granted) AS granted_scopes, length(used) AS used_scopes,
                 arrayFilter(x -> NOT has(used, x), granted) AS unused_grants,
                 arrayFilter(x -> NOT has(granted, x), used) AS used_without_grant
          FROM (
              SELECT entity AS api_key,
                     groupUniqArrayArray(scopes_granted) AS granted,
                     groupUniqArrayIf(scope_used, scope_used != '') AS used
              FROM events
              WHERE $__timeFilter(ts) AND {api}
              GROUP BY api_key
          )
          ORDER BY length(unused_grants) DESC, api_key
          LIMIT 50
          """, ["api_key", "granted_scopes", "used_scopes", "unused_grants", "used_without_grant"])
    b.add(timeseries.Panel().title("Token consumption").span(12).height(9).unit("short")
          .description("tokens_in + tokens_out of model calls through the gateways, per interval."),
          f"""
          SELECT {minute_bucket('minute')} AS time, sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out
          FROM events_minute
          WHERE $__timeFilter(minute) AND {api}
          GROUP BY time
          ORDER BY time
          """, ["time", "tokens_in", "tokens_out"], timeseries=True)
    _alerts_table(b, "API alerts", f"kind = 'api_usage' AND {ENTITY}", h=8)
    return b


# --- 3. Data access ------------------------------------------------------------------------------------------


def data_access() -> Board:
    b = _board("spyglass-data-access", "Data access", tags=["data"], time_from="now-24h", refresh="1m",
               description="Who reads and writes what: volumes by principal and dataset, cross-department and "
                           "off-hours access to sensitive data, training-data writes.")
    _entity_variable(b, "data_access", "Principal")
    _alert_variables(b, "data_access")
    da = f"kind = 'data_access' AND {TENANT} AND {ENTITY}"
    b.add(timeseries.Panel().title("Bytes read and written").span(12).height(8).unit("bytes"),
          f"""
          SELECT {minute_bucket('minute')} AS time, sum(bytes) AS bytes
          FROM events_minute
          WHERE $__timeFilter(minute) AND {da}
          GROUP BY time
          ORDER BY time
          """, ["time", "bytes"], timeseries=True)
    b.add(timeseries.Panel().title("Denied access per minute").span(12).height(8).unit("short")
          .thresholds(_steps((None, "green"), (10, "red")))
          .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
          f"""
          SELECT {minute_bucket('minute')} AS time,
                 sum(denied) / (greatest($__interval_s, 60) / 60) AS denied_per_min
          FROM events_minute
          WHERE $__timeFilter(minute) AND {da}
          GROUP BY time
          ORDER BY time
          """, ["time", "denied_per_min"], timeseries=True)
    b.add(table.Panel().title("Volume by principal and dataset").span(12).height(10)
          .override_by_name("bytes", [dm.DynamicConfigValue(id_val="unit", value="bytes")]),
          f"""
          SELECT principal, dataset, any(sensitivity) AS sensitivity,
                 count() AS accesses, sum(rows) AS rows, sum(bytes) AS bytes
          FROM events
          WHERE $__timeFilter(ts) AND {da}
          GROUP BY principal, dataset
          ORDER BY bytes DESC, principal, dataset
          LIMIT 50
          """, ["principal", "dataset", "sensitivity", "accesses", "rows", "bytes"])
    # flags (events, migration 010): 2 denied, 4 sensitive (confidential or restricted), 8 cross-department
    b.add(table.Panel().title("Cross-department access to confidential and restricted data").span(12).height(10)
          .override_by_name("bytes", [dm.DynamicConfigValue(id_val="unit", value="bytes")]),
          f"""
          SELECT principal, principal_department AS department, dataset,
                 dataset_owner_department AS owner_department, sensitivity,
                 count() AS accesses, countIf(bitAnd(flags, 2) != 0) AS denied,
                 sum(bytes) AS bytes, max(ts) AS last_seen
          FROM events
          WHERE $__timeFilter(ts) AND {da}
            AND bitAnd(flags, 12) = 12
          GROUP BY principal, department, dataset, owner_department, sensitivity
          ORDER BY accesses DESC, principal, dataset
          LIMIT 100
          """, ["principal", "department", "dataset", "owner_department", "sensitivity", "accesses", "denied",
                "bytes", "last_seen"])
    _alerts_table(b, "Off-hours access to sensitive data (the detector knows each tenant's working hours)",
                  f"detector = 'data.off_hours' AND {ENTITY}", w=12, h=9,
                  may_be_empty="data.off_hours fires only where an off-hours instance lands in the range")
    b.add(table.Panel().title("Training-data writes").span(12).height(9)
          .description("Writes and train operations on datasets used for model training (purpose or operation)."),
          f"""
          SELECT ts, principal, principal_department AS department, dataset,
                 dataset_owner_department AS owner_department, operation,
                 rows, event_id
          FROM events
          WHERE $__timeFilter(ts) AND {da}
            AND operation IN ('write', 'train')
            AND (purpose = 'model-training' OR operation = 'train')
          ORDER BY ts DESC, event_id
          LIMIT 200
          """, ["ts", "principal", "department", "dataset", "owner_department", "operation", "rows", "event_id"])
    _alerts_table(b, "Data-access alerts", f"kind = 'data_access' AND {ENTITY}", h=8)
    return b


# --- 4. Agent execution --------------------------------------------------------------------------------------


def agent_execution() -> Board:
    b = _board("spyglass-agent-execution", "Agent execution", tags=["agents"], time_from="now-24h", refresh="1m",
               description="What agents do: actions by agent and privilege, bypassed approvals, untrusted "
                           "input followed by privileged actions, runaway sessions.")
    _entity_variable(b, "agent_execution", "Agent")
    _alert_variables(b, "agent_execution")
    ag = f"kind = 'agent_execution' AND {TENANT} AND {ENTITY}"
    b.add(timeseries.Panel().title("Agent actions per minute").span(12).height(8).unit("short"),
          f"""
          SELECT {minute_bucket('minute')} AS time,
                 sum(events) / (greatest($__interval_s, 60) / 60) AS actions_per_min,
                 sum(agent_failures) / (greatest($__interval_s, 60) / 60) AS failed_or_blocked_per_min
          FROM events_minute
          WHERE $__timeFilter(minute) AND {ag}
          GROUP BY time
          ORDER BY time
          """, ["time", "actions_per_min", "failed_or_blocked_per_min"], timeseries=True)
    b.add(table.Panel().title("Actions by agent and privilege").span(12).height(8),
          f"""
          SELECT entity AS agent, agent_type,
                 countIf(privilege = 'read') AS read,
                 countIf(privilege = 'write') AS write,
                 countIf(privilege = 'admin') AS admin, count() AS total
          FROM events
          WHERE $__timeFilter(ts) AND {ag}
          GROUP BY agent, agent_type
          ORDER BY admin DESC, write DESC, agent
          LIMIT 50
          """, ["agent", "agent_type", "read", "write", "admin", "total"])
    b.add(table.Panel().title("Approvals bypassed").span(12).height(9)
          .thresholds(_steps((None, "red"))),
          f"""
          SELECT ts, entity AS agent, principal, action, target_system,
                 privilege, session_id, event_id
          FROM events
          WHERE $__timeFilter(ts) AND {ag} AND approval = 'bypassed'
          ORDER BY ts DESC, event_id
          LIMIT 200
          """, ["ts", "agent", "principal", "action", "target_system", "privilege", "session_id", "event_id"])
    b.add(table.Panel().title("Untrusted input followed by privileged actions (per session)").span(12).height(9),
          f"""
          SELECT session_id, agent, principal, untrusted_inputs, privileged_after_untrusted, first_untrusted,
                 last_action
          FROM (
              SELECT session_id, any(entity) AS agent, any(principal) AS principal,
                     countIf(bitAnd(flags, 64) != 0
                             OR triggered_by = 'external_content') AS untrusted_inputs,
                     countIf(triggered_by = 'external_content'
                             AND privilege IN ('write', 'admin')) AS privileged_after_untrusted,
                     minIf(ts, bitAnd(flags, 64) != 0
                               OR triggered_by = 'external_content') AS first_untrusted,
                     max(ts) AS last_action
              FROM events
              WHERE $__timeFilter(ts) AND {ag}
              GROUP BY session_id
          )
          WHERE untrusted_inputs > 0 AND privileged_after_untrusted > 0
          ORDER BY privileged_after_untrusted DESC, session_id
          LIMIT 100
          """, ["session_id", "agent", "principal", "untrusted_inputs", "privileged_after_untrusted",
                "first_untrusted", "last_action"])
    b.add(table.Panel().title("Longest sessions (runaway candidates)").span(12).height(9)
          .override_by_name("duration_s", [dm.DynamicConfigValue(id_val="unit", value="s")])
          .override_by_name("actions", [dm.DynamicConfigValue(id_val="custom.cellOptions",
                                                              value={"type": "color-background"})])
          .thresholds(_steps((None, "green"), (100, "orange"), (500, "red"))),
          f"""
          SELECT session_id, any(entity) AS agent, any(agent_type) AS agent_type,
                 count() AS actions, dateDiff('second', min(ts), max(ts)) AS duration_s,
                 uniqExact(action) AS distinct_actions
          FROM events
          WHERE $__timeFilter(ts) AND {ag}
          GROUP BY session_id
          ORDER BY actions DESC, session_id
          LIMIT 20
          """, ["session_id", "agent", "agent_type", "actions", "duration_s", "distinct_actions"])
    _alerts_table(b, "Agent alerts (runaway, bypass, untrusted-privileged)", f"kind = 'agent_execution' AND {ENTITY}",
                  w=12, h=9)
    return b


# --- 5. Alert investigation ----------------------------------------------------------------------------------


def alert_investigation() -> Board:
    b = _board(INVESTIGATION_UID, "Alert investigation", tags=["soc"], time_from="now-7d", refresh="",
               description="One alert: what it says, the evidence against the entity's baseline, the raw "
                           "events behind it, its status history and the entity's other alerts.")
    _variable(b, "alert", "Alert",
              f"SELECT alert_id FROM alerts FINAL WHERE {ALERT_RANGE} AND {TENANT} "
              f"ORDER BY {SEVERITY_RANK} DESC, last_seen DESC LIMIT 500", include_all=False)
    the_alert = f"alert_id = {var_value('alert')}"
    b.add(table.Panel().title("Alert").span(24).height(4),
          f"""
          SELECT alert_id, severity, score, detector, tenant, entity_type, entity, first_seen, last_seen,
                 arrayStringConcat(tags, ', ') AS tags, if(st = '', 'open', st) AS status
          FROM (
              SELECT alert_id, severity, score, detector, tenant, entity_type, entity, first_seen, last_seen, tags
              FROM alerts FINAL WHERE {the_alert}
          ) AS a ANY LEFT JOIN {LATEST_STATUS} AS s USING alert_id
          """, ["alert_id", "severity", "score", "detector", "tenant", "entity_type", "entity", "first_seen",
                "last_seen", "tags", "status"])
    b.add(stat.Panel().title("Explanation").span(24).height(4).text_mode(common.BigValueTextMode.VALUE)
          .color_mode(common.BigValueColorMode.NONE).graph_mode(common.BigValueGraphMode.NONE)
          .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("/^explanation$/")),
          f"""
          SELECT title, explanation FROM alerts FINAL WHERE {the_alert}
          """, ["title", "explanation"])
    b.add(bargauge.Panel().title("Evidence features vs baseline").span(12).height(10)
          .orientation(common.VizOrientation.HORIZONTAL).display_mode(common.BarGaugeDisplayMode.BASIC),
          f"""
          SELECT f.1 AS feature, f.2 AS value, if(isNaN(f.3), NULL, f.3) AS baseline,
                 if(isNaN(f.3) OR f.3 = 0, NULL, round(f.2 / f.3, 2)) AS ratio_to_baseline
          FROM (
              SELECT arrayJoin(arrayMap((n, v, bl) -> (n, v, bl), feature_names, feature_values,
                                        feature_baselines)) AS f
              FROM alerts FINAL WHERE {the_alert}
          )
          """, ["feature", "value", "baseline", "ratio_to_baseline"])
    b.add(timeseries.Panel().title("Entity risk around the alert").span(12).height(10).unit("short"),
          f"""
          SELECT {minute_bucket('minute')} AS time, sum(score_sum) AS risk, sum(alerts) AS alerts
          FROM entity_risk_minute
          WHERE $__timeFilter(minute)
            AND (tenant, entity) IN (SELECT tenant, entity FROM alerts FINAL WHERE {the_alert})
          GROUP BY time
          ORDER BY time
          """, ["time", "risk", "alerts"], timeseries=True)
    b.add(table.Panel().title("Raw events behind the alert").span(24).height(10)
          .override_by_name("payload", [dm.DynamicConfigValue(id_val="custom.cellOptions",
                                                              value={"type": "json-view"})]),
          f"""
          SELECT ts, ts_ms, kind, entity, principal, source, score, event_id, payload
          FROM events
          WHERE event_id IN (SELECT arrayJoin(event_ids) FROM alerts FINAL WHERE {the_alert})
            AND tenant IN (SELECT tenant FROM alerts FINAL WHERE {the_alert})
          ORDER BY ts, ts_ms, event_id
          LIMIT 1 BY event_id
          LIMIT 500
          """, ["ts", "ts_ms", "kind", "entity", "principal", "source", "score", "event_id", "payload"])
    b.add(table.Panel().title("Status history").span(12).height(7),
          f"""
          SELECT updated_at, status, updated_by, note
          FROM alert_status
          WHERE {the_alert}
          ORDER BY updated_at DESC
          LIMIT 100
          """, ["updated_at", "status", "updated_by", "note"],
          may_be_empty="no analyst has changed an alert's status in a replay")
    _alerts_table(b, "Other alerts on the same entity",
                  f"(tenant, entity) IN (SELECT tenant, entity FROM alerts FINAL WHERE {the_alert}) "
                  f"AND NOT {the_alert}", w=12, h=7, filtered=False)
    return b


# --- 6. Pipeline health --------------------------------------------------------------------------------------


def pipeline_health() -> Board:
    b = _board("spyglass-pipeline-health", "Pipeline health", tags=["ops"], time_from="now-6h", refresh="30s",
               description="Throughput, consumer lag, batch latency, dead letters and checkpoint age of the "
                           "detection workers (pipeline_health, engine_checkpoints).")
    # pipeline_health has no tenant: this board's variable is the worker
    b.builder.variables([])
    b.variables.clear()
    _variable(b, "worker", "Worker",
              "SELECT DISTINCT worker FROM pipeline_health WHERE $__timeFilter(ts) ORDER BY worker")
    w = var_filter("worker", "worker")
    b.add(_stat("Seconds since each worker's last flush (at the range's end)").span(8).height(5).unit("s")
          .thresholds(_steps((None, "green"), (60, "orange"), (300, "red")))
          .color_mode(common.BigValueColorMode.BACKGROUND),
          f"""
          SELECT worker, dateDiff('second', max(ts), least(now(), $__toTime)) AS seconds_since_flush
          FROM pipeline_health
          WHERE ts > $__toTime - 86400 AND ts <= $__toTime AND {w}
          GROUP BY worker
          ORDER BY worker
          """, ["worker", "seconds_since_flush"])
    b.add(timeseries.Panel().title("Throughput").span(16).height(8).unit("short")
          .description("Events, alerts and dead letters per second, all workers."),
          f"""
          SELECT {bucket('ts')} AS time, sum(events) / $__interval_s AS events_per_s,
                 sum(alerts) / $__interval_s AS alerts_per_s
          FROM pipeline_health
          WHERE $__timeFilter(ts) AND {w}
          GROUP BY time
          ORDER BY time
          """, ["time", "events_per_s", "alerts_per_s"], timeseries=True)
    b.add(timeseries.Panel().title("Consumer lag (records, summed over partitions)").span(12).height(8)
          .unit("short").thresholds(_steps((None, "green"), (10000, "orange"), (100000, "red")))
          .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
          f"""
          SELECT time, sum(lag) AS lag
          FROM (
              SELECT {bucket('ts')} AS time, worker, topic, partition, argMax(lag, ts) AS lag
              FROM pipeline_health
              WHERE $__timeFilter(ts) AND {w}
              GROUP BY time, worker, topic, partition
          )
          GROUP BY time
          ORDER BY time
          """, ["time", "lag"], timeseries=True)
    b.add(timeseries.Panel().title("Batch latency").span(12).height(8).unit("ms")
          .thresholds(_steps((None, "green"), (500, "orange"), (2000, "red")))
          .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
          f"""
          SELECT {bucket('ts')} AS time, quantile(0.5)(batch_latency_ms) AS p50_ms,
                 quantile(0.99)(batch_latency_ms) AS p99_ms, max(batch_latency_ms) AS max_ms
          FROM pipeline_health
          WHERE $__timeFilter(ts) AND {w}
          GROUP BY time
          ORDER BY time
          """, ["time", "p50_ms", "p99_ms", "max_ms"], timeseries=True)
    b.add(timeseries.Panel().title("Dead letters").span(12).height(8).unit("short")
          .draw_style(common.GraphDrawStyle.BARS)
          .thresholds(_steps((None, "green"), (1, "red"))),
          f"""
          SELECT {bucket('ts')} AS time, sum(dead_letters) AS dead_letters
          FROM pipeline_health
          WHERE $__timeFilter(ts) AND {w}
          GROUP BY time
          ORDER BY time
          """, ["time", "dead_letters"], timeseries=True)
    b.add(timeseries.Panel().title("Checkpoint age reported by workers").span(12).height(8).unit("s")
          .thresholds(_steps((None, "green"), (120, "orange"), (600, "red")))
          .thresholds_style(cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE)),
          f"""
          SELECT {bucket('ts')} AS time, max(checkpoint_age_s) AS max_checkpoint_age_s
          FROM pipeline_health
          WHERE $__timeFilter(ts) AND {w}
          GROUP BY time
          ORDER BY time
          """, ["time", "max_checkpoint_age_s"], timeseries=True)
    b.add(table.Panel().title("Engine checkpoints (latest per partition)").span(24).height(8)
          .override_by_name("age_s", [dm.DynamicConfigValue(id_val="unit", value="s"),
                                      dm.DynamicConfigValue(id_val="custom.cellOptions",
                                                            value={"type": "color-background"})])
          .override_by_name("state_bytes", [dm.DynamicConfigValue(id_val="unit", value="bytes")])
          .thresholds(_steps((None, "green"), (120, "orange"), (600, "red"))),
          """
          SELECT group_id, topic, partition, max(offset) AS next_offset, argMax(worker, offset) AS worker,
                 argMax(entities, offset) AS entities, argMax(bytes, offset) AS state_bytes,
                 argMax(written_at, offset) AS last_written,
                 dateDiff('second', argMax(written_at, offset), now()) AS age_s
          FROM engine_checkpoints
          GROUP BY group_id, topic, partition
          ORDER BY group_id, topic, partition
          """, ["group_id", "topic", "partition", "next_offset", "worker", "entities", "state_bytes", "last_written",
                "age_s"])
    # the same pipeline seen live, scraped by Prometheus (streams/metrics.py names the series)
    b.add_prom(timeseries.Panel().title("Events in per second by kind (live)").span(6).height(8).unit("short")
               .description(LIVE),
               [("{{kind}}", "sum by (kind) (rate(spyglass_events_in_total[$__rate_interval]))")])
    b.add_prom(timeseries.Panel().title("Consumer lag by topic (live)").span(6).height(8).unit("short")
               .description(LIVE).thresholds(_steps((None, "green"), (10000, "orange"), (100000, "red"))),
               [("{{topic}}", "sum by (topic) (spyglass_consumer_lag)")])
    b.add_prom(timeseries.Panel().title("Dead letters per second (live)").span(6).height(8).unit("short")
               .description(LIVE).thresholds(_steps((None, "green"), (0.001, "red"))),
               [("{{topic}}", "sum by (topic) (rate(spyglass_dead_letters_total[$__rate_interval]))")])
    b.add_prom(timeseries.Panel().title("Worker batch latency (live)").span(6).height(8).unit("s")
               .description(LIVE + " Decode, score, publish and store of one batch."),
               [(f"p{q}", f"histogram_quantile(0.{q}, sum by (le) (rate(spyglass_batch_seconds_bucket"
                          "[$__rate_interval])))") for q in (50, 99)])
    return b


BOARDS = (security_overview, api_governance, data_access, agent_execution, alert_investigation, pipeline_health)
