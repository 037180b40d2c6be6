"""``spyglass produce``: validate a JSONL file of events (or stdin) and send the valid ones to their topics."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from streams.settings import Settings


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.errors import EventError
    from schemas.jsonl import open_in
    from schemas.validate import check
    from streams.emitter import Emitter

    name = "<stdin>" if args.input == "-" else args.input
    topic_kind = {t: k for k, t in settings.topics().items()}.get(args.topic) if args.topic else None
    lines = invalid = reported = 0
    with open_in(args.input) as src, Emitter(settings, client_id="spyglass-produce") as emitter:
        for n, line in enumerate(src, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            lines += 1
            result = check(line, default_tenant=settings.default_tenant)
            if not isinstance(result, list) and topic_kind and type(result).__struct_config__.tag != topic_kind:
                result = [EventError("$.kind", f"a {type(result).__struct_config__.tag} event for the "
                                               f"{topic_kind} topic {args.topic}")]
            if isinstance(result, list):
                invalid += 1
                if reported < args.max_errors:
                    reported += 1
                    for e in result:
                        print(f"{name}:{n}: {e.field}: {e.reason}", file=sys.stderr)
                continue
            emitter.send_json(line, topic=args.topic)
        failed = emitter.flush()
    if invalid > reported:
        print(f"... and {invalid - reported:,} more invalid lines (--max-errors)", file=sys.stderr)
    for d in failed[:5]:
        print(f"spyglass: the broker refused event {d.event_id!r} on {d.topic}: {type(d.error).__name__}: {d.error}",
              file=sys.stderr)
    where = args.topic or "their kinds' topics"
    print(f"sent {lines - invalid - len(failed):,} events to {where} on {settings.kafka_bootstrap}; "
          f"{invalid:,} invalid lines not sent" + (f"; {len(failed):,} refused by the broker" if failed else ""))
    return 1 if invalid or failed else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "produce", help="validate a JSONL file of events and send the valid ones to the event topics",
        description="Read events as JSON lines, check each against contract v1 and send the valid ones, keyed by "
        "entity, to the topic of their kind (SPYGLASS_TOPIC_*), over the SPYGLASS_KAFKA_* connection and "
        "security settings. Every error of an invalid line is reported with its line number and field; that "
        "line is not sent, the others are. Exit 1 if any line was invalid or refused.")
    p.add_argument("--input", required=True, help="events JSONL, or - for stdin")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--topic-from-kind", action="store_true",
                       help="send each event to its kind's topic (the default)")
    where.add_argument("--topic", help="send every event to this topic instead; if it is one of the event "
                       "topics, events of another kind are refused as invalid")
    p.add_argument("--max-errors", type=int, default=20, help="print the errors of at most this many lines "
                   "(default 20)")
    p.set_defaults(func=_produce)
