"""``spyglass suppress add|list|expire``: edit the suppression rules file (``SPYGLASS_SUPPRESSIONS_FILE``).

The file is the source of truth and belongs in version control; these commands validate and rewrite it
atomically, and running workers pick the change up within seconds (:mod:`streams.suppression`).
"""

from __future__ import annotations

import argparse
import getpass
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from schemas.errors import ConfigError, SpyglassError
from streams.settings import Settings
from streams.suppression import Match, Range, Rule, RuleFile, load, save, validation_message

_EVIDENCE = re.compile(r"^(?P<name>[^<>=]+?)\s*(?P<op><=|>=|=)\s*(?P<value>.+)$")


def register(subparsers: Any) -> None:
    """Add the ``suppress`` command to a top-level ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "suppress", help="suppression rules as code: add, list, expire (alerts stored, not published or routed)",
        description="Edit the suppression rules in SPYGLASS_SUPPRESSIONS_FILE (YAML, meant for version control). "
        "Alerts a live rule matches are stored with the rule's id and neither published nor routed; workers "
        "re-read the file when it changes.")
    sub = p.add_subparsers(dest="suppress_command", metavar="{add,list,expire}", required=True)
    a = sub.add_parser("add", help="add a rule", description="Add a rule matching detector, tenant and entity "
                       "(exact or glob, e.g. 'svc-*') and evidence features; it needs a reason and an expiry.")
    a.add_argument("--id", help="the rule's id (default: sup-N, the next free number)")
    a.add_argument("--detector", default="*", help="detector name or glob (default *)")
    a.add_argument("--tenant", default="*", help="tenant or glob (default *)")
    a.add_argument("--entity", default="*", help="entity or glob (default *)")
    a.add_argument("--evidence", action="append", default=[], metavar="NAME=V|NAME<=V|NAME>=V",
                   help="an evidence feature's value or bound (repeatable; two bounds of one name make a range)")
    a.add_argument("--reason", required=True, help="why (kept with the rule)")
    a.add_argument("--expires", required=True, help="a span from now (12h, 7d, 2w) or an ISO 8601 time with offset")
    a.add_argument("--by", help="the author (default: the login name)")
    a.set_defaults(func=cmd_add)
    ls = sub.add_parser("list", help="list the rules", description="List the rules with their state (live or "
                        "expired).")
    ls.add_argument("--all", action="store_true", help="expired rules too")
    ls.set_defaults(func=cmd_list)
    e = sub.add_parser("expire", help="end a rule now (it stays in the file, expired, for the record)",
                       description="Set a rule's expiry to now.")
    e.add_argument("rule_id")
    e.set_defaults(func=cmd_expire)


def _until(text: str, now: datetime) -> datetime:
    from streams.cli.alerts import span_or_time

    return span_or_time(text, "--expires", now, sign=1)


def parse_evidence(items: list[str]) -> dict[str, float | Range]:
    """``--evidence`` arguments as a rule's evidence match.

    Examples:
        >>> parse_evidence(["rows>=10", "rows<=500", "new_ip=1"])
        {'rows': Range(min=10.0, max=500.0), 'new_ip': 1.0}
    """
    out: dict[str, float | Range] = {}
    for item in items:
        m = _EVIDENCE.match(item)
        if m is None:
            raise SpyglassError(f"--evidence: {item!r} is not NAME=V, NAME<=V or NAME>=V")
        name, op = m["name"].strip(), m["op"]
        try:
            value = float(m["value"])
        except ValueError:
            raise SpyglassError(f"--evidence {name}: {m['value']!r} is not a number") from None
        if op == "=":
            out[name] = value
            continue
        old = out.get(name)
        rng = old if isinstance(old, Range) else Range()
        out[name] = Range(min=value if op == ">=" else rng.min, max=value if op == "<=" else rng.max)
    return out


def add_rule(settings: Settings, *, detector: str = "*", tenant: str = "*", entity: str = "*",
             evidence: dict[str, float | Range] | None = None, reason: str, author: str, expires: str,
             rule_id: str | None = None) -> Rule:
    """Validate a new rule and append it to the rules file (rewritten atomically); the rule."""
    path = settings.suppressions_file
    rules = load(path)
    now = datetime.now(UTC).replace(microsecond=0)
    ids = {r.id for r in rules.rules}
    rule_id = rule_id or next(f"sup-{n}" for n in range(1, len(ids) + 2) if f"sup-{n}" not in ids)
    try:
        rule = Rule(id=rule_id, match=Match(detector=detector, tenant=tenant, entity=entity, evidence=evidence or {}),
                    reason=reason, author=author, expires=_until(expires, now), created=now)
        new = RuleFile(version=rules.version, rules=[*rules.rules, rule])
    except ValidationError as exc:
        raise ConfigError(validation_message("suppress add", exc)) from None
    save(path, new)
    return rule


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass suppress add``."""
    rule = add_rule(settings, detector=args.detector, tenant=args.tenant, entity=args.entity,
                    evidence=parse_evidence(args.evidence), reason=args.reason, author=args.by or getpass.getuser(),
                    expires=args.expires, rule_id=args.id)
    print(f"{rule.id}: added to {settings.suppressions_file}, expires {rule.expires.isoformat()}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass suppress list``."""
    from rich.console import Console
    from rich.table import Table

    rules = load(settings.suppressions_file)
    now = datetime.now(UTC)
    table = Table(title=f"{settings.suppressions_file}", title_justify="left")
    for col in ("id", "state", "detector", "tenant", "entity", "evidence", "expires", "author", "reason"):
        table.add_column(col)
    for r in rules.rules:
        if not args.all and not r.live(now):
            continue
        ev = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k} in [{v.min}, {v.max}]"
                       for k, v in r.match.evidence.items())
        table.add_row(r.id, "live" if r.live(now) else "expired", r.match.detector, r.match.tenant, r.match.entity,
                      ev, r.expires.isoformat(), r.author, r.reason)
    Console(width=200).print(table)
    return 0


def cmd_expire(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass suppress expire``."""
    path = settings.suppressions_file
    rules = load(path)
    now = datetime.now(UTC).replace(microsecond=0)
    if not any(r.id == args.rule_id for r in rules.rules):
        raise SpyglassError(f"no rule {args.rule_id!r} in {path}")
    new = RuleFile(version=rules.version, rules=[r.model_copy(update={"expires": min(r.expires, now)})
                                                  if r.id == args.rule_id else r for r in rules.rules])
    save(path, new)
    print(f"{args.rule_id}: expired at {now.isoformat()}")
    return 0
