"""Send events to Spyglass from a Python service: typed constructors, validation before send, batching, delivery
callbacks.

This module is what a service imports, so it stays light: the contract (msgspec), the settings (pydantic) and
kafka-python, never the worker's Faust, Numba or River. Every event is encoded and checked against contract
v1 before it is handed to the producer; one that fails raises :class:`InvalidEvent` listing every bad field and
nothing is sent. Valid events go to their kind's topic (``SPYGLASS_TOPIC_*``), keyed by their entity (API key,
principal, agent) so one entity's events stay in order, and reach the broker in batches (``linger_ms``,
``batch_size``). The connection follows the ``SPYGLASS_KAFKA_*`` security settings
(:func:`streams.kafka_security.kafka_client_config`).

Examples
--------
>>> ev = agent_execution(agent_id="agt-7", agent_type="support-assistant", session_id="s-1", principal="ana",
...                      action="search_kb", target_system="kb", privilege="read", approval="not_required",
...                      triggered_by="user", outcome="success", event_id="e-1")
>>> ev.event_id, type(ev).__name__
('e-1', 'AgentExecution')
>>> [e.field for e in errors(api_usage(api_key_id="k", principal="p", client_ip="10.0.0.1", method="GET",
...                                    endpoint="/v1/models", status=700, auth_result="fine"))]
['$.status', '$.auth_result']

A runnable example is ``docs/examples/python_emitter.py``; ``docs/emitters.md`` describes all the ways in.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.errors import EventError, SpyglassError
from schemas.events import AgentExecution, ApiUsage, DataAccess, Event, encode, entity_of
from schemas.validate import check
from streams.settings import Settings

__all__ = ["Delivery", "Emitter", "InvalidEvent", "agent_execution", "api_usage", "data_access", "errors"]


class InvalidEvent(SpyglassError):
    """An event that does not meet the contract; ``errors`` names every bad field. It was not sent."""

    def __init__(self, errors: list[EventError], where: str = "event") -> None:
        self.errors = errors
        super().__init__(f"invalid {where}: " + "; ".join(f"{e.field}: {e.reason}" for e in errors))


@dataclass(frozen=True)
class Delivery:
    """What became of one sent event: where the broker stored it, or why it did not (``error``)."""

    event_id: str
    kind: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


DeliveryCallback = Callable[[Delivery], None]


def _envelope(event_id: str | None, ts: datetime | None) -> dict[str, Any]:
    return {"event_id": event_id or uuid.uuid4().hex, "ts": ts or datetime.now(UTC)}


def api_usage(*, api_key_id: str, principal: str, client_ip: str, method: str, endpoint: str, status: int,
              auth_result: str, event_id: str | None = None, ts: datetime | None = None, **optional: Any) -> ApiUsage:
    """An ``api_usage`` event (one request to an API gateway); ``event_id`` defaults to a new UUID, ``ts`` to now.

    ``optional``: the contract's optional fields (``tenant``, ``model``, ``tokens_in``, ``scopes_granted``, ...).
    """
    return ApiUsage(**_envelope(event_id, ts), api_key_id=api_key_id, principal=principal, client_ip=client_ip,
                    method=method, endpoint=endpoint, status=status, auth_result=auth_result, **optional)


def data_access(*, principal: str, principal_department: str, dataset: str, dataset_owner_department: str,
                sensitivity: str, operation: str, granted: bool, event_id: str | None = None,
                ts: datetime | None = None, **optional: Any) -> DataAccess:
    """A ``data_access`` event (one read/write/export of a dataset); defaults as :func:`api_usage`."""
    return DataAccess(**_envelope(event_id, ts), principal=principal, principal_department=principal_department,
                      dataset=dataset, dataset_owner_department=dataset_owner_department, sensitivity=sensitivity,
                      operation=operation, granted=granted, **optional)


def agent_execution(*, agent_id: str, agent_type: str, session_id: str, principal: str, action: str,
                    target_system: str, privilege: str, approval: str, triggered_by: str, outcome: str,
                    event_id: str | None = None, ts: datetime | None = None, **optional: Any) -> AgentExecution:
    """An ``agent_execution`` event (one tool call by an AI agent); defaults as :func:`api_usage`."""
    return AgentExecution(**_envelope(event_id, ts), agent_id=agent_id, agent_type=agent_type,
                          session_id=session_id, principal=principal, action=action, target_system=target_system,
                          privilege=privilege, approval=approval, triggered_by=triggered_by, outcome=outcome,
                          **optional)


def errors(event: Event) -> list[EventError]:
    """Every way ``event`` breaks the contract (``[]`` when it is valid), as the worker's decoder would see it."""
    result = check(encode(event))
    return result if isinstance(result, list) else []


class Emitter:
    """A Kafka producer for Spyglass events: validates, routes by kind, keys by entity, batches.

    Use it as a context manager (or call :meth:`close`): leaving it flushes what is pending. ``on_delivery``
    callbacks run on the producer's I/O thread, so keep them short. :meth:`flush` waits for every pending
    event and returns the failed deliveries since the last flush.
    """

    def __init__(self, settings: Settings | None = None, *, client_id: str = "spyglass-emitter",
                 linger_ms: int = 20, batch_size: int = 256 * 1024, topics: dict[str, str] | None = None,
                 on_delivery: DeliveryCallback | None = None) -> None:
        from kafka import KafkaProducer  # the one heavy import, here so that constructing events needs none

        from streams.kafka_security import kafka_client_config

        self.settings = settings or Settings()
        self.topics = topics or self.settings.topics()
        self.on_delivery = on_delivery
        self._failed: list[Delivery] = []
        self._lock = threading.Lock()
        self.sent = 0
        from kafka.errors import KafkaError

        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.settings.kafka_bootstrap.split(","), client_id=client_id, acks="all",
                linger_ms=linger_ms, batch_size=batch_size, retries=10, **kafka_client_config(self.settings))
        except KafkaError as exc:
            raise SpyglassError(f"cannot connect to Kafka at {self.settings.kafka_bootstrap} "
                                f"(SPYGLASS_KAFKA_BOOTSTRAP, SPYGLASS_KAFKA_SECURITY_PROTOCOL): {exc}") from None

    def send(self, event: Event, *, on_delivery: DeliveryCallback | None = None) -> None:
        """Validate ``event`` and queue it for its kind's topic; raises :class:`InvalidEvent` (nothing sent)."""
        raw = encode(event)
        result = check(raw, default_tenant=self.settings.default_tenant)
        if isinstance(result, list):
            raise InvalidEvent(result, f"{type(event).__struct_config__.tag} event {event.event_id!r}")
        self._send(raw, result, on_delivery)

    def send_json(self, raw: bytes | str, *, on_delivery: DeliveryCallback | None = None,
                  topic: str | None = None) -> Event:
        """Validate one JSON record and queue it as it is (unknown extra fields kept); returns the decoded event.

        ``topic`` overrides the kind's topic. Raises :class:`InvalidEvent` naming every bad field (nothing sent).
        """
        data = raw.encode() if isinstance(raw, str) else raw
        result = check(data, default_tenant=self.settings.default_tenant)
        if isinstance(result, list):
            raise InvalidEvent(result, "record")
        self._send(data, result, on_delivery, topic)
        return result

    def send_many(self, events: Iterable[Event], *, on_delivery: DeliveryCallback | None = None) -> int:
        """Validate every event first, then queue them all; none is sent if one is invalid. Returns the count."""
        encoded = []
        for event in events:
            raw = encode(event)
            result = check(raw, default_tenant=self.settings.default_tenant)
            if isinstance(result, list):
                raise InvalidEvent(result, f"{type(event).__struct_config__.tag} event {event.event_id!r}")
            encoded.append((raw, result))
        for raw, result in encoded:
            self._send(raw, result, on_delivery)
        return len(encoded)

    def _send(self, raw: bytes, event: Event, on_delivery: DeliveryCallback | None,
              topic: str | None = None) -> None:
        kind = type(event).__struct_config__.tag
        topic = topic or self.topics[kind]
        callback = on_delivery or self.on_delivery

        def done(meta: Any) -> None:
            if callback:
                callback(Delivery(event.event_id, kind, topic, meta.partition, meta.offset))

        def failed(exc: BaseException) -> None:
            d = Delivery(event.event_id, kind, topic, error=exc)
            with self._lock:
                self._failed.append(d)
            if callback:
                callback(d)

        future = self._producer.send(topic, key=entity_of(event).encode(), value=raw)
        future.add_callback(done)
        future.add_errback(failed)
        self.sent += 1

    def flush(self, timeout: float | None = None) -> list[Delivery]:
        """Wait until every queued event is acknowledged or failed; the failures since the last flush."""
        self._producer.flush(timeout)
        with self._lock:
            failed, self._failed = self._failed, []
        return failed

    def close(self, timeout: float = 30) -> list[Delivery]:
        """Flush, then close the connection; the failures since the last flush."""
        try:
            return self.flush(timeout)
        finally:
            self._producer.close(timeout=timeout)

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
