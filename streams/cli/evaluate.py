"""``spyglass eval ...``: measured detection quality (scenarios, NAB, ADBench)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streams.settings import Settings

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _nab(args: argparse.Namespace, settings: Settings) -> int:
    from detectors.evaluation.nab import run

    return run(args)


def _adbench(args: argparse.Namespace, settings: Settings) -> int:
    from detectors.evaluation.adbench import run

    return run(args)


def _scenarios(args: argparse.Namespace, settings: Settings) -> int:
    from detectors.evaluation.scenarios import run

    return run(args)


def register(subparsers: Any) -> None:
    ev = subparsers.add_parser(
        "eval", help="measure detection quality: simulator scenarios, generated worlds, NAB, ADBench",
        description="Run the engine's detectors over labelled data and score them with the published rules.",
    )
    sub = ev.add_subparsers(dest="eval_command", required=True, metavar="SUITE")

    s = sub.add_parser("scenarios", help="per-scenario detection and false alerts on a labelled simulator run",
                       description="Replay events through the engine and match alerts to the labels: detected on "
                       "the right entity, time to detect (event time), false alerts per 100k benign events.")
    s.add_argument("--events", required=True, help="events JSONL (from spyglass simulate), or - for stdin")
    s.add_argument("--labels", required=True, help="labels JSONL (from spyglass simulate --labels), or - for stdin")
    s.add_argument("--alerts", help="also write the alerts JSONL here (- for stdout)")
    s.set_defaults(func=_scenarios)

    n = sub.add_parser("nab", help="the engine's univariate detector over the Numenta Anomaly Benchmark",
                       description="Write NAB-format results (<out>/<detector>/<category>/<detector>_<file>.csv) "
                       "and score them with NAB's rules for the standard, reward_low_FP and reward_low_FN profiles.")
    n.add_argument("--data", type=Path, default=SHARED / "nab", help="NAB folder with data/ and labels/")
    n.add_argument("--out", type=Path, default=Path(".stack/nab-results"), help="results folder")
    n.add_argument("--split", action="store_true", help="also score the files at even and at odd positions apart "
                   "(each half with its own threshold): tune on even, check on odd")
    n.set_defaults(func=_nab)

    a = sub.add_parser("adbench", help="the engine's multivariate model over ADBench http, smtp, shuttle",
                       description="One pass in file order, score each row before learning it, one configuration "
                       "for all data sets; prints ROC-AUC and average precision.")
    a.add_argument("--data", type=Path, default=SHARED / "adbench", help="folder with the .npz files")
    a.add_argument("--only", action="append", choices=("http", "smtp", "shuttle"), help="just this data set")
    a.set_defaults(func=_adbench)

    from streams.cli.worlds import register as register_worlds

    register_worlds(sub)
