"""``spyglass eval worlds``: the engine over many simulated organisations, tune worlds apart from test worlds.

Each world is generated from its world seed (:mod:`streams.simulator.worlds`), replayed
through the engine in memory a day at a time (JSON encoded and decoded as the replay path
does), and scored with :mod:`detectors.evaluation.worlds`. Tune on the tune worlds; the test
worlds are the figures to report.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from detectors.evaluation.worlds import Score, combine, score

BATCH = 20_000


@dataclass
class WorldRun:
    """One world's traits and figures."""

    world_seed: int
    brief: str
    traits: dict[str, object]
    score: Score


def seeds(spec: str) -> list[int]:
    """World seeds from ``A..B`` (inclusive), ``A,B,C`` or one number.

    Examples
    --------
    >>> seeds("1..3"), seeds("101,105"), seeds("7")
    ([1, 2, 3], [101, 105], [7])
    """
    out: list[int] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, sep, hi = part.strip().partition("..")
        out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    return out


def evaluate_world(world_seed: int, events: int, days: int, instances: int) -> WorldRun:
    """Generate world ``world_seed``, run a fresh engine over it and score its alerts."""
    from detectors.engine import Engine
    from schemas.events import decode_batch
    from streams.simulator.run import Simulation, encode_lines

    sim = Simulation(seed=world_seed, world_seed=world_seed, events=events, days=days, instances=instances)
    engine = Engine()
    alerts = []
    for chunk in sim.chunks():
        decoded, errors = decode_batch(encode_lines(chunk.rows).splitlines())
        if errors:
            raise ValueError(f"world {world_seed}: simulated event {errors[0][0]} of day {chunk.day} is invalid: "
                             f"{errors[0][1]}")
        for i in range(0, len(decoded), BATCH):
            alerts.extend(engine.process(decoded[i:i + BATCH]))
    traits = sim.traits
    if traits is None:  # a Simulation with a world seed always has traits
        raise TypeError("a varied world without traits")
    return WorldRun(world_seed, traits.brief(), traits.summary(),
                    score(alerts, sim.labels(), sim.total, learning_until=engine.learning_until()))


def _evaluate(job: tuple[int, int, int, int]) -> WorldRun:
    return evaluate_world(*job)


def run_worlds(world_seeds: list[int], events: int, days: int, instances: int, jobs: int) -> list[WorldRun]:
    """Every world of ``world_seeds``, in order; ``jobs`` > 1 spreads the worlds over processes."""
    work = [(s, events, days, instances) for s in world_seeds]
    if jobs <= 1:
        return [_evaluate(w) for w in work]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(_evaluate, work))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ttd(s: float | None) -> str:
    from detectors.evaluation.metrics import human_duration

    return human_duration(s)


def report(sets: dict[str, list[WorldRun]], console: Any) -> dict[str, Any]:
    """Print the per-world, total, per-detector and per-scenario tables; return the figures as data."""
    from rich.table import Table

    t = Table("set", "world", "traits", "events", "attacks", "caught", "recall", "in time", "median TTD",
              "FA/100k", "precision", title="worlds")
    out: dict[str, Any] = {}
    totals: dict[str, Score] = {}
    for name, runs in sets.items():
        for r in runs:
            s = r.score
            t.add_row(name, str(r.world_seed), r.brief, f"{s.events:,}", str(len(s.attacks)), str(s.caught),
                      _pct(s.recall), _pct(s.in_time_share), _ttd(s.median_ttd_s), f"{s.false_per_100k:.1f}",
                      _pct(s.precision))
        total = totals[name] = combine(r.score for r in runs)
        t.add_row(f"[bold]{name} total", f"{len(runs)} worlds", "", f"{total.events:,}", str(len(total.attacks)),
                  str(total.caught), _pct(total.recall), _pct(total.in_time_share), _ttd(total.median_ttd_s),
                  f"{total.false_per_100k:.1f}", _pct(total.precision), end_section=True)
        out[name] = {"worlds": [{"world_seed": r.world_seed, "brief": r.brief, "traits": r.traits,
                                 **r.score.figures()} for r in runs], "total": total.figures()}
    console.print(t)
    for name, total in totals.items():
        caught, n = total.recall_after_learning
        if total.attacks:
            console.print(f"{name}: recall on the {n} of {len(total.attacks)} attacks that did not end inside their "
                          f"tenant's learning period (where nothing is raised above info): "
                          f"{_pct(caught / n if n else None)} ({caught} caught)")

    d = Table("detector", *(f"{n} {c}" for n in totals for c in ("alerts", "true", "false")),
              title="alerts above info by detector")
    for det in sorted({k for s in totals.values() for k in s.by_detector}):
        cells = []
        for s in totals.values():
            c = s.by_detector.get(det)
            cells += [str(c.alerts), str(c.true), str(c.false)] if c else ["0", "0", "0"]
        d.add_row(det, *cells)
    console.print(d)

    sc = Table("scenario", *(f"{n} caught" for n in totals), *(f"{n} in time" for n in totals),
               title="attacks by scenario (caught on the right entity / instances)")
    by: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for name, s in totals.items():
        for a in s.attacks:
            by[a.scenario][name].append(a)
    for scen in sorted(by):
        caught = [f"{sum(a.caught for a in by[scen][n])}/{len(by[scen][n])}" for n in totals]
        timely = [f"{sum(a.in_time for a in by[scen][n])}/{len(by[scen][n])}" for n in totals]
        sc.add_row(scen, *caught, *timely)
    console.print(sc)
    return out


def _run(args: argparse.Namespace, settings: object) -> int:
    from rich.console import Console

    console = Console(width=max(Console().width, 170))
    tune, test = seeds(args.tune), seeds(args.test)
    overlap = sorted(set(tune) & set(test))
    if overlap:
        console.print(f"[red]tune and test worlds overlap: {overlap}[/]")
        return 2
    runs = run_worlds(tune + test, args.events, args.days, args.instances, args.jobs)
    sets = {"tune": runs[:len(tune)], "test": runs[len(tune):]}
    console.print(f"{len(tune)} tune and {len(test)} test worlds, {args.events:,} events over {args.days} days each")
    figures = report(sets, console)
    if args.json:
        from schemas.jsonl import open_out

        with open_out(args.json) as f:
            f.write(json.dumps({"events": args.events, "days": args.days, "instances": args.instances, **figures},
                               indent=1).encode())
        if args.json != "-":
            console.print(f"figures -> {args.json}")
    return 0


def register(sub: Any) -> None:
    """Add ``worlds`` to the ``spyglass eval`` suites."""
    w = sub.add_parser("worlds", help="the engine over many generated organisations: tune worlds vs test worlds",
                       description="Generate each world from its world seed (organisation, habits, attack variants), "
                       "run the engine over it in memory and report per world and in total: recall on the right "
                       "entity, time to detect, false alerts per 100k benign events and precision; per detector: "
                       "alerts, true, false.")
    w.add_argument("--tune", required=True, help="tune world seeds: A..B, A,B,C or N")
    w.add_argument("--test", default="", help="test world seeds (reported apart; never tune on them); none: tuning")
    w.add_argument("--events", type=int, default=100_000, help="events per world, attacks included (default 100000)")
    w.add_argument("--days", type=int, default=5, help="simulated days per world (default 5)")
    w.add_argument("--instances", type=int, default=2, help="instances of each attack scenario (default 2)")
    w.add_argument("--jobs", type=int, default=1, help="worlds evaluated in parallel processes (default 1)")
    w.add_argument("--json", help="also write the figures (per world, totals, per detector) here (- for stdout)")
    w.set_defaults(func=_run)
