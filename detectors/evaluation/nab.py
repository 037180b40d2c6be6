"""``spyglass eval nab``: the univariate detector over the Numenta Anomaly Benchmark, scored with NAB's rules.

The scorer reproduces NAB v1.x (``nab/sweeper.py``, ``nab/runner.py``), re-implemented here from the published code:

* probationary period: ``min(floor(0.15 * rows), 0.15 * 5000)`` rows (``Sweeper._getProbationaryLength``); rows in it
  are not scored at all;
* windows are mapped to rows by timestamp; a row inside window ``w`` (``width`` rows, right edge ``right``) is worth
  ``scaled_sigmoid(-(right - i + 1) / width) / scaled_sigmoid(-1) * tpWeight`` (``calcSweepScore``: a detection on the
  first row of a window earns exactly ``tpWeight``), and only the best (= earliest) detected row of a window counts;
* a row outside every window is a false positive worth ``scaled_sigmoid(|i - prev_right| / (prev_width - 1)) *
  fpWeight`` relative to the closest preceding window, or ``-fpWeight`` before the first window: an FP just after a
  window costs almost nothing, one far from any window costs the full ``fpWeight``;
* a window with no detection costs ``-fnWeight``;
* one threshold per profile for the whole corpus, found by sweeping every distinct score (``calcScoreByThreshold``:
  rows with ``score >= threshold`` are detections; the start threshold 1.1 detects nothing);
* normalization (``Runner.normalize``): ``100 * (raw - null) / (perfect - null)``, where ``null`` is the optimized
  score of the null detector (constant scores, i.e. ``-fnWeight`` per scorable window) and ``perfect`` is
  ``tpWeight`` times the number of windows in the label file.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

DETECTOR = "spyglass"
PROBATION_PERCENT = 0.15

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fpWeight": 0.22, "fnWeight": 1.0},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 2.0},
}

# Published NAB scoreboard (normalized: standard, reward_low_FP, reward_low_FN), from the data README.
SCOREBOARD: list[tuple[str, tuple[float, float, float]]] = [
    ("ARTime", (74.9, 65.1, 80.4)),
    ("Numenta HTM", (70.5, 62.6, 75.2)),
    ("CAD OSE", (69.9, 67.0, 73.2)),
    ("KNN CAD", (58.0, 43.4, 64.8)),
    ("Random Cut Forest", (51.7, 38.4, 59.7)),
    ("Windowed Gaussian", (39.6, 20.9, 47.4)),
    ("Random", (11.0, 1.2, 19.5)),
]


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's ``scaledSigmoid``: ``2 / (1 + exp(5x)) - 1``, and exactly -1 from ``x >= 3`` on."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(x, 3.0))) - 1.0)


def probationary_length(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows NAB leaves unscored at the start of a file: ``min(floor(percent * rows), percent * 5000)``."""
    return int(min(math.floor(percent * rows), percent * 5000))


@dataclass
class LabelledFile:
    """One data file: its rows' timestamps and its windows as inclusive row ranges."""

    key: str
    timestamps: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Number of rows."""
        return int(self.timestamps.shape[0])

    def labels(self) -> np.ndarray:
        """1 for rows inside a window, else 0 (NAB's ``label`` column)."""
        out = np.zeros(self.rows, dtype=np.int8)
        for a, b in self.windows:
            out[a : b + 1] = 1
        return out


def windows_to_rows(timestamps: np.ndarray, limits: list[list[str]]) -> list[tuple[int, int]]:
    """Map ``[start, end]`` timestamp windows to inclusive row ranges (rows with ``start <= t <= end``)."""
    out = []
    for start, end in limits:
        a = int(np.searchsorted(timestamps, np.datetime64(start.replace(" ", "T"), "us"), side="left"))
        b = int(np.searchsorted(timestamps, np.datetime64(end.replace(" ", "T"), "us"), side="right")) - 1
        if b >= a:
            out.append((a, b))
    return out


def sweep_scores(rows: int, windows: list[tuple[int, int]], profile: dict[str, float],
                 window_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-row weighted score if detected and window id (``-1`` outside windows, ``-2`` probationary).

    This is ``Sweeper.calcSweepScore``; ``window_offset`` makes window ids unique across a corpus.
    """
    tp, fp = profile["tpWeight"], profile["fpWeight"]
    max_tp = float(scaled_sigmoid(-1.0))
    idx = np.arange(rows, dtype=np.float64)
    sweep = np.full(rows, -fp, dtype=np.float64)  # before the first window: scaled_sigmoid(3.0) * fp
    win = np.full(rows, -1, dtype=np.int64)
    for k, (a, b) in enumerate(windows):
        width = float(b - a + 1)
        pos = -(b - idx[a : b + 1] + 1.0) / width
        sweep[a : b + 1] = scaled_sigmoid(pos) * tp / max_tp
        win[a : b + 1] = window_offset + k
        nxt = windows[k + 1][0] if k + 1 < len(windows) else rows
        if nxt > b + 1:
            # NAB divides by (width - 1); a one-row window would divide by zero there, we treat it as "far".
            past = np.abs(b - idx[b + 1 : nxt]) / (width - 1.0) if width > 1 else np.full(nxt - b - 1, 3.0)
            sweep[b + 1 : nxt] = scaled_sigmoid(past) * fp
    win[: probationary_length(rows)] = -2
    return sweep, win


@njit(cache=True)
def _sweep_thresholds(scores: np.ndarray, sweep: np.ndarray, win: np.ndarray, n_windows: int,
                      fn_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """``Sweeper.calcScoreByThreshold`` over rows sorted by descending score: (thresholds, raw scores)."""
    order = np.argsort(-scores, kind="mergesort")
    part = np.full(n_windows, -fn_weight)
    present = np.zeros(n_windows, dtype=np.bool_)
    for k in range(win.shape[0]):
        if win[k] >= 0:
            present[win[k]] = True
    total = 0.0
    for w in range(n_windows):
        if present[w]:
            total -= fn_weight
    thr = np.empty(scores.shape[0] + 1)
    val = np.empty(scores.shape[0] + 1)
    cur = 1.1
    m = 0
    for k in range(order.shape[0]):
        i = order[k]
        if scores[i] != cur:
            thr[m] = cur
            val[m] = total
            m += 1
            cur = scores[i]
        w = win[i]
        if w < 0:
            total += sweep[i]
        elif sweep[i] > part[w]:
            total += sweep[i] - part[w]
            part[w] = sweep[i]
    thr[m] = cur
    val[m] = total
    return thr[: m + 1], val[: m + 1]


@dataclass
class ProfileResult:
    """One profile's optimized threshold and scores."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    tp: int
    fp: int
    fn: int
    per_file: dict[str, float]

    @property
    def normalized(self) -> float:
        """``100 * (raw - null) / (perfect - null)``."""
        return 100.0 * (self.raw - self.null) / (self.perfect - self.null)


def score_corpus(files: list[LabelledFile], scores: dict[str, np.ndarray], profile_name: str,
                 total_windows: int | None = None) -> ProfileResult:
    """Optimize one threshold for the whole corpus (as NAB's optimizer does) and score every file with it."""
    profile = PROFILES[profile_name]
    all_s, all_w, all_x, owner = [], [], [], []
    offset = 0
    for fi, f in enumerate(files):
        sw, win = sweep_scores(f.rows, f.windows, profile, offset)
        offset += len(f.windows)
        keep = win != -2
        all_s.append(np.asarray(scores[f.key], dtype=np.float64)[keep])
        all_x.append(sw[keep])
        all_w.append(win[keep])
        owner.append(np.full(int(keep.sum()), fi, dtype=np.int64))
    s, x, w, o = (np.concatenate(a) for a in (all_s, all_x, all_w, owner))
    thr, val = _sweep_thresholds(s, x, w, offset, profile["fnWeight"])
    best = int(np.argmax(val))  # first maximum: the highest threshold among ties, as NAB's stable sort picks
    threshold, raw = float(thr[best]), float(val[best])
    # Null detector: constant scores, the optimizer keeps "detect nothing" (or everything if that were better).
    null_thr, null_val = _sweep_thresholds(np.full_like(s, 0.5), x, w, offset, profile["fnWeight"])
    null = float(null_val.max())
    n_windows = offset if total_windows is None else total_windows
    perfect = n_windows * profile["tpWeight"]
    det = s >= threshold
    per_file: dict[str, float] = {}
    tp = fn = 0
    part = np.full(offset, -profile["fnWeight"])
    for k in np.flatnonzero(det & (w >= 0)):
        part[w[k]] = max(part[w[k]], x[k])
    present = np.zeros(offset, dtype=bool)
    present[w[w >= 0]] = True
    start = 0
    for fi, f in enumerate(files):
        sel = o == fi
        fp_sum = float(x[sel & det & (w < 0)].sum())
        ids = np.arange(start, start + len(f.windows))
        ids = ids[present[ids]]
        per_file[f.key] = fp_sum + float(part[ids].sum())
        tp += int((part[ids] > 0).sum())
        fn += int((part[ids] <= 0).sum())
        start += len(f.windows)
    fp = int((det & (w < 0)).sum())
    return ProfileResult(profile_name, threshold, raw, null, perfect, tp, fp, fn, per_file)


def read_csv(path: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Timestamps and values of one NAB data file, as text and as arrays."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        rows = [r for r in reader if r]
    ts_txt = [r[0] for r in rows]
    val_txt = [r[1] for r in rows]
    ts = np.array([t.replace(" ", "T") for t in ts_txt], dtype="datetime64[us]")
    return ts_txt, val_txt, ts, np.array(val_txt, dtype=np.float64)


def load_corpus(data: Path) -> tuple[list[LabelledFile], dict[str, tuple[list[str], list[str], np.ndarray]], int]:
    """Every labelled data file (windows as rows), the raw columns, and the label file's window count."""
    windows = json.loads((data / "labels" / "combined_windows.json").read_text())
    files: list[LabelledFile] = []
    raw: dict[str, tuple[list[str], list[str], np.ndarray]] = {}
    for key in sorted(windows):
        ts_txt, val_txt, ts, values = read_csv(data / "data" / key)
        files.append(LabelledFile(key, ts, windows_to_rows(ts, windows[key])))
        raw[key] = (ts_txt, val_txt, values)
    return files, raw, sum(len(v) for v in windows.values())


def detect(values: np.ndarray, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Scores of one file from a fresh detector told the file's probationary length, as NAB's runner does."""
    from detectors.models.univariate import UnivariateDetector

    det = UnivariateDetector(probationary_period=probationary_length(values.shape[0]))
    return det.score_learn_many(values, timestamps)


def write_results(out: Path, f: LabelledFile, ts_txt: list[str], val_txt: list[str], scores: np.ndarray) -> Path:
    """``<out>/<detector>/<category>/<detector>_<file>.csv`` with ``timestamp,value,anomaly_score,label``."""
    category, name = f.key.split("/", 1)
    path = out / DETECTOR / category / f"{DETECTOR}_{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = f.labels()
    with path.open("w", newline="") as fh:
        fh.write("timestamp,value,anomaly_score,label\n")
        fh.writelines(f"{t},{v},{float(s)!r},{int(lab)}\n" for t, v, s, lab in zip(ts_txt, val_txt, scores, labels,
                                                                                      strict=True))
    return path


def split_check(files: list[LabelledFile], scores: dict[str, np.ndarray]) -> dict[str, dict[str, ProfileResult]]:
    """The three profiles on the files at even and at odd positions (sorted order), each half with its own threshold.

    Parameters are chosen on the even half; the odd half is the check that a gain generalizes.
    """
    halves = {"even": files[0::2], "odd": files[1::2]}
    return {name: {p: score_corpus(part, scores, p) for p in PROFILES} for name, part in halves.items()}


def evaluate(data: Path, out: Path | None = None, split: bool = False) -> dict[str, Any]:
    """Run the detector over the corpus, optionally write NAB results files, and score the three profiles
    (and, with ``split``, the even / odd halves)."""
    files, raw, total_windows = load_corpus(data)
    t0 = time.perf_counter()
    scores = {f.key: detect(raw[f.key][2], f.timestamps) for f in files}
    elapsed = time.perf_counter() - t0
    if out is not None:
        for f in files:
            write_results(out, f, raw[f.key][0], raw[f.key][1], scores[f.key])
    results = {p: score_corpus(files, scores, p, total_windows) for p in PROFILES}
    return {"files": len(files), "rows": sum(f.rows for f in files), "windows": total_windows,
            "detect_seconds": elapsed, "results": results, "split": split_check(files, scores) if split else None}


def run(args: argparse.Namespace) -> int:
    """CLI entry point: ``spyglass eval nab --data DIR --out DIR``."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    data: Path = args.data
    out: Path = args.out
    if not (data / "labels" / "combined_windows.json").is_file() or not (data / "data").is_dir():
        console.print(f"[red]NAB data not found at {data}[/red]: expected data/<category>/<name>.csv and "
                      "labels/combined_windows.json (pass --data)")
        return 2
    ev = evaluate(data, out, split=getattr(args, "split", False))
    res: dict[str, ProfileResult] = ev["results"]
    table = Table(title=f"NAB v1 normalized scores ({ev['files']} files, {ev['rows']:,} rows, {ev['windows']} windows)")
    table.add_column("detector")
    for p in PROFILES:
        table.add_column(p, justify="right")
    table.add_row(f"[bold]{DETECTOR}[/bold]", *(f"[bold]{res[p].normalized:.1f}[/bold]" for p in PROFILES))
    for name, sc in SCOREBOARD:
        table.add_row(name, *(f"{v:.1f}" for v in sc))
    console.print(table)
    for p in PROFILES:
        r = res[p]
        console.print(f"{p}: threshold {r.threshold:.6g}, raw {r.raw:.2f} (null {r.null:.1f}, perfect {r.perfect:.1f})"
                      f", TP windows {r.tp}, FN windows {r.fn}, FP rows {r.fp}")
    if ev["split"] is not None:
        halves = Table(title="split check: files at even / odd positions, each half's own threshold")
        halves.add_column("half")
        for p in PROFILES:
            halves.add_column(p, justify="right")
        for name, part in ev["split"].items():
            halves.add_row(name, *(f"{part[p].normalized:.1f}" for p in PROFILES))
        console.print(halves)
    console.print(f"detection: {ev['detect_seconds']:.1f} s; results in {out / DETECTOR}")
    summary = {
        "detector": DETECTOR,
        "files": ev["files"], "rows": ev["rows"], "windows": ev["windows"],
        "detect_seconds": round(ev["detect_seconds"], 3),
        "profiles": {p: {"normalized": round(r.normalized, 3), "raw": r.raw, "threshold": r.threshold,
                         "null": r.null, "perfect": r.perfect, "tp_windows": r.tp, "fn_windows": r.fn,
                         "fp_rows": r.fp, "per_file_raw": r.per_file} for p, r in res.items()},
        "scoreboard": {name: dict(zip(PROFILES, sc, strict=True)) for name, sc in SCOREBOARD},
    }
    if ev["split"] is not None:
        summary["split"] = {name: {p: round(r.normalized, 3) for p, r in part.items()}
                            for name, part in ev["split"].items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{DETECTOR}_scores.json").write_text(json.dumps(summary, indent=2))
    return 0
