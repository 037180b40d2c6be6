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

from schemas.alerts import Alert
from schemas.errors import SpyglassError
from schemas.feedback import STATUSES, TEACHING, FeedbackMark, encode_mark, now_iso
from streams.settings import Settings

SEVERITIES = ("info", "low", "medium", "high", "critical")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(subparsers: Any) -> None:
    """Add the ``alerts`` command to a top-level ``add_subparsers()`` object."""
    alerts = subparsers.add_parser("alerts", help="find stored alerts, show one, triage them (status, feedback)",
                                   description="Work with stored alerts.")
    sub = alerts.add_subparsers(dest="alerts_command", metavar="{list,show,set-status,export}", required=True)
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
    ss.add_argument("--suppress", metavar="SPAN", help="with false_positive: also add a suppression rule for the "
                    "alert's detector, tenant and entity, expiring after SPAN (12h, 7d, 2w) or at an ISO 8601 time")
    ss.set_defaults(func=cmd_set_status)
    ex = sub.add_parser("export", help="export stored alerts, as OCSF Detection Findings (class 2004) or alert JSON",
                        description="Write stored alerts (filtered as `list` filters) one JSON object a line: OCSF "
                        "1.7.0 Detection Findings (--format ocsf, for a SIEM) or the alert contract (--format json).")
    ex.add_argument("--format", choices=("ocsf", "json"), default="ocsf", help="output format (default ocsf)")
    ex.add_argument("--output", default="-", help="file to write, - for stdout (default)")
    for name in ("tenant", "detector"):
        ex.add_argument(f"--{name}", help=f"only this {name}")
    ex.add_argument("--severity", choices=SEVERITIES, help="only this severity or higher")
    ex.add_argument("--status", choices=STATUSES, help="only alerts whose latest status is this")
    ex.add_argument("--since", help="only alerts first seen this recently (30m, 12h, 7d) or since an ISO 8601 time")
    ex.add_argument("--limit", type=int, default=100_000, help="at most this many (default 100000)")
    ex.set_defaults(func=cmd_export)


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


def span_or_time(text: str, flag: str, now: datetime, sign: int = -1) -> datetime:
    """A span back from ``now`` (``sign`` -1; ahead for +1): ``30m``, ``12h``, ``7d``, ``2w``; or an ISO 8601 time
    with its UTC offset. ``flag`` names the option in errors."""
    unit = _UNITS.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        return now + sign * timedelta(seconds=int(text[:-1]) * unit)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SpyglassError(f"{flag}: {text!r} is neither a span (30m, 12h, 7d, 2w) nor an ISO 8601 time") from None
    if when.tzinfo is None:
        raise SpyglassError(f"{flag}: {text!r} has no UTC offset (add Z or +00:00)")
    return when


def since_epoch(text: str, now: datetime | None = None) -> int:
    """``--since``: a span back from now (``30m``, ``12h``, ``7d``, ``2w``) or an ISO 8601 time, as epoch seconds.

    Examples:
        >>> since_epoch("2h", datetime(2026, 1, 1, 2, tzinfo=UTC))
        1767225600
    """
    return int(span_or_time(text, "--since", now or datetime.now(UTC)).timestamp())


def latest_status_sql(db: str) -> str:
    """alert_id -> its latest status (alerts without a row are open); runs on 18.16 and current servers."""
    return f"SELECT alert_id, argMax(status, updated_at) AS st FROM {db}.alert_status GROUP BY alert_id"  # noqa: S608


def _where(db: str, tenant: str | None, detector: str | None, severity: str | None, status: str | None,
           since: int | None) -> list[str]:
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
    return where


def _statuses(store: Any, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    return {str(aid): str(st) for aid, st in store.query(
        f"SELECT alert_id, st FROM ({latest_status_sql(store.database)}) "  # noqa: S608
        f"WHERE alert_id IN ({', '.join(sql_str(i) for i in ids)})")}


def list_alerts(store: Any, *, tenant: str | None = None, detector: str | None = None,
                severity: str | None = None, status: str | None = None, since: int | None = None,
                limit: int = 50, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Stored alerts, newest first, with their latest status, filtered as ``spyglass alerts list`` does."""
    db = store.database
    where = _where(db, tenant, detector, severity, status, since)
    cols = ("alert_id", "tenant", "detector", "entity_type", "entity", "severity", "score",
            "toUInt32(first_seen)", "title", "mode", "suppressed_by", *extra)
    rows = store.query(f"SELECT {', '.join(cols)} FROM {db}.alerts FINAL WHERE {' AND '.join(where)} "  # noqa: S608
                       f"ORDER BY first_seen DESC, alert_id LIMIT {max(int(limit), 0)}")
    names = [c.removeprefix("toUInt32(").rstrip(")") for c in cols]
    out = [dict(zip(names, r, strict=True)) for r in rows]
    statuses = _statuses(store, [a["alert_id"] for a in out])
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
    for col in ("first seen", "alert id", "tenant", "detector", "entity", "severity", "score", "status", "held"):
        table.add_column(col)
    for r in rows:
        held = "shadow" if r["mode"] == "shadow" else ""
        held += f" suppressed by {r['suppressed_by']}" if r["suppressed_by"] else ""
        table.add_row(r["first_seen"], r["alert_id"], r["tenant"], r["detector"], f"{r['entity_type']} {r['entity']}",
                      r["severity"], f"{r['score']:.3f}", r["status"], held.strip())
    Console(width=200).print(table)
    return 0


ALERT_FIELDS = ("alert_id", "tenant", "detector", "kind", "entity_type", "entity", "severity", "score",
                "toUInt32(first_seen)", "toUInt32(last_seen)", "title", "explanation", "evidence", "tags",
                "source_topic", "source_partition", "source_offset", "mode", "suppressed_by")


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
    if a is not None and args.status in TEACHING and a["source_topic"] in settings.topics().values():
        send_mark(settings, FeedbackMark(
            alert_id=args.alert_id, status=args.status, tenant=a["tenant"], detector=a["detector"],
            entity=a["entity"], entity_type=a["entity_type"], score=min(max(a["score"], 0.0), 1.0),
            source_topic=a["source_topic"], source_partition=a["source_partition"], analyst=by, note=args.note,
            at=now_iso()))
        taught = f"; sent to {settings.topic_feedback}[{a['source_partition']}] for the engine"
    elif a is not None and args.status in TEACHING:  # risk.cross_kind: raised by the correlator, not an engine
        taught = "; not sent to an engine (this alert was not raised by one)"
    if args.suppress:
        if a is None or args.status != "false_positive":
            raise SpyglassError("--suppress goes with false_positive on a stored alert")
        from streams.cli.suppress import add_rule

        rule = add_rule(settings, detector=a["detector"], tenant=a["tenant"], entity=a["entity"],
                        reason=args.note or f"false positive {args.alert_id}", author=by, expires=args.suppress,
                        rule_id=f"fp-{args.alert_id[:16]}")
        taught += f"; suppression rule {rule.id} until {rule.expires.isoformat()}"
    print(f"{args.alert_id} ({tenant}): {args.status} by {by}{taught}")
    return 0


def stored_alerts(store: Any, where: list[str], limit: int) -> list[tuple[Alert, str, str, str]]:
    """(alert, latest status, mode, suppressed_by) of the stored alerts ``where`` selects, oldest first."""
    import msgspec

    from schemas.alerts import Evidence

    rows = store.query(f"SELECT alert_id, tenant, detector, kind, entity_type, entity, severity, score, "  # noqa: S608
                       f"toUInt32(first_seen), toUInt32(last_seen), title, explanation, evidence, tags, mode, "
                       f"suppressed_by FROM {store.database}.alerts FINAL WHERE {' AND '.join(where)} "
                       f"ORDER BY first_seen, alert_id LIMIT {max(int(limit), 0)}")
    out = []
    for (aid, tenant, det, kind, etype, entity, sev, score, first, last, title, expl, ev, tags, mode,
         rule) in rows:
        out.append((Alert(alert_id=str(aid), tenant=str(tenant), detector=str(det), kind=str(kind),
                          entity_type=etype, entity=str(entity), severity=sev, score=round(float(score), 3),
                          first_seen=_iso(first), last_seen=_iso(last), title=str(title), explanation=str(expl),
                          evidence=msgspec.json.decode(ev, type=Evidence) if ev else Evidence(features=[],
                                                                                                event_ids=[]),
                          tags=list(tags) if not isinstance(tags, str) else json.loads(tags)),
                    "", str(mode), str(rule)))
    statuses = _statuses(store, [a.alert_id for a, *_ in out])
    return [(a, statuses.get(a.alert_id, "open"), mode, rule) for a, _, mode, rule in out]


def _iso(epoch: Any) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).isoformat().replace("+00:00", "Z")


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass alerts export``."""
    import sys

    from schemas.alerts import encode_alert
    from schemas.jsonl import open_out
    from schemas.ocsf import detection_finding

    store = _open(settings)
    try:
        where = _where(store.database, args.tenant, args.detector, args.severity, args.status,
                       since_epoch(args.since) if args.since else None)
        found = stored_alerts(store, where, args.limit)
    finally:
        store.close()
    with open_out(args.output) as out:
        for a, status, mode, rule in found:
            line = (json.dumps(detection_finding(a, status=status, mode=mode, suppressed_by=rule)).encode()
                    if args.format == "ocsf" else encode_alert(a))
            out.write(line + b"\n")
    print(f"exported {len(found):,} alert(s) as {args.format}", file=sys.stderr)
    return 0
