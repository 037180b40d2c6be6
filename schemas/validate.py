"""Every error of a record, for people: what ``spyglass schemas check``, ``spyglass produce`` and the emitter report.

:func:`~schemas.events.decode` stops at the first bad field, which is what the hot path wants. Someone fixing
an emitter wants all of them at once, and for a closed set of values (an enum, the event kind) the values that
would have been accepted. :func:`errors_of` runs only after ``decode`` has failed: it checks each field of the
record's kind on its own, with the same msgspec types the decoder uses, so the two never disagree on what is
valid.
"""

from __future__ import annotations

import typing
from functools import cache
from typing import Any

import msgspec

from schemas.errors import EventError
from schemas.events import DEFAULT_TENANT, EVENT_TYPES, KINDS, MAX_RECORD_BYTES, Event, decode


def _literal_values(hint: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` inside ``hint`` (through ``Annotated`` and ``| None``), else ``()``."""
    if typing.get_origin(hint) is typing.Literal:
        return tuple(typing.get_args(hint))
    for arg in typing.get_args(hint):
        found = _literal_values(arg)
        if found:
            return found
    return ()


@cache
def _fields(kind: str) -> tuple[tuple[str, bool, msgspec.json.Decoder, tuple[str, ...]], ...]:
    """Each field of ``kind``: (name, required, a decoder of its type alone, its allowed values if an enum)."""
    cls = EVENT_TYPES[kind]
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in msgspec.structs.fields(cls):
        hint = hints[f.name]
        out.append((f.encode_name, f.required, msgspec.json.Decoder(hint), _literal_values(hint)))
    return tuple(out)


def _allowed(values: tuple[str, ...]) -> str:
    return "allowed: " + ", ".join(values)


def _field_error(name: str, exc: msgspec.MsgspecError, values: tuple[str, ...]) -> EventError:
    msg = str(exc)
    path = f"$.{name}"
    if " - at `$" in msg:  # an element of a list field: "... - at `$[3]`"
        msg, _, at = msg.partition(" - at `$")
        path += at.rstrip("`")
    if values:
        msg = f"{msg} ({_allowed(values)})"
    return EventError(path, msg)


def errors_of(raw: bytes | str, *, default_tenant: str = DEFAULT_TENANT) -> list[EventError]:
    """Every error of one JSON record, in the contract's field order; ``[]`` if it is a valid event.

    Examples
    --------
    >>> [(e.field, e.reason) for e in errors_of(b'{"kind":"data_access","event_id":"e1","ts":"2026-11-21T13:45:00Z",'
    ...     b'"principal":"ana","principal_department":"hr","dataset":"payroll","dataset_owner_department":"hr",'
    ...     b'"sensitivity":"secret","operation":"read","granted":"yes"}')]  # doctest: +NORMALIZE_WHITESPACE
    [('$.sensitivity', "Invalid enum value 'secret' (allowed: public, internal, confidential, restricted)"),
     ('$.granted', 'Expected `bool`, got `str`')]
    """
    first = decode(raw, default_tenant=default_tenant)
    if not isinstance(first, EventError):
        return []
    return explain(raw, first)


def explain(raw: bytes | str, first: EventError) -> list[EventError]:
    """All errors of a record that :func:`decode` refused with ``first`` (``[first]`` when nothing more is known)."""
    if len(raw) > MAX_RECORD_BYTES:
        return [first]
    try:
        obj = msgspec.json.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return [first]
    if not isinstance(obj, dict):
        return [first]
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        reason = "missing required field `kind`" if "kind" not in obj else f"unknown event kind {kind!r}"
        return [EventError("$.kind", f"{reason} ({_allowed(KINDS)})")]
    errors = []
    for name, required, decoder, values in _fields(kind):
        if name not in obj:
            if required:
                errors.append(EventError(f"$.{name}", f"Object missing required field `{name}`"))
            continue
        try:
            decoder.decode(msgspec.json.encode(obj[name]))
        except msgspec.MsgspecError as exc:
            errors.append(_field_error(name, exc, values))
    return errors or [first]


def check(raw: bytes | str, *, default_tenant: str = DEFAULT_TENANT) -> Event | list[EventError]:
    """The decoded event, or every error of the record (the emitters' one call)."""
    ev = decode(raw, default_tenant=default_tenant)
    return explain(raw, ev) if isinstance(ev, EventError) else ev
