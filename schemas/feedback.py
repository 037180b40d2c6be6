"""The feedback contract: an analyst's mark on an alert, as the CLI (or any tool) sends it to the worker.

One JSON object per record on ``SPYGLASS_TOPIC_FEEDBACK``, written to the partition the alert came
from (``source_partition``): the feedback topic has as many partitions as the event topics and the
worker group assigns them together, so the mark reaches the worker whose engine raised the alert. The
record carries what the engine needs to learn from it (detector, tenant, entity, score), so the worker
never reads the store to apply it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import msgspec

from schemas.errors import EventError

Status = Literal["open", "acknowledged", "resolved", "false_positive", "true_positive"]
STATUSES: tuple[str, ...] = ("open", "acknowledged", "resolved", "false_positive", "true_positive")
TEACHING = ("false_positive", "true_positive")  # the statuses an engine learns from; the others are triage only
MAX_TEXT = 2000  # longest note or analyst name kept


class FeedbackMark(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An analyst's status for one alert, with the alert fields the engine keys its learning by."""

    alert_id: str
    status: Status
    tenant: str
    detector: str
    entity: str
    entity_type: str = ""
    score: float = 0.0
    source_topic: str = ""
    source_partition: int = -1
    analyst: str = ""
    note: str = ""
    at: str = ""  # ISO 8601 UTC, when the analyst marked it


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(FeedbackMark)


def encode_mark(mark: FeedbackMark) -> bytes:
    """The record value of ``mark``."""
    return _enc.encode(mark)


def decode_mark(value: bytes | None) -> FeedbackMark:
    """A record value as a mark; raises :class:`EventError` naming the field (attacker-written input)."""
    if value is None:
        raise EventError("$", "empty feedback record")
    try:
        mark = _dec.decode(value)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("at `", 1)[1].rstrip("`") if "at `" in text else "$"
        raise EventError(field, text.split(" - at ", 1)[0]) from None
    except msgspec.DecodeError as exc:
        raise EventError("$", f"not JSON ({exc})") from None
    for name in ("alert_id", "tenant", "detector", "entity"):
        value_ = getattr(mark, name)
        if not value_ or len(value_) > 512:
            raise EventError(f"$.{name}", "must be 1 to 512 characters")
    if not 0.0 <= mark.score <= 1.0:
        raise EventError("$.score", "must be within [0, 1]")
    if len(mark.note) > MAX_TEXT or len(mark.analyst) > MAX_TEXT:
        raise EventError("$.note" if len(mark.note) > MAX_TEXT else "$.analyst", f"longer than {MAX_TEXT} characters")
    return mark


def now_iso() -> str:
    """The wall clock as the ``at`` of a new mark."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
