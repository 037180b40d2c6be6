"""``spyglass eval adbench``: the engine's multivariate online model over ADBench http, smtp and shuttle.

Protocol (the one the reference numbers were measured with): one pass over each data set in file
order, every row scored before it is learned, one configuration for all three data sets; labels
are used only for ROC-AUC and average precision. The reference River pipeline
``MinMaxScaler | HalfSpaceTrees(seed=42)`` runs in the same command for comparison.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from detectors.evaluation.metrics import average_precision, roc_auc
from detectors.models.multivariate import Loda

# name -> (file, ROC-AUC target set by the product owner)
DATASETS: dict[str, tuple[str, float]] = {
    "http": ("16_http.npz", 0.99),
    "smtp": ("34_smtp.npz", 0.90),
    "shuttle": ("32_shuttle.npz", 0.98),
}

# Rows of each data set the River baseline (pure Python, slow per row) runs over; None: every row. Set a
# count here to cap it on slower machines (the table then says "first N rows").
BASELINE_MAX_ROWS: int | None = None


def default_model() -> Loda:
    """The one configuration used for every data set (the model's defaults)."""
    return Loda()


@dataclass(frozen=True)
class Result:
    """One data set's numbers."""

    name: str
    rows: int
    anomalies: int
    auc: float
    ap: float
    seconds: float
    baseline_auc: float | None
    baseline_rows: int
    baseline_seconds: float
    target: float


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (float64) and ``y`` (0/1) of one ADBench ``.npz`` file, in file order."""
    with np.load(path, allow_pickle=False) as d:
        return np.asarray(d["X"], dtype=np.float64), np.asarray(d["y"]).astype(np.int8)


def run_model(X: np.ndarray) -> np.ndarray:
    """Single pass, score-then-learn, with the default configuration."""
    return default_model().score_learn_many(X)


def run_baseline(X: np.ndarray) -> np.ndarray:
    """River's MinMaxScaler | HalfSpaceTrees(seed=42), river defaults otherwise; score then learn per row."""
    from river import anomaly, compose, preprocessing

    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
    names = [f"x{j}" for j in range(X.shape[1])]
    out = np.empty(X.shape[0])
    for i, row in enumerate(X.tolist()):
        x = dict(zip(names, row, strict=True))
        out[i] = model.score_one(x)
        model.learn_one(x)
    return out


def baseline_auc(path: Path) -> tuple[float | None, int, float]:
    """Baseline ROC-AUC over the data set (or its first BASELINE_MAX_ROWS rows), rows used, seconds."""
    X, y = load(path)
    rows = X.shape[0] if BASELINE_MAX_ROWS is None else min(X.shape[0], BASELINE_MAX_ROWS)
    t0 = time.perf_counter()
    s = run_baseline(X[:rows])
    seconds = time.perf_counter() - t0
    yb = y[:rows]
    auc = roc_auc(yb, s) if 0 < int(yb.sum()) < rows else None
    return auc, rows, seconds


def evaluate(name: str, path: Path) -> tuple[int, int, float, float, float]:
    """The model over one data set: rows, anomalies, ROC-AUC, AP, seconds."""
    X, y = load(path)
    t0 = time.perf_counter()
    s = run_model(X)
    seconds = time.perf_counter() - t0
    return X.shape[0], int(y.sum()), roc_auc(y, s), average_precision(y, s), seconds


def table(results: list[Result]) -> Table:
    """The rich results table."""
    t = Table(title="ADBench, single pass, score before learn, one configuration")
    for col in ("dataset", "rows", "anomalies", "ROC-AUC", "AP", "baseline ROC-AUC", "target", "met?"):
        t.add_column(col, justify="left" if col == "dataset" else "right", no_wrap=True)
    for r in results:
        if r.baseline_auc is None:
            base = "n/a"
        else:
            base = f"{r.baseline_auc:.3f}"
            if r.baseline_rows < r.rows:
                base += f" (first {r.baseline_rows:,} rows)"
        met = "[green]yes[/]" if r.auc >= r.target else "[red]no[/]"
        t.add_row(r.name, f"{r.rows:,}", f"{r.anomalies:,}", f"{r.auc:.4f}", f"{r.ap:.4f}", base,
                  f"≥ {r.target:.2f}", met)
    return t


def run(args: argparse.Namespace) -> int:
    """Entry point of ``spyglass eval adbench``; 0 on success, 2 if the data are missing."""
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=120)
    data = Path(args.data)
    names = list(dict.fromkeys(args.only)) if getattr(args, "only", None) else list(DATASETS)
    missing = [DATASETS[n][0] for n in names if not (data / DATASETS[n][0]).is_file()]
    if not data.is_dir() or missing:
        what = f"folder {data} not found" if not data.is_dir() else f"missing in {data}: {', '.join(missing)}"
        console.print(f"[red]ADBench data unavailable[/]: {what}. Pass --data with the folder holding "
                      f"{', '.join(DATASETS[n][0] for n in names)} (see shared/datasets/README.md).")
        return 2
    console.print(f"model: {default_model()!r}")
    cap = "full pass" if BASELINE_MAX_ROWS is None else f"first {BASELINE_MAX_ROWS:,} rows at most"
    console.print(f"baseline: river MinMaxScaler | HalfSpaceTrees(seed=42), river defaults, {cap}")
    # The River baselines are pure Python and dominate the wall time: run them in worker processes
    # (largest first) while this process runs the model.
    workers = max(1, min(2, os.cpu_count() or 1, len(names)))
    order = sorted(names, key=lambda n: -(data / DATASETS[n][0]).stat().st_size)
    results = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {n: pool.submit(baseline_auc, data / DATASETS[n][0]) for n in order}
        with console.status("running the model and the River baseline…"):
            for n in names:
                rows, anomalies, auc, ap, seconds = evaluate(n, data / DATASETS[n][0])
                b_auc, b_rows, b_seconds = futures[n].result()
                results.append(Result(n, rows, anomalies, auc, ap, seconds, b_auc, b_rows, b_seconds,
                                      DATASETS[n][1]))
    console.print(table(results))
    console.print("seconds, model / baseline: " + ", ".join(
        f"{r.name} {r.seconds:.1f} / {r.baseline_seconds:.1f}" for r in results))
    for r in results:
        if r.baseline_rows < r.rows:
            console.print(f"note: the {r.name} baseline scored only the first {r.baseline_rows:,} of {r.rows:,} rows "
                          f"(River's per-row cost); its ROC-AUC is over those rows.")
    return 0
