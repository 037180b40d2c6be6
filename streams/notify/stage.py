"""``spyglass notify``: the alerts topic to an on-call router, nothing lost, firing until resolved.

A consumer of the alerts topic in its own group (``notify_group``), so it never takes partitions from the
workers and never slows scoring. Each alert at or above ``notify_min_severity`` is posted to the router
(Alertmanager) and then re-posted every ``notify_refresh_s`` while it fires: Alertmanager keeps alerts in
memory only and resolves one whose ``endsAt`` passes, so the re-posts keep it firing, and bring it back
after an Alertmanager restart. An alert is resolved (posted once more with ``endsAt`` now, then
forgotten) when an analyst marks it ``resolved`` or ``false_positive`` (``alert_status`` in the store), or
when its episode ends: its last event plus its detector's cooldown, after which a new hit would be a new
alert.

Nothing is lost: a partition's committed offset never passes an alert that is not yet posted or still
fires, so after a crash, a restart or a rebalance the new owner reads those alerts again and posts them
again (Alertmanager takes the same alert twice as one). While the router is away, consumption pauses and
the post is retried with exponential backoff (up to ``BACKOFF_MAX_S``). A record that is not an alert is
logged with its partition and offset and skipped; an alert the router refuses as malformed is logged and
skipped, so neither stops the stage.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas.alerts import SEVERITIES, Alert
from schemas.errors import EventError
from streams.notify.alertmanager import ms_of, payload, principal_of
from streams.notify.base import DeliveryError, Router
from streams.settings import Settings

log = logging.getLogger("spyglass.notify")

PRINCIPAL_HEADER = "principal"  # the worker's record header naming whose alert it is (when it knows)
RESOLVING_STATUSES = frozenset({"resolved", "false_positive"})
MAX_RECORD_BYTES = 1 << 20
ALERT_ID = re.compile(r"^[0-9a-f]{8,64}$")
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.5, 30.0
DEFAULT_COOLDOWN_S = 3600  # a detector the catalogue does not know (a newer worker's)

_dec = msgspec.json.Decoder(Alert)

StatusSource = Callable[[list[str]], Mapping[str, str]]


def decode_alert(raw: bytes | None) -> Alert:
    """An alerts-topic record's value as an alert; raises :class:`EventError` naming the bad field."""
    if raw is None:
        raise EventError("$", "null value")
    if len(raw) > MAX_RECORD_BYTES:
        raise EventError("$", f"record is {len(raw)} bytes, above the {MAX_RECORD_BYTES}-byte limit")
    try:
        a = _dec.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        where = text.rsplit(" - at `", 1)
        raise EventError(where[1].rstrip("`") if len(where) == 2 else "$", where[0]) from None
    except (msgspec.DecodeError, RecursionError) as exc:
        raise EventError("$", f"not an alert: {exc}") from None
    if not ALERT_ID.match(a.alert_id):
        raise EventError("$.alert_id", "must be 8 to 64 lowercase hex digits")
    for name in ("first_seen", "last_seen"):
        try:
            ms_of(getattr(a, name))
        except ValueError:
            raise EventError(f"$.{name}", "not an ISO 8601 time") from None
    return a


def cooldowns() -> dict[str, int]:
    """Each detector's cooldown in seconds: its episode ends this long after its last hit."""
    from detectors.catalog import CATALOG

    return {name: spec.cooldown_s for name, spec in CATALOG.items()}


class StoreStatuses:
    """Analysts' latest status of alerts, read from the store's ``alert_status`` (a fresh read each call)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Any = None

    def __call__(self, ids: list[str]) -> Mapping[str, str]:
        from streams.sinks.clickhouse import open_store

        listed = ", ".join(f"'{i}'" for i in ids if ALERT_ID.match(i))  # hex only: nothing to escape
        if not listed:
            return {}
        if self._store is None:
            self._store = open_store(self.settings.store())
        db = self._store.database
        try:
            rows = self._store.query(f"SELECT alert_id, argMax(status, updated_at) FROM {db}.alert_status "  # noqa: S608
                                     f"WHERE alert_id IN ({listed}) GROUP BY alert_id")
        except Exception:
            self.close()  # a new connection next time
            raise
        return {str(i): str(st) for i, st in rows}

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()


@dataclass
class Held:
    """An alert this stage owns until it is resolved: where it came from and how far it got."""

    alert: Alert
    principal: str | None
    partition: int
    offset: int
    ends_ms: int  # its episode's end (last event + cooldown), epoch ms
    posted: bool = False
    resolved_ms: int | None = None


@dataclass
class Counts:
    """What the stage did (``spyglass notify`` prints them; tests read them)."""

    alerts: int = 0  # alerts read (at or above the minimum severity)
    below: int = 0  # alerts read below the minimum severity (not sent)
    bad: int = 0  # records that are not alerts
    refused: int = 0  # alerts the router refused as malformed
    posts: int = 0  # successful posts (each carries one or more alerts)
    resolved: int = 0  # alerts posted as resolved and forgotten
    failures: int = 0  # posts that failed and were retried
    by_status: dict[str, int] = field(default_factory=dict)  # resolutions by an analyst's status


class CountsCollector:
    """The stage's :class:`Counts` as Prometheus metrics, read at each scrape (``spyglass notify`` serves them
    on ``SPYGLASS_NOTIFY_WEB_PORT``): a stage that stopped posting, or posts that keep failing, can be alerted on.
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = self.notifier.counts
        for name, doc, value in (
                ("alerts", "alerts read from the alerts topic, at or above the minimum severity", c.alerts),
                ("alerts_below", "alerts read below the minimum severity (not sent)", c.below),
                ("bad_records", "records of the alerts topic that are not alerts (skipped)", c.bad),
                ("refused", "alerts the router refused as malformed (skipped)", c.refused),
                ("posts", "successful posts to the router", c.posts),
                ("post_failures", "posts that failed and were retried", c.failures),
                ("resolved", "alerts posted as resolved", c.resolved)):
            yield CounterMetricFamily(f"spyglass_notify_{name}", doc, value=value)
        yield GaugeMetricFamily("spyglass_notify_firing", "alerts this stage keeps firing",
                                value=len(self.notifier.held()))


class Notifier:
    """The notify stage over one consumer (``kafka-python``, subscribed by :meth:`run`) and one router."""

    def __init__(self, settings: Settings, router: Router, *, statuses: StatusSource | None = None,
                 consumer: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.router = router
        self.statuses = statuses
        self.clock = clock
        self.counts = Counts()
        self.min_rank = SEVERITIES.index(settings.notify_min_severity)
        self.refresh_s = settings.notify_refresh_s
        # how long a posted alert stays firing without a re-post: several refreshes, and never under two
        # minutes, so a slow store or a brief pause of this stage does not flap it
        self.valid_ms = int(max(4 * self.refresh_s, 120.0) * 1000)
        self.cooldown_s = cooldowns()
        self._consumer = consumer
        self._held: dict[str, Held] = {}
        self._consumed: dict[int, int] = {}  # partition -> next offset to read
        self._committed: dict[int, int] = {}
        self._next_refresh = 0.0
        self._retry_at = 0.0
        self._backoff = 0.0
        self._paused = False

    # --- the consumer ---------------------------------------------------------------------------
    def _make_consumer(self) -> Any:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        from streams.kafka_security import kafka_client_config

        s = self.settings
        consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap.split(","), group_id=s.notify_group,
                                 client_id="spyglass-notify", enable_auto_commit=False,
                                 auto_offset_reset="earliest", max_poll_records=500, **kafka_client_config(s))
        notifier = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                notifier.revoked()

            def on_partitions_assigned(self, assigned: Any) -> None:
                notifier.assigned({tp.partition for tp in assigned})

        # the topic's metadata before joining: a group leader without it assigns its partitions to no one
        if not consumer.partitions_for_topic(s.topic_alerts):
            log.warning("the alerts topic has no partitions yet", extra={"topic": s.topic_alerts})
        consumer.subscribe([s.topic_alerts], listener=Listener())
        return consumer

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = self._make_consumer()
        return self._consumer

    def revoked(self) -> None:
        """A rebalance begins: commit what got through (what is held is kept until the new assignment)."""
        self._commit()

    def assigned(self, partitions: set[int]) -> None:
        """A rebalance ends with ``partitions``: forget what was held of the others only.

        A rebalance revokes every partition and then assigns, often the same ones again, whose fetch positions
        the consumer keeps: forgetting what was held of those, an alert read before the rebalance would not be
        read again and would stop being re-posted.
        """
        owned = {h.partition for h in self._held.values()} | set(self._consumed)
        self._forget(owned - partitions)
        self._paused = False  # a fresh assignment is not paused

    def _forget(self, partitions: set[int]) -> None:
        """Drop what this stage held of partitions it no longer owns (their new owner reads them again)."""
        self._held = {k: h for k, h in self._held.items() if h.partition not in partitions}
        for p in partitions:
            self._consumed.pop(p, None)
            self._committed.pop(p, None)

    # --- one step -------------------------------------------------------------------------------
    def step(self, poll_ms: int = 200) -> None:
        """Read what is new (unless paused), post new alerts, and re-post or resolve the held ones when due."""
        batch = self.consumer.poll(timeout_ms=poll_ms)
        for tp, records in batch.items():
            for r in records:
                self._take(tp.partition, r)
            if records:
                self._consumed[tp.partition] = records[-1].offset + 1
        now = self.clock()
        due = now >= self._next_refresh
        if (due or any(not h.posted for h in self._held.values())) and now >= self._retry_at:
            self._deliver(refresh=due)
        self._commit()

    def _take(self, partition: int, r: Any) -> None:
        try:
            a = decode_alert(r.value)
        except EventError as exc:
            self.counts.bad += 1
            log.warning("not an alert: skipped", extra={"topic": self.settings.topic_alerts, "partition": partition,
                                                        "offset": r.offset, "field": exc.field, "reason": exc.reason})
            return
        if SEVERITIES.index(a.severity) < self.min_rank:
            self.counts.below += 1
            return
        header = next((v for k, v in (r.headers or ()) if k == PRINCIPAL_HEADER and isinstance(v, bytes)), None)
        principal = principal_of(a, header.decode("utf-8", "replace")[:256] if header else None)
        ends = ms_of(a.last_seen) + self.cooldown_s.get(a.detector, DEFAULT_COOLDOWN_S) * 1000
        held = self._held.get(a.alert_id)
        if held is not None:  # read again (a restart): keep the earliest record, it holds the commit back
            held.offset = min(held.offset, r.offset)
            return
        self.counts.alerts += 1
        self._held[a.alert_id] = Held(a, principal, partition, r.offset, ends)

    def _deliver(self, refresh: bool) -> None:
        chosen = [h for h in self._held.values() if refresh or not h.posted]
        status: Mapping[str, str] = {}
        if self.statuses is not None and chosen:
            try:
                status = self.statuses([h.alert.alert_id for h in chosen])
            except Exception as exc:  # noqa: BLE001 - the store is optional here: fire on, check next time
                log.warning("analysts' statuses unavailable (%s): alerts stay firing until they are", exc,
                            extra={"error": str(exc)})
        now_ms = int(self.clock() * 1000)
        for h in chosen:
            st = status.get(h.alert.alert_id)
            if h.resolved_ms is None and st in RESOLVING_STATUSES:
                h.resolved_ms = now_ms
                self.counts.by_status[st] = self.counts.by_status.get(st, 0) + 1
            elif h.resolved_ms is None and h.ends_ms <= now_ms:
                h.resolved_ms = h.ends_ms
        try:
            self._post(chosen, now_ms)
        except DeliveryError as exc:
            self.counts.failures += 1
            self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, 2 * self._backoff))
            self._retry_at = self.clock() + self._backoff
            if not self._paused:  # nothing more is read until this gets through (bounded memory)
                self.consumer.pause(*self.consumer.assignment())
                self._paused = True
            log.warning("router unavailable: retrying", extra={"router": self.router.name, "error": str(exc),
                                                               "retry_in_s": self._backoff,
                                                               "alerts": len(chosen)})
            return
        self._backoff = 0.0
        if self._paused:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False
        for h in chosen:
            h.posted = True
            if h.resolved_ms is not None:
                self.counts.resolved += 1
                del self._held[h.alert.alert_id]
        if refresh:
            self._next_refresh = self.clock() + self.refresh_s

    def _payload(self, h: Held, now_ms: int) -> dict[str, Any]:
        ends = h.resolved_ms if h.resolved_ms is not None else now_ms + self.valid_ms
        return payload(h.alert, h.principal, grafana_url=self.settings.grafana_url, ends_ms=ends)

    def _post(self, chosen: list[Held], now_ms: int) -> None:
        """Post ``chosen`` at once; if the router refuses them as malformed, one by one, skipping the bad."""
        if not chosen:
            return
        try:
            self.router.post([self._payload(h, now_ms) for h in chosen])
            self.counts.posts += 1
            return
        except DeliveryError as exc:
            if not exc.permanent:
                raise
        for h in chosen:
            try:
                self.router.post([self._payload(h, now_ms)])
                self.counts.posts += 1
            except DeliveryError as exc:
                if not exc.permanent:
                    raise
                self.counts.refused += 1
                h.resolved_ms = now_ms  # dropped after this round: the router will never take it
                log.error("the router refused an alert: skipped", extra={
                    "alert_id": h.alert.alert_id, "partition": h.partition, "offset": h.offset, "error": str(exc)})

    def _commit(self) -> None:
        """Commit, per partition, up to the first alert not yet posted or still firing."""
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        first: dict[int, int] = {}
        for h in self._held.values():
            first[h.partition] = min(first.get(h.partition, h.offset), h.offset)
        offsets = {}
        for p, end in self._consumed.items():
            pos = first.get(p, end)
            if self._committed.get(p) != pos:
                offsets[TopicPartition(self.settings.topic_alerts, p)] = OffsetAndMetadata(pos, "", -1)
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # a rebalance under way: the next step commits again
            log.warning("commit failed: retried", extra={"error": str(exc)})
            return
        for tp, om in offsets.items():
            self._committed[tp.partition] = om.offset

    # --- the loop -------------------------------------------------------------------------------
    def held(self) -> list[Alert]:
        """The alerts this stage keeps firing (posted or not yet)."""
        return [h.alert for h in self._held.values()]

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set; then commit what got through and close the consumer."""
        try:
            while not stop.is_set():
                self.step()
                if self._paused:
                    stop.wait(min(0.2, max(0.0, self._retry_at - self.clock())))
        finally:
            close = getattr(self.statuses, "close", None)
            if close is not None:
                close()
            if self._consumer is not None:
                self._commit()
                self._consumer.close(autocommit=False)
                self._consumer = None
