"""``spyglass eval scenarios``: per-scenario detection on a labelled simulator run.

Alerts are matched to labelled instances with the rule of :mod:`detectors.evaluation.worlds`
(an alert above ``info`` counts for an instance when it names one of its entities while it
runs, or carries one of its events as evidence); an instance is *detected on the right
entity* when such an alert names one of the entities the label lists. Time to detect is
event time from the instance's first event to that alert's ``first_seen``. Every other alert
above ``info`` is false; false alerts are reported per 100k benign events.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import msgspec

from detectors.engine import Engine
from detectors.evaluation.metrics import human_duration
from detectors.evaluation.worlds import AttackResult, attack_results, match
from schemas.alerts import Alert

TARGET_DETECTION = 0.95
TARGET_FALSE_PER_100K = 1.0


def score(alerts: list[Alert], labels: list[dict], total_events: int) -> tuple[list[AttackResult], list[Alert], int]:
    """Match alerts to labelled instances; returns (per instance, false alerts, benign event count)."""
    matched = match(alerts, labels)
    return attack_results(matched, labels), matched.false, total_events - matched.attack_events


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from schemas.jsonl import LineStats, event_batches, open_in, open_out

    console = Console(width=max(Console().width, 150))
    with open_in(args.labels) as f:
        labels = [msgspec.json.decode(line) for line in f if line.strip()]
    alerts: list[Alert] = []
    engine = Engine()
    read = LineStats()
    events = 0
    t0 = time.perf_counter()
    with open_in(args.events) as src:  # batches as the replay command cuts them: the same alerts
        for batch in event_batches(src, read):
            alerts.extend(engine.process(batch))
            events += len(batch)
    seconds = time.perf_counter() - t0
    if args.alerts:
        with open_out(args.alerts) as f:
            f.write(msgspec.json.Encoder().encode_lines(alerts))
    results, false, benign = score(alerts, labels, events)

    by_s: dict[str, list[AttackResult]] = defaultdict(list)
    for r in results:
        by_s[r.scenario].append(r)
    t = Table("scenario", "instances", "detected", "right entity", "in time", "median time to detect", "detectors",
              title=f"{args.events}: {events:,} events, {len(alerts)} alerts")
    for name, rs in sorted(by_s.items()):
        ttd = sorted(r.ttd_s for r in rs if r.ttd_s is not None)
        med = human_duration(ttd[len(ttd) // 2] if ttd else None)
        t.add_row(name, str(len(rs)), str(sum(r.detected for r in rs)), str(sum(r.caught for r in rs)),
                  str(sum(r.in_time for r in rs)), med, ", ".join(sorted({d for r in rs for d in r.detectors})))
    console.print(t)
    n = len(results)
    right = sum(r.caught for r in results)
    in_time = sum(r.in_time for r in results)
    per_100k = 100_000 * len(false) / max(benign, 1)
    console.print(f"detected on the right entity: {right}/{n} ({100 * right / max(n, 1):.1f}%), in time: {in_time}/{n} "
                  f"({100 * in_time / max(n, 1):.1f}%) — target ≥ {100 * TARGET_DETECTION:.0f}%")
    console.print(f"false alerts: {len(false)} over {benign:,} benign events = {per_100k:.2f} per 100k "
                  f"— target ≤ {TARGET_FALSE_PER_100K}")
    if false:
        fd: dict[str, int] = defaultdict(int)
        for a in false:
            fd[a.detector] += 1
        console.print("false alerts by detector: " + ", ".join(f"{k} {v}" for k, v in sorted(fd.items())))
    console.print(f"replay: {events / seconds if seconds else 0.0:,.0f} events/s, {read.invalid} invalid lines")
    return 0
