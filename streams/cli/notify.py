"""``spyglass notify``: deliver the alerts topic to Alertmanager (routing, grouping, inhibition, silences)."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any
from urllib.parse import urlsplit

from streams.settings import Settings


def register(subparsers: Any) -> None:
    """Add the ``notify`` command to a top-level ``add_subparsers()`` object."""
    p = subparsers.add_parser(
        "notify",
        help="post alerts from the alerts topic to Alertmanager and keep them firing until resolved",
        description=(
            "Read the alerts topic in its own consumer group (SPYGLASS_NOTIFY_GROUP) and post each alert at or "
            "above SPYGLASS_NOTIFY_MIN_SEVERITY to Alertmanager's v2 API (SPYGLASS_ALERTMANAGER_URL, default the "
            "local stack's). Firing alerts are re-posted every SPYGLASS_NOTIFY_REFRESH_S until an analyst marks "
            "them resolved or false_positive, or their episode ends. While Alertmanager is away the posts are "
            "retried with backoff; offsets are committed only past alerts that got through. Runs until "
            "interrupted."
        ),
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_notify)


def cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    """Handle ``spyglass notify``."""
    import logging.config

    from streams.metrics import logging_config
    from streams.notify.alertmanager import AlertmanagerRouter
    from streams.notify.stage import Notifier, StoreStatuses

    logging.config.dictConfig(logging_config(args.log_level.upper()))  # JSON lines: the extras are kept
    log = logging.getLogger("spyglass.notify")
    stop = threading.Event()
    held: list[Any] = []

    def on_signal(*_: Any) -> None:
        # a consumer still waiting for its first broker has nothing to commit: leave at once; otherwise the
        # loop ends after its step and commits; a second signal does not wait for that
        if stop.is_set() or not held or held[0]._consumer is None:
            raise SystemExit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    # the embedded store (chDB) belongs to the one process that opened it: the worker's; only a server is read
    server = settings.store().scheme == "clickhouse"
    if not server:
        log.warning("the store is embedded (chdb://): analysts' statuses are not read, so alerts resolve when "
                    "their episode ends; use a ClickHouse server to resolve them from alert_status")
    notifier = Notifier(settings, AlertmanagerRouter(settings.alertmanager_base()),
                        statuses=StoreStatuses(settings) if server else None)
    held.append(notifier)
    router = urlsplit(settings.alertmanager_base())
    where = f"{router.scheme}://{router.hostname}" + (f":{router.port}" if router.port else "")  # no credentials
    log.info("notify started", extra={"topic": settings.topic_alerts, "router": where,
                                      "group": settings.notify_group, "refresh_s": settings.notify_refresh_s,
                                      "min_severity": settings.notify_min_severity})
    served = None
    if settings.notify_web_port:
        from prometheus_client import CollectorRegistry, start_http_server

        from streams.notify.stage import CountsCollector

        registry = CollectorRegistry()
        registry.register(CountsCollector(notifier))
        served = start_http_server(settings.notify_web_port, str(settings.worker_web_host), registry=registry)
    try:
        notifier.run(stop)
    finally:
        if served is not None:
            served[0].shutdown()
    c = notifier.counts
    print(f"notify: {c.alerts} alert(s) read, {c.posts} post(s), {c.resolved} resolved, {c.failures} failed "
          f"post(s) retried, {c.bad} bad record(s), {c.refused} refused, {c.below} below "
          f"{settings.notify_min_severity}")
    return 0
