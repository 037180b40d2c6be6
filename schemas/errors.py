"""The root of Spyglass's exceptions.

``schemas`` is the bottom layer (``detectors`` and ``streams`` both import it), so the
root exception lives here.  Errors carry the context an operator needs: the field, and
where the record came from (topic, partition, offset) when it came from Kafka.
"""

from __future__ import annotations


class SpyglassError(Exception):
    """Root of every error Spyglass raises on purpose."""


class ConfigError(SpyglassError):
    """A setting is missing or malformed; the message names the environment variable."""


class StackError(SpyglassError):
    """The local stack could not be provisioned or started."""


class EventError(SpyglassError):
    """An event failed decoding or validation.

    ``field`` is the JSON path of the offending field (``$.status``), or ``$`` when the
    record as a whole is bad (not JSON, not an object, invalid UTF-8).
    """

    def __init__(self, field: str, reason: str, *, line: int | None = None) -> None:
        self.field = field
        self.reason = reason
        self.line = line
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{field}: {reason}")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"field": self.field, "reason": self.reason}
        if self.line is not None:
            d["line"] = self.line
        return d
