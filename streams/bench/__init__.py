"""``spyglass bench``: the benchmarks, each printing the baseline it is measured against in the same run.

One module per benchmark (``replay``, ``stream``, ``store``, ``decode``, ``panels``), each with its ``register``;
``panelfill`` fills a database for the panel benchmark and the dashboard tests.
"""

from __future__ import annotations

from typing import Any


def register(subparsers: Any) -> None:
    """Add ``bench`` and its benchmarks to the ``spyglass`` command line."""
    from streams.bench import decode, panels, replay, store, stream

    b = subparsers.add_parser("bench", help="benchmarks (throughput and memory, each beside its baseline)",
                              description="Benchmarks print the baseline measured in the same run, as a ratio.")
    sub = b.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for bench in (replay, stream, store, decode, panels):
        bench.register(sub)


def add_traffic_args(parser: Any, *, events: int, what: str = "simulated events") -> None:
    """The simulated traffic a benchmark runs on: ``--events`` (its size) and ``--seed`` (the simulator's seed)."""
    parser.add_argument("--events", type=int, default=events, help=f"{what} (default {events})")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
