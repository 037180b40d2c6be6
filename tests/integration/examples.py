"""The example producers under ``docs/examples``, built and run as a service would run them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GO_EXAMPLE = ROOT / "docs" / "examples" / "go-producer"
PYTHON_EXAMPLE = ROOT / "docs" / "examples" / "python_emitter.py"


def build_go_example(settings: Settings) -> Path:
    """``go build`` the Go example into the cache (``~/.cache/spyglass/examples``); incremental after the first."""
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    assert go is not None, "the Go toolchain is missing: the Go example producer cannot be built"
    out = settings.cache_dir / "examples" / "go-producer"
    out.parent.mkdir(parents=True, exist_ok=True)
    r = subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_EXAMPLE, capture_output=True, text=True,  # noqa: S603
                       timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def example_env(settings: Settings) -> dict[str, str]:
    """The environment of an example run: no inherited ``SPYGLASS_*``, the given settings instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPYGLASS_")}
    env.update(settings.child_env())
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_python_example(settings: Settings) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PYTHON_EXAMPLE)], env=example_env(settings),  # noqa: S603
                          capture_output=True, text=True, timeout=120, check=False)
