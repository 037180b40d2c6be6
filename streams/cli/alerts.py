"""``spyglass alerts list|show|set-status``: find stored alerts and triage them; a mark teaches the engine.

``set-status`` appends an ``alert_status`` row (the latest per alert wins) and sends the mark to the feedback
topic (``SPYGLASS_TOPIC_FEEDBACK``), on the partition the alert came from, where the worker whose engine raised
it reads it: a ``false_positive`` is learned as normal for the alert's entity, a ``true_positive`` raises the
entity's risk (``detectors.feedback``). Another tool can mark alerts the same way by producing a
``schemas.feedback.FeedbackMark`` to that topic (it then records the status in ``alert_status`` itself).
"""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.errors import SpyglassError
from schemas.feedback import STATUSES, TEACHING, FeedbackMark, encode_mark, now_iso
from streams.settings import Settings

SEVERITIES = ("info", "low", "medium", "high", "critical")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(subparsers: Any) -> None:
    """Add the ``alerts`` command to a top-level ``add_subparsers()`` object."""
    alerts = subparsers.add_parser("alerts", help="find stored alerts, show one, triage them (status, feedback)",
                                   description="Work with stored alerts.")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="{list,show,set-status}", required=True)
    ls = sub.add_parser("list", help="list stored alerts, newest first, with their latest status",
                        description="List stored alerts (newest first) with their analyst status (no status row = "
                        "open), filtered by tenant, detector, severity, status and age.")
    ls.add_argument("--tenant", help="only this tenant")
    ls.add_argument("--detector", help="only this detector (e.g. data.volume_spike)")
    ls.add_argument("--severity", choices=SEVERITIES, help="only this severity or higher")
    ls.add_argument("--status", choices=STATUSES, help="only alerts whose latest status is this")
    ls.add_argument("--since", help="only alerts first seen this recently: 30m, 12h, 7d, 2w, or an ISO 8601 time")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="one JSON object a line instead of a table")
    ls.set_defaults(func=cmd_list)
    sh = sub.add_parser("show", help="show one alert in full: explanation, evidence, status history",
                        description="Print one stored alert as JSON with its status history.")
    sh.add_argument("alert_id", help="the alert's id")
    sh.set_defaults(func=cmd_show)
    ss = sub.add_parser(
        "set-status",
        help="record an analyst's status for an alert; false_positive and true_positive teach the engine",
        description="Append a row to alert_status (the latest row per alert wins) and send the mark to the "
        "feedback topic, where the worker that raised the alert learns from it: false_positive makes the same "
        "behaviour of the alert's entity normal, true_positive raises the entity's risk. The alert is looked up "
        "in the alerts table; --tenant records a status for an alert not stored (the engine is not told).",
    )
    ss.add_argument("alert_id", help="the alert's id")
    ss.add_argument("status", choices=STATUSES, help="the new status")
    ss.add_argument("--note", default="", help="free text stored with the change")
    ss.add_argument("--tenant", help="the alert's tenant, for an alert not in the alerts table")
    ss.add_argument("--by", help="the analyst (default: the login name)")
    ss.set_defaults(func=cmd_set_status)


def _open(settings: Settings) -> Any:
    from streams.sinks.clickhouse import open_store

    return open_store(settings.store())


def sql_str(value: str) -> str:
    """A ClickHouse string literal of ``value`` (attacker-written text never leaves the quotes).

    Examples:
        >>> sql_str("it's")
        "'it\\\\'s'"
    """
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def since_epoch(text: str, now: datetime | None = None) -> int:
    """``--since``: a span back from now (``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601 time, as epoch seconds.

    Examples:
        >>> since_epoch("2h", datetime(2026, 1, 1, 2, tzinfo=UTC))
        1767225600
    """
    now = now or datetime.now(UTC)
    unit = _UNITS.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        return int((now - timedelta(seconds=int(text[:-1]) * unit)).timestamp())
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpyglassError(f"--since: {text!r} is neither a span (30m, 12h, 7d, 2w) nor an ISO 8601 time") from None
    if when.tzinfo is None:
        raise SpyglassError(f"--since: {text!r} has no UTC offset (add Z or +00:00)")
    return int(when.timestamp())


def latest_status_sql(db: str) -> str:
    """alert_id -> its latest status (alerts without a row are open); runs on 18.16 and current servers."""
    return f"SELECT alert_id, argMax(status, updated_at) AS st FROM {db}.alert_status GROUP BY alert_id"  # noqa: S608


def list_alerts(store: Any, *, tenant: str | None = None, detector: str | None = None,
                severity: str | None = None, status: str | None = None, since: int | None = None,
                limit: int = 50, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Stored alerts, newest first, with their latest status, filtered as ``spyglass alerts list`` does."""
    db = store.database
    where = ["1"]
    if tenant:
        where.append(f"tenant = {sql_str(tenant)}")
    if detector:
        where.append(f"detector = {sql_str(detector)}")
    if severity:
        where.append(f"severity IN ({', '.join(sql_str(s) for s in SEVERITIES[SEVERITIES.index(severity):])})")
    if since is not None:
        where.append(f"first_seen >= toDateTime({int(since)})")
    if status == "open":
        where.append(f"alert_id NOT IN (SELECT alert_id FROM ({latest_status_sql(db)}) WHERE st != 'open')")  # noqa: S608
    elif status:
        where.append(f"alert_id IN (SELECT alert_id FROM ({latest_status_sql(db)}) WHERE st = {sql_str(status)})")  # noqa: S608
    cols = ("alert_id", "tenant", "detector", "entity_type", "entity", "severity", "score",
            "toUInt32(first_seen)", "title", *extra)
    rows = store.query(f"SELECT {', '.join(cols)} FROM {db}.alerts FINAL WHERE {' AND '.join(where)} "  # noqa: S608
                       f"ORDER BY first_seen DESC, alert_id LIMIT {max(int(limit), 0)}")
    names = [c.removeprefix("toUInt32(").rstrip(")") for c in cols]
    out = [dict(zip(names, r, strict=True)) for r in rows]
    ids = [a["alert_id"] for a in out]
    statuses: dict[str, str] = {}
    if ids:
        for aid, st in store.query(f"SELECT alert_id, st FROM ({latest_status_sql(db)}) "  # noqa: S608
                                   f"WHERE alert_id IN ({', '.join(sql_str(i) for i in ids)})"):
            statuses[str(aid)] = str(st)
    for a in out:
        a["status"] = statuses.get(a["alert_id"], "open")
        a["score"] = round(float(a["score"]), 3)
        a["first_seen"] = datetime.fromtimestamp(int(a["first_seen"]), UTC).isoformat().replace("+00:00", "Z")
    return out


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass alerts list``."""
    from rich.console import Console
    from rich.table import Table

    store = _open(settings)
    try:
        rows = list_alerts(store, tenant=args.tenant, detector=args.detector, severity=args.severity,
                           status=args.status, since=since_epoch(args.since) if args.since else None,
                           limit=args.limit)
    finally:
        store.close()
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    table = Table(title=f"{len(rows)} alert(s)", title_justify="left")
    for col in ("first seen", "alert id", "tenant", "detector", "entity", "severity", "score", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["first_seen"], r["alert_id"], r["tenant"], r["detector"], f"{r['entity_type']} {r['entity']}",
                      r["severity"], f"{r['score']:.3f}", r["status"])
    Console(width=200).print(table)
    return 0


ALERT_FIELDS = ("alert_id", "tenant", "detector", "kind", "entity_type", "entity", "severity", "score",
                "toUInt32(first_seen)", "toUInt32(last_seen)", "title", "explanation", "evidence", "tags",
                "source_topic", "source_partition", "source_offset")


def fetch_alert(store: Any, alert_id: str) -> dict[str, Any] | None:
    """One stored alert as a dict (times as ISO 8601 UTC, evidence decoded), or None."""
    rows = store.query(f"SELECT {', '.join(ALERT_FIELDS)} FROM {store.database}.alerts FINAL "  # noqa: S608
                       f"WHERE alert_id = {sql_str(alert_id)} LIMIT 1")
    if not rows:
        return None
    names = [c.removeprefix("toUInt32(").rstrip(")") for c in ALERT_FIELDS]
    a = dict(zip(names, rows[0], strict=True))
    for t in ("first_seen", "last_seen"):
        a[t] = datetime.fromtimestamp(int(a[t]), UTC).isoformat().replace("+00:00", "Z")
    a["score"] = round(float(a["score"]), 3)
    a["source_partition"], a["source_offset"] = int(a["source_partition"]), int(a["source_offset"])
    a["tags"] = list(a["tags"]) if not isinstance(a["tags"], str) else json.loads(a["tags"])
    a["evidence"] = json.loads(a["evidence"]) if a["evidence"] else {}
    return a


def status_history(store: Any, alert_id: str) -> list[dict[str, Any]]:
    rows = store.query(f"SELECT status, toUInt32(updated_at), updated_by, note FROM {store.database}.alert_status "  # noqa: S608
                       f"WHERE alert_id = {sql_str(alert_id)} ORDER BY updated_at")
    return [{"status": s, "at": datetime.fromtimestamp(int(t), UTC).isoformat().replace("+00:00", "Z"), "by": b,
             "note": n} for s, t, b, n in rows]


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass alerts show``."""
    store = _open(settings)
    try:
        a = fetch_alert(store, args.alert_id)
        if a is None:
            raise SpyglassError(f"no alert {args.alert_id!r} in {store.database}.alerts")
        a["status_history"] = status_history(store, args.alert_id)
    finally:
        store.close()
    a["status"] = a["status_history"][-1]["status"] if a["status_history"] else "open"
    print(json.dumps(a, indent=2))
    return 0


def send_mark(settings: Settings, mark: FeedbackMark) -> None:
    """Produce ``mark`` to the feedback topic, on its alert's partition, and wait for the broker's ack."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from streams.kafka_security import kafka_client_config

    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap.split(","), acks="all", max_block_ms=15000,
                             client_id="spyglass-feedback", **kafka_client_config(settings))
    try:
        parts = producer.partitions_for(settings.topic_feedback) or set()
        if mark.source_partition not in parts:
            raise SpyglassError(f"the feedback topic {settings.topic_feedback!r} has no partition "
                                f"{mark.source_partition} (run `spyglass topics create`; it needs as many partitions "
                                "as the event topics)")
        producer.send(settings.topic_feedback, key=f"{mark.tenant}/{mark.entity}".encode(), value=encode_mark(mark),
                      partition=mark.source_partition).get(timeout=30)
    except KafkaError as exc:
        raise SpyglassError(f"sending the mark to {settings.topic_feedback!r} failed: {exc!r} (the status is "
                            "recorded; run set-status again to retry the feedback)") from None
    finally:
        producer.close()


def cmd_set_status(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass alerts set-status``."""
    from schemas.rows import alert_status_columns

    by = args.by or getpass.getuser()
    store = _open(settings)
    try:
        a = fetch_alert(store, args.alert_id)
        if a is None and args.tenant is None:
            raise SpyglassError(f"no alert {args.alert_id!r} in {store.database}.alerts (give --tenant to set a "
                                "status anyway)")
        tenant = args.tenant or a["tenant"]  # type: ignore[index]
        store.insert("alert_status", alert_status_columns(
            args.alert_id, tenant, args.status, updated_at=datetime.now(UTC), updated_by=by, note=args.note))
    finally:
        store.close()
    taught = ""
    if a is not None and args.status in TEACHING:
        send_mark(settings, FeedbackMark(
            alert_id=args.alert_id, status=args.status, tenant=a["tenant"], detector=a["detector"],
            entity=a["entity"], entity_type=a["entity_type"], score=min(max(a["score"], 0.0), 1.0),
            source_topic=a["source_topic"], source_partition=a["source_partition"], analyst=by, note=args.note,
            at=now_iso()))
        taught = f"; sent to {settings.topic_feedback}[{a['source_partition']}] for the engine"
    print(f"{args.alert_id} ({tenant}): {args.status} by {by}{taught}")
    return 0
