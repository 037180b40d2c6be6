"""Suppression as code: rules in a versioned YAML file that keep matching alerts from being published or routed.

A suppressed alert is still stored, with the id of the rule that matched it (``alerts.suppressed_by``),
so nothing is lost and a rule can be audited. The file (``SPYGLASS_SUPPRESSIONS_FILE``) is meant to live
in version control; ``spyglass suppress add|list|expire`` edit it. The worker re-reads it when it changes
(:class:`Suppressor`), without a restart; a file that does not validate is refused with an error naming
the key, and the rules loaded before stay in force.

Example::

    version: 1
    rules:
      - id: nightly-export
        match:
          detector: data.volume_spike     # exact or a glob (fnmatch): data.*
          tenant: acme
          entity: "svc-export-*"
          evidence:                       # feature name: exact value, or a range
            rows: {max: 2000000}
        reason: the nightly export job reads the whole table
        author: ana
        expires: 2026-12-31T00:00:00Z
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.alerts import Alert
from schemas.errors import ConfigError

log = logging.getLogger("spyglass.suppression")

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Range(BaseModel):
    """An evidence feature's bounds (either may be left out)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min: float | None = None
    max: float | None = None

    def holds(self, value: float) -> bool:
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class Match(BaseModel):
    """What a rule matches: detector, tenant and entity (exact or glob), and evidence features."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    detector: str = Field("*", min_length=1, max_length=256)
    tenant: str = Field("*", min_length=1, max_length=256)
    entity: str = Field("*", min_length=1, max_length=512)
    evidence: dict[str, float | Range] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _narrow(self) -> Match:
        if self.detector == "*" and self.tenant == "*" and self.entity == "*":
            raise ValueError("names none of detector, tenant, entity: it would suppress every alert")
        return self

    def matches(self, a: Alert) -> bool:
        if not (fnmatchcase(a.detector, self.detector) and fnmatchcase(a.tenant, self.tenant)
                and fnmatchcase(a.entity, self.entity)):
            return False
        if not self.evidence:
            return True
        values = {f.name: f.value for f in a.evidence.features}
        for name, want in self.evidence.items():
            have = values.get(name)
            if have is None or not (want.holds(have) if isinstance(want, Range) else have == want):
                return False
        return True


class Rule(BaseModel):
    """One suppression: what it matches, why, who asked, and until when."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=ID_PATTERN)
    match: Match
    reason: str = Field(min_length=1, max_length=2000)
    author: str = Field(min_length=1, max_length=256)
    expires: AwareDatetime
    created: AwareDatetime | None = None

    def live(self, now: datetime) -> bool:
        return now < self.expires


class RuleFile(BaseModel):
    """The whole file: its format version and its rules (ids unique)."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = 1
    rules: list[Rule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RuleFile:
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise ValueError(f"rule id {r.id!r} is used twice")
            seen.add(r.id)
        return self

    def match(self, a: Alert, now: datetime) -> str | None:
        """The id of the first live rule matching ``a``, or None."""
        for r in self.rules:
            if r.live(now) and r.match.matches(a):
                return r.id
        return None


def key_path(loc: tuple[Any, ...]) -> str:
    """A pydantic error location as the key an operator edits: ``rules[2].match.detector``.

    Examples:
        >>> key_path(("rules", 2, "match", "detector"))
        'rules[2].match.detector'
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("float", "Range", "function-after[_narrow(), Match]", "function-after[_unique(), RuleFile]"):
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def validation_message(path: Path | str, exc: ValidationError) -> str:
    """Every error of ``exc`` with the key it is about."""
    parts = [f"{key_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
    return f"{path}: " + "; ".join(dict.fromkeys(parts))


def yaml_mapping(text: str, path: Path | str, keys: str) -> dict[str, Any]:
    """The mapping a YAML configuration file holds (empty for an empty file); :class:`ConfigError` otherwise."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping with {keys}")
    return raw


def parse(text: str, path: Path | str = "<rules>") -> RuleFile:
    """The rules a YAML text gives; :class:`ConfigError` naming the key when it does not validate."""
    raw = yaml_mapping(text, path, "version and rules")
    try:
        return RuleFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(validation_message(path, exc)) from None


def read_config(path: Path) -> str | None:
    """The text of a configuration file, None when there is none; :class:`ConfigError` when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


def load(path: Path) -> RuleFile:
    """The rules of ``path``; a missing file has none."""
    text = read_config(path)
    return RuleFile() if text is None else parse(text, path)


def dump(rules: RuleFile) -> str:
    """YAML of ``rules`` (times in UTC, ISO 8601)."""
    return yaml.safe_dump(rules.model_dump(mode="json", exclude_none=True, exclude_defaults=False),
                          sort_keys=False, allow_unicode=True)


def save(path: Path, rules: RuleFile) -> None:
    """Write ``rules`` to ``path`` atomically (a worker never reads half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dump(rules))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Suppressor:
    """The worker's view of the rules file: re-read when its modification time or size changes, checked at most
    every ``check_s`` seconds. A file that stops validating is logged and the rules before it stay in force."""

    def __init__(self, path: Path, *, check_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.check_s = check_s
        self.clock = clock
        self.rules = RuleFile()
        self.reloads = 0
        self._stamp: tuple[int, int] | None = None
        self._checked = -float("inf")
        self.refresh(force=True)

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def refresh(self, force: bool = False) -> bool:
        """Re-read the file if it changed; True when new rules are in force."""
        now = self.clock()
        if not force and now - self._checked < self.check_s:
            return False
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp and not force:
            return False
        self._stamp = stamp
        try:
            rules = load(self.path)
        except ConfigError as exc:
            log.error("suppression rules refused; the rules loaded before stay in force", extra={"error": str(exc)})
            return False
        self.rules = rules
        self.reloads += 1
        log.info("suppression rules loaded", extra={"path": str(self.path), "rules": len(rules.rules)})
        return True

    def match(self, a: Alert, now: datetime | None = None) -> str | None:
        """The id of the live rule suppressing ``a``, or None."""
        if not self.rules.rules:
            return None
        return self.rules.match(a, now or datetime.now(UTC))
