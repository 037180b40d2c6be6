"""A simulated run: benign days merged with attack instances, in event-time order.

:class:`Simulation` yields one time-sorted chunk per simulated day, so memory is bounded
by a day of traffic whatever ``--events`` is. Writers (JSONL file, Kafka) consume the
chunks; labels are written once the run is complete.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np

from schemas.errors import SpyglassError
from streams.simulator.attacks import Injection, Label, inject
from streams.simulator.traffic import DAY_MS, KIND_SHARE, MEAN_SESSION_STEPS, DayPlan, Traffic
from streams.simulator.variants import Rates, inject_variants
from streams.simulator.world import build_world
from streams.simulator.worlds import WorldTraits, varied

DEFAULT_START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
_RELATIVE = re.compile(r"now(?:-(\d{1,5})([dh]))?")


def parse_start(text: str, now: datetime | None = None) -> datetime:
    """A run's ``--start``: RFC 3339 with an offset, or ``now``, ``now-7d``, ``now-6h`` (to the minute).

    A relative start lets a long-running simulator (compose) date its events around the wall clock, so the
    dashboards' default time ranges show them and the worker's event-time checks accept them.

    Examples
    --------
    >>> parse_start("now-7d", now=datetime(2026, 12, 7, 11, 30, 59, tzinfo=UTC)).isoformat()
    '2026-11-30T11:30:00+00:00'
    >>> parse_start("2026-11-02T00:00:00Z").isoformat()
    '2026-11-02T00:00:00+00:00'
    """
    relative = _RELATIVE.fullmatch(text.strip())
    if relative:
        clock = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
        n, unit = relative.groups()
        return clock - timedelta(**{"days" if unit == "d" else "hours": int(n)}) if n else clock
    try:
        start = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SpyglassError(f"--start {text!r}: give RFC 3339 with an offset (2026-11-02T00:00:00Z), or now, "
                            "now-7d, now-6h") from None
    if start.tzinfo is None:
        raise SpyglassError("--start must carry a timezone offset (e.g. 2026-11-02T00:00:00Z)")
    return start


@dataclass
class Chunk:
    """One day's events, sorted by event time."""

    day: int
    ts_ms: np.ndarray
    rows: list[dict]


def iso_ms(ts_ms: np.ndarray) -> list[str]:
    """RFC 3339 UTC strings with milliseconds, vectorised (``2026-11-02T09:13:22.123Z``)."""
    return np.datetime_as_string(ts_ms.astype("datetime64[ms]"), unit="ms", timezone="UTC").tolist()


class Simulation:
    """A deterministic, labelled run of ``events`` events over ``days`` days from ``start``."""

    def __init__(self, *, seed: int, events: int, days: int = 7, start: datetime = DEFAULT_START,
                 instances: int = 2, scenarios: list[str] | None = None, world_seed: int | None = None) -> None:
        """Without ``world_seed``: the default organisation. With it: an organisation drawn from that
        seed (:mod:`streams.simulator.worlds`) with attack variants (:mod:`streams.simulator.variants`)."""
        if start.tzinfo is None:
            raise SpyglassError("--start must carry a timezone offset (e.g. 2026-11-02T00:00:00Z)")
        if days < 1:
            raise SpyglassError("--days must be at least 1")
        self.seed = seed
        self.days = days
        self.start_ms = int(start.timestamp() * 1000)
        self.world_seed = world_seed
        self.traits: WorldTraits | None = None
        self.kind_share = KIND_SHARE
        if world_seed is None:
            self.world = build_world(seed)
            self.traffic = Traffic(self.world, seed)
            self.injections: list[Injection] = inject(self.world, seed, self.start_ms, days, instances, scenarios)
        else:
            self.traits, self.world, self.traffic = varied(world_seed, seed, self.start_ms, days)
            self.kind_share = {"data_access": self.traits.data_share, "agent_execution": self.traits.agent_share}
            api_share = 1.0 - self.traits.data_share - self.traits.agent_share
            rates = Rates(self.traffic, self.start_ms, days, events / days, api_share, self.traits.agent_share)
            self.injections = inject_variants(self.world, rates, seed, self.start_ms, days, instances,
                                              cap=max(200, events // 40), scenarios=scenarios)
        attack_events = sum(len(inj.rows) for inj in self.injections)
        benign = events - attack_events
        if benign < days * 100:
            raise SpyglassError(
                f"--events {events} is too small: the attacks alone take {attack_events} events; "
                f"ask for at least {attack_events + days * 100}"
            )
        self.total = events
        self.plans = self._plan(benign)
        self._attack_ts = np.array([t for inj in self.injections for t in inj.ts_ms], dtype=np.int64)
        self._attack_rows = [r for inj in self.injections for r in inj.rows]
        self._attack_day = np.clip((self._attack_ts - self.start_ms) // DAY_MS, 0, days - 1)

    def _plan(self, benign: int) -> list[DayPlan]:
        rng = np.random.default_rng([self.seed, 3])
        epoch0 = self.start_ms // DAY_MS
        weights = np.array([self.traffic.day_weight(epoch0 + d) for d in range(self.days)])
        per_day = rng.multinomial(benign, weights / weights.sum())
        return [
            DayPlan(d, epoch0 + d, self.start_ms + d * DAY_MS, budget=n,
                    data_access=int(round(n * self.kind_share["data_access"])),
                    agent_sessions=int(round(n * self.kind_share["agent_execution"] / MEAN_SESSION_STEPS)))
            for d, n in enumerate(per_day.tolist())
        ]

    def chunks(self) -> Iterator[Chunk]:
        """The run, one time-sorted day at a time: exactly ``events`` events in all."""
        for day in range(self.days):
            yield self.day(day)

    def day(self, day: int) -> Chunk:
        """One day's events, benign and injected, sorted by event time (independent of other days)."""
        plan = self.plans[day]
        ts, rows = self.traffic.generate(plan)
        mine = np.flatnonzero(self._attack_day == day)
        ts = np.concatenate([ts, self._attack_ts[mine]])
        rows.extend(self._attack_rows[i] for i in mine.tolist())
        order = np.argsort(ts, kind="stable")
        ts = ts[order]
        rows = [rows[i] for i in order.tolist()]
        for r, s in zip(rows, iso_ms(ts), strict=True):
            r["ts"] = s
        return Chunk(day, ts, rows)

    def labels(self) -> list[dict]:
        """One dict per attack instance; in a varied world each also carries the world's seed."""
        out = [label_dict(inj.label) for inj in self.injections]
        if self.world_seed is not None:
            for lab in out:
                lab["world_seed"] = self.world_seed
        return out

    def metadata(self) -> dict:
        """What the run was: its seeds and size, and in a varied world the world's traits."""
        meta: dict = {"seed": self.seed, "events": self.total, "days": self.days, "attacks": len(self.injections)}
        if self.traits is not None:
            meta["world"] = self.traits.summary()
        return meta


def label_dict(label: Label) -> dict:
    out = {
        "scenario": label.scenario,
        "instance": label.instance,
        "tenant": label.tenant,
        "speed": label.speed,
        "entities": label.entities,
        "start": iso_ms(np.array([label.start_ms]))[0],
        "end": iso_ms(np.array([label.end_ms]))[0],
        "event_count": len(label.event_ids),
        "event_ids": label.event_ids,
        "description": label.description,
    }
    if label.params:
        out["params"] = label.params
    if label.detect_from_ms:
        out["detect_from"] = iso_ms(np.array([label.detect_from_ms]))[0]
    return out


def encode_lines(rows: list[dict]) -> bytes:
    """JSONL bytes of a chunk (one C call for the whole chunk)."""
    return _encoder.encode_lines(rows)


_encoder = msgspec.json.Encoder()
