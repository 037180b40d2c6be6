"""Python objects -> the columns of the ClickHouse tables (``Store.insert`` takes whole columns).

The worker calls :func:`block_packed` (:func:`block_columns` on chDB or without the native module)
and :func:`alert_columns` for the ``events`` and ``alerts`` tables; the CLI calls
:func:`alert_status_columns` for ``alert_status``. Times become timezone-aware UTC datetimes
with whole seconds (the tables use ``DateTime``, valid on ClickHouse 18.16 and current releases).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import Any, NamedTuple

import msgspec
import numpy as np

from schemas.alerts import Alert, plain_number
from schemas.block import SPECS, EventBlock, blocks_of, code
from schemas.errors import SpyglassError
from schemas.feedback import STATUSES

ALERT_COLUMNS = (
    "alert_id", "tenant", "detector", "kind", "entity_type", "entity", "severity", "score", "first_seen",
    "last_seen", "title", "explanation", "evidence", "feature_names", "feature_values", "feature_baselines",
    "event_ids", "tags", "source_topic", "source_partition", "source_offset", "created_at", "mode", "suppressed_by",
)
ALERT_STATUSES = STATUSES  # schemas.feedback: the analyst statuses
ENFORCED = ("enforce", "")  # an alert's (mode, suppressed_by) unless its detector is in shadow or a rule matched

_enc = msgspec.json.Encoder(enc_hook=plain_number)


def _utc_seconds(ts: datetime | str) -> datetime:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00").replace("z", "+00:00"))
    if ts.tzinfo is None:
        raise SpyglassError(f"naive timestamp {ts.isoformat()}: give a UTC offset")
    return ts.astimezone(UTC).replace(microsecond=0)


class ColumnRangeError(SpyglassError):
    """A value does not fit its column's type (an event time outside ``DateTime``, a negative ``UInt64``): never
    written wrapped around; the writer quarantines the row."""


# the ranges of the unsigned column types, [lo, hi)
_UNSIGNED_RANGE = {"DateTime": (0, 2**32), "UInt8": (0, 2**8), "UInt16": (0, 2**16), "UInt64": (0, 2**64)}


def check_range(name: str, ty: str, values: np.ndarray) -> None:
    """Raise :class:`ColumnRangeError` naming the column and a value when one of ``values`` is outside ``ty``."""
    bounds = _UNSIGNED_RANGE.get(ty)
    if bounds is None or not len(values) or values.dtype.kind not in "iu":
        return
    lo, hi = bounds
    low, high = int(values.min()), int(values.max())
    if low < lo or high >= hi:
        bad = low if low < lo else high
        raise ColumnRangeError(f"column {name} ({ty}): {bad} is out of range")


MEASURES = ("flags", "rows", "bytes", "request_bytes", "response_bytes", "tokens_in", "tokens_out")
# Contract fields the dashboards show, stored as decoded (migration 012): '' where the kind lacks the field
FIELDS = ("client_ip", "auth_result", "user_agent", "scope_used", "dataset", "principal_department",
          "dataset_owner_department", "sensitivity", "operation", "purpose", "agent_type", "session_id", "action",
          "target_system", "privilege", "approval", "triggered_by", "scopes_granted")
# The ``events`` columns the worker writes, in order, with their ClickHouse types; the numpy types of the
# fixed-width ones in the Native format (little-endian)
EVENT_TYPES = {"event_id": "String", "kind": "String", "ts": "DateTime", "ts_ms": "UInt16", "tenant": "String",
               "source": "String", "entity": "String", "principal": "String", "payload": "String",
               "ingested_at": "DateTime", "score": "Float32", "flags": "UInt8", "rows": "UInt64", "bytes": "UInt64",
               "request_bytes": "UInt64", "response_bytes": "UInt64", "tokens_in": "UInt64", "tokens_out": "UInt64",
               **{name: "String" for name in FIELDS[:-1]}, "scopes_granted": "Array(String)"}
NATIVE_DTYPES = {"DateTime": "<u4", "UInt8": "<u1", "UInt16": "<u2", "UInt64": "<u8", "Float32": "<f4"}
EVENT_COLUMNS = tuple(EVENT_TYPES)


def _event_names(measures: bool) -> list[str]:
    """The ``events`` columns written: all, or those of the schema before migration 010 (an older writer)."""
    return [name for name in EVENT_COLUMNS if measures or (name not in MEASURES and name not in FIELDS)]


# Bits of the ``flags`` column (migration 010): one per counter of ``events_minute``.
AUTH_FAILURE, DENIED, SENSITIVE, CROSS_DEPARTMENT, PRIVILEGED, BYPASSED, UNTRUSTED, FAILED = (1 << i for i in range(8))


def _is(b: EventBlock, field: str, *values: str) -> np.ndarray:
    col = b.cols[field]
    return np.isin(col, [code(b.kind, field, v) for v in values])


def _flags(b: EventBlock) -> np.ndarray:
    c = b.cols
    if b.kind == "api_usage":
        return np.where(c["auth_result"] != code(b.kind, "auth_result", "ok"), AUTH_FAILURE, 0)
    if b.kind == "data_access":
        cross = np.fromiter(map(operator.ne, c["principal_department"], c["dataset_owner_department"]),
                            dtype=np.bool_, count=len(b))
        return (np.where(c["granted"], 0, DENIED) | np.where(_is(b, "sensitivity", "confidential", "restricted"),
                                                             SENSITIVE, 0) | np.where(cross, CROSS_DEPARTMENT, 0))
    return (np.where(_is(b, "privilege", "admin"), PRIVILEGED, 0)
            | np.where(_is(b, "approval", "bypassed"), BYPASSED, 0)
            | np.where(c["untrusted_input"], UNTRUSTED, 0)
            | np.where(_is(b, "outcome", "success"), 0, FAILED))


def event_measures(b: EventBlock) -> dict[str, np.ndarray]:
    """The typed measure columns of a block (``flags`` and the volumes the per-minute view sums).

    The rules are those of the DEFAULT expressions in migration 010, which compute the same values
    from the payload for writers that leave these columns out; a test holds the two to each other.
    """
    out = {"flags": _flags(b)}
    for name in MEASURES[1:]:  # 0 where absent or the kind lacks it
        col = b.cols.get(name)
        out[name] = np.zeros(len(b), dtype=np.int64) if col is None else col
    return out


def event_fields(b: EventBlock) -> dict[str, list[Any]]:
    """The :data:`FIELDS` columns of a block: the decoded values (enums as their names), '' or () where absent.

    Values come from the decoder, which reads the event's own top-level fields, the ones the detectors use.
    """
    n = len(b)
    specs = {s.name: s for s in SPECS[b.kind]}
    out: dict[str, list[Any]] = {}
    for name in FIELDS:
        spec, col = specs.get(name), b.cols.get(name)
        if spec is None or col is None:
            out[name] = [()] * n if name == "scopes_granted" else [""] * n
        elif spec.type in ("enum", "oenum"):
            names = np.array([*spec.values, ""], dtype=object)  # code -1 (absent) picks the last
            out[name] = names[np.asarray(col)].tolist()
        elif spec.type == "strs":
            out[name] = [v or () for v in col]
        elif spec.type == "str":  # required: a list of str already
            out[name] = col
        else:
            out[name] = ["" if v is None else v for v in col]
    return out


class Packed(NamedTuple):
    """Whole columns already in ClickHouse's Native wire form, for ``NativeStore.insert_packed``: each column's
    (name, ClickHouse type, bytes), and the number of rows."""

    columns: list[tuple[str, str, bytes]]
    rows: int


def _rounded(scores: Sequence[float]) -> np.ndarray:
    """Scores as stored: rounded to 4 places by Python's rules (numpy's differ on some halves), 0 kept 0."""
    out = np.asarray(scores, dtype=np.float64)
    nonzero = np.flatnonzero(out)  # most events score 0
    if len(nonzero):
        out = out.copy()
        out[nonzero] = [round(x, 4) for x in out[nonzero].tolist()]
    return out


def _event_pieces(b: EventBlock, ingested: int, measures: bool) -> dict[str, Any]:
    """One block's part of every ``events`` column: lists for the strings, arrays for the rest."""
    from schemas.events import ENTITY_FIELD

    n, c = len(b), b.cols
    if b.raws is None or len(b.raws) != n:
        raise SpyglassError(f"event_columns: a block of {n} {b.kind} events without its payloads")
    scores = b.scores if b.scores is not None else [0.0] * n
    if len(scores) != n:
        raise SpyglassError(f"event_columns: {n} events, {len(scores)} scores")
    ts_ms = c["ts"] // 1000
    check_range("ts", "DateTime", ts_ms // 1000)  # never wrapped around by the packed form's astype('<u4')
    out = {"event_id": c["event_id"], "kind": [b.kind] * n, "ts": ts_ms // 1000, "ts_ms": ts_ms % 1000,
           "tenant": c["tenant"], "source": c["source"], "entity": c[ENTITY_FIELD[b.kind]], "principal": c["principal"],
           "payload": b.raws, "ingested_at": np.full(n, ingested, dtype=np.int64),
           "score": _rounded(scores)}
    if measures:
        out.update(event_measures(b))
        out.update(event_fields(b))
    return out


def block_columns(blocks: Sequence[EventBlock], ingested_at: datetime, *,
                  measures: bool = True) -> dict[str, list[Any]]:
    """The ``events`` columns of decoded blocks (each with its raw JSON and, once scored, its ``scores``).

    ``measures=False`` leaves out :data:`MEASURES` and :data:`FIELDS`, as a writer older than migration 010 does.

    Built a whole column at a time, from the block's columns: the worker calls this for every event
    it stores. ``payload`` stays bytes (clickhouse-driver writes them as they are; the embedded store
    decodes them). DateTime columns get epoch seconds: both stores take them, and clickhouse-driver
    skips its per-value time-zone conversion of datetime objects (the costliest part of the insert).
    """
    ingested = int(_utc_seconds(ingested_at).timestamp())
    out: dict[str, list[Any]] = {name: [] for name in _event_names(measures)}
    for b in blocks:
        for name, piece in _event_pieces(b, ingested, measures).items():
            out[name] += piece if isinstance(piece, list) else piece.tolist()
    return out


def block_packed(blocks: Sequence[EventBlock], ingested_at: datetime, *, measures: bool = True) -> Packed | None:
    """The columns of :func:`block_columns`, the same values, already in ClickHouse's Native form: fixed-width
    columns straight from the blocks' arrays, strings packed by the native module (no Python object per value
    on the way, as clickhouse-driver's writers make). ``None`` when ``spyglass_native`` is not built."""
    try:
        from spyglass_native import pack_strings
    except ImportError:
        return None
    ingested = int(_utc_seconds(ingested_at).timestamp())
    pieces = [_event_pieces(b, ingested, measures) for b in blocks]
    columns = []
    for name in _event_names(measures):
        ty = EVENT_TYPES[name]
        parts = [p[name] for p in pieces]
        if ty == "String":
            data = b"".join(map(pack_strings, parts))
        elif ty == "Array(String)":  # each row's end offset into the items (UInt64), then the items
            rows = list(chain.from_iterable(parts))
            ends = np.cumsum(np.fromiter(map(len, rows), dtype=np.uint64, count=len(rows)), dtype=np.uint64)
            data = ends.astype("<u8").tobytes() + pack_strings(list(chain.from_iterable(rows)))
        else:
            values = np.concatenate(parts) if parts else np.zeros(0)
            check_range(name, ty, values)  # astype would wrap a value out of range silently
            data = values.astype(NATIVE_DTYPES[ty]).tobytes()
        columns.append((name, ty, data))
    return Packed(columns, sum(map(len, blocks)))


def event_columns(events: Sequence[Any], raws: Sequence[bytes], scores: Sequence[float],
                  ingested_at: datetime, *, measures: bool = True) -> dict[str, list[Any]]:
    """The ``events`` columns of decoded structs (any kinds), their raw JSON and the highest score each got:
    :func:`block_columns` of their blocks (rows grouped by kind)."""
    if not len(events) == len(raws) == len(scores):
        raise SpyglassError(f"event_columns: {len(events)} events, {len(raws)} payloads, {len(scores)} scores")
    blocks = []
    for b, pos in blocks_of(events, raws):
        b.scores = list(scores) if pos is None else [scores[i] for i in pos.tolist()]
        blocks.append(b)
    return block_columns(blocks, ingested_at, measures=measures)


def alert_columns(
    alerts: Sequence[Alert], created_at: datetime, sources: Sequence[tuple[str, int, int]] | None = None,
    dispositions: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, list[Any]]:
    """The ``alerts`` columns of ``alerts``; ``sources[i]`` is (topic, partition, offset) of alert i's trigger;
    ``dispositions[alert_id]`` is (mode, suppressing rule id) of an alert that is not simply enforced
    (migration 014).

    A feature without a baseline gets NaN in ``feature_baselines``; without ``sources`` the source
    columns are ``''``, 0, 0.

    Examples
    --------
    >>> from schemas.alerts import Alert, Evidence, Feature
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
        mode, rule = dispositions.get(a.alert_id, ENFORCED) if dispositions else ENFORCED
        cols["mode"].append(mode)
        cols["suppressed_by"].append(rule)
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
