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
