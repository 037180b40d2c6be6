"""The sink contract: batching writers with backpressure instead of unbounded retries."""

from __future__ import annotations

from typing import Any, Protocol

from schemas.errors import SpyglassError


class SinkBackpressureError(SpyglassError):
    """The destination cannot take more now; the caller pauses and retries the same batch later."""

    def __init__(self, sink: str, retry_after: float, reason: str) -> None:
        self.sink = sink
        self.retry_after = retry_after
        super().__init__(f"{sink}: {reason}; retry in {retry_after:.1f}s")


class Sink(Protocol):
    """A destination of batches. ``name`` appears in logs, metrics and stored rows."""

    name: str

    def write(self, batch: Any) -> None:
        """Write one batch; raise :class:`SinkBackpressureError` when the destination is not ready."""

    def flush(self) -> None:
        """Make everything written so far durable (called before offsets are committed)."""

    def close(self) -> None: ...
