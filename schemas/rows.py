"""Python objects -> the columns of the ClickHouse tables (``Store.insert`` takes whole columns).

The worker calls :func:`event_columns` and :func:`alert_columns` for the ``events`` and ``alerts``
tables; the CLI calls
:func:`alert_status_columns` for ``alert_status``. Times become timezone-aware UTC datetimes
with whole seconds (the tables use ``DateTime``, valid on ClickHouse 18.16 and current releases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgspec

from schemas.errors import SpyglassError

if TYPE_CHECKING:
    from detectors.alerts import Alert

ALERT_COLUMNS = (
    "alert_id", "tenant", "detector", "kind", "entity_type", "entity", "severity", "score", "first_seen",
    "last_seen", "title", "explanation", "evidence", "feature_names", "feature_values", "feature_baselines",
    "event_ids", "tags", "source_topic", "source_partition", "source_offset", "created_at",
)
ALERT_STATUSES = ("open", "acknowledged", "resolved", "false_positive")

_enc = msgspec.json.Encoder()


def _utc_seconds(ts: datetime | str) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00").replace("z", "+00:00"))
    if ts.tzinfo is None:
        raise SpyglassError(f"naive timestamp {ts.isoformat()}: give a UTC offset")
    return ts.astimezone(UTC).replace(microsecond=0)


_TS, _EVENT_ID, _TENANT, _SOURCE, _PRINCIPAL = map(attrgetter, ("ts", "event_id", "tenant", "source", "principal"))
MEASURES = ("flags", "rows", "bytes", "request_bytes", "response_bytes", "tokens_in", "tokens_out")
EVENT_COLUMNS = ("event_id", "kind", "ts", "ts_ms", "tenant", "source", "entity", "principal", "payload",
                 "ingested_at", "score", *MEASURES)

# Bits of the ``flags`` column (migration 010): one per counter of ``events_minute``.
AUTH_FAILURE, DENIED, SENSITIVE, CROSS_DEPARTMENT, PRIVILEGED, BYPASSED, UNTRUSTED, FAILED = (1 << i for i in range(8))


def _api_flags(e: Any) -> int:
    return AUTH_FAILURE if e.auth_result != "ok" else 0


def _data_flags(e: Any) -> int:
    return ((0 if e.granted else DENIED) | (SENSITIVE if e.sensitivity in ("confidential", "restricted") else 0)
            | (CROSS_DEPARTMENT if e.principal_department != e.dataset_owner_department else 0))


def _agent_flags(e: Any) -> int:
    return ((PRIVILEGED if e.privilege == "admin" else 0) | (BYPASSED if e.approval == "bypassed" else 0)
            | (UNTRUSTED if e.untrusted_input else 0) | (FAILED if e.outcome != "success" else 0))


_FLAGS = {"api_usage": _api_flags, "data_access": _data_flags, "agent_execution": _agent_flags}


def event_measures(events: Sequence[Any], kinds: Sequence[str]) -> dict[str, list[int]]:
    """The typed measure columns of ``events`` (``flags`` and the volumes the per-minute view sums).

    The rules are those of the DEFAULT expressions in migration 010, which compute the same values
    from the payload for writers that leave these columns out; a test holds the two to each other.
    """
    out = {"flags": list(map(lambda e, k: _FLAGS[k](e), events, kinds))}
    for name in MEASURES[1:]:  # column by column: no tuple per event for the collector to trace
        out[name] = [getattr(e, name, None) or 0 for e in events]  # 0 where absent or the kind lacks it
    return out


def event_columns(events: Sequence[Any], raws: Sequence[bytes], scores: Sequence[float],
                  ingested_at: datetime, *, measures: bool = True) -> dict[str, list[Any]]:
    """The ``events`` columns of decoded events, their raw JSON and the highest score each got.

    ``measures=False`` leaves out :data:`MEASURES`, as a writer older than migration 010 does.

    Built column by column (one C-level pass per column, not eleven appends per event): the worker
    calls this for every event it stores. ``payload`` stays bytes (clickhouse-driver writes them
    as they are; the embedded store decodes them).
    """
    from schemas.events import ENTITY_FIELD

    if not len(events) == len(raws) == len(scores):
        raise SpyglassError(f"event_columns: {len(events)} events, {len(raws)} payloads, {len(scores)} scores")
    kinds = [type(ev).__struct_config__.tag for ev in events]
    # DateTime columns get epoch seconds: both stores take them, and clickhouse-driver skips its
    # per-value time-zone conversion of datetime objects (the costliest part of the insert)
    ingested = int(_utc_seconds(ingested_at).timestamp())
    return {
        "event_id": list(map(_EVENT_ID, events)),
        "kind": kinds,
        "ts": [int(ts.timestamp()) for ts in map(_TS, events)],  # aware (the decoder refuses naive times)
        "ts_ms": [ts.microsecond // 1000 for ts in map(_TS, events)],
        "tenant": list(map(_TENANT, events)),
        "source": [src if isinstance(src, str) else "" for src in map(_SOURCE, events)],
        "entity": [getattr(ev, ENTITY_FIELD[k]) for ev, k in zip(events, kinds, strict=True)],
        "principal": list(map(_PRINCIPAL, events)),
        "payload": list(raws),
        "ingested_at": [ingested] * len(events),
        "score": [round(float(x), 4) if x else 0.0 for x in scores],  # most events score 0
        **(event_measures(events, kinds) if measures else {}),
    }


def alert_columns(
    alerts: Sequence[Alert], created_at: datetime, sources: Sequence[tuple[str, int, int]] | None = None
) -> dict[str, list[Any]]:
    """The ``alerts`` columns of ``alerts``; ``sources[i]`` is (topic, partition, offset) of alert i's trigger.

    A feature without a baseline gets NaN in ``feature_baselines``; without ``sources`` the source
    columns are ``''``, 0, 0.

    Examples
    --------
    >>> from detectors.alerts import Alert, Evidence, Feature
    >>> a = Alert(alert_id="a1", tenant="t", detector="api.new_client", kind="api_usage", entity_type="api_key",
    ...           entity="k1", severity="high", score=0.8, first_seen="2026-11-02T10:00:00.250Z",
    ...           last_seen="2026-11-02T10:05:00Z", title="New client", explanation="Key k1 used from a new IP.",
    ...           evidence=Evidence(features=[Feature(name="ip_new", value=1.0)], event_ids=["e1"]), tags=[])
    >>> cols = alert_columns([a], datetime(2026, 11, 2, 10, 6, tzinfo=UTC), [("spyglass.api-usage", 3, 42)])
    >>> cols["first_seen"][0].isoformat(), cols["feature_baselines"], cols["source_offset"]
    ('2026-11-02T10:00:00+00:00', [[nan]], [42])
    """
    if sources is not None and len(sources) != len(alerts):
        raise SpyglassError(f"alert_columns: {len(alerts)} alerts but {len(sources)} sources")
    cols: dict[str, list[Any]] = {name: [] for name in ALERT_COLUMNS}
    created = _utc_seconds(created_at)
    for i, a in enumerate(alerts):
        feats = a.evidence.features
        topic, partition, offset = sources[i] if sources is not None else ("", 0, 0)
        cols["alert_id"].append(a.alert_id)
        cols["tenant"].append(a.tenant)
        cols["detector"].append(a.detector)
        cols["kind"].append(a.kind)
        cols["entity_type"].append(a.entity_type)
        cols["entity"].append(a.entity)
        cols["severity"].append(a.severity)
        cols["score"].append(float(a.score))
        cols["first_seen"].append(_utc_seconds(a.first_seen))
        cols["last_seen"].append(_utc_seconds(a.last_seen))
        cols["title"].append(a.title)
        cols["explanation"].append(a.explanation)
        cols["evidence"].append(_enc.encode(a.evidence).decode("utf-8"))
        cols["feature_names"].append([f.name for f in feats])
        cols["feature_values"].append([float(f.value) for f in feats])
        cols["feature_baselines"].append([math.nan if f.baseline is None else float(f.baseline) for f in feats])
        cols["event_ids"].append(list(a.evidence.event_ids))
        cols["tags"].append(list(a.tags))
        cols["source_topic"].append(topic)
        cols["source_partition"].append(int(partition))
        cols["source_offset"].append(int(offset))
        cols["created_at"].append(created)
    return cols


def alert_status_columns(
    alert_id: str, tenant: str, status: str, *, updated_at: datetime, updated_by: str, note: str = ""
) -> dict[str, list[Any]]:
    """One ``alert_status`` row; ``status`` must be one of :data:`ALERT_STATUSES`."""
    if status not in ALERT_STATUSES:
        raise SpyglassError(f"alert status {status!r} is not one of {', '.join(ALERT_STATUSES)}")
    if not alert_id:
        raise SpyglassError("alert status needs an alert id")
    return {
        "alert_id": [alert_id], "tenant": [tenant], "status": [status], "updated_at": [_utc_seconds(updated_at)],
        "updated_by": [updated_by], "note": [note],
    }
