"""The local stack behind ``spyglass stack``: Kafka (KRaft) and ClickHouse as real processes on 127.0.0.1."""

from __future__ import annotations

from streams.stack.base import ServiceStatus
from streams.stack.manager import Stack

__all__ = ["ServiceStatus", "Stack"]
