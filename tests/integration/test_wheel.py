"""The image's Python layer, built the way the Dockerfile builds it, without Docker.

The Dockerfile runs ``pip wheel --no-deps .`` and installs the wheel into a fresh venv; this test does the same
(into a venv whose dependencies are the test venv's own, so nothing is downloaded but the build backend), then
runs the installed ``spyglass`` from outside the checkout: the CLI starts, its commands are there, and
``grafana provision`` finds the dashboards and provisioning files the wheel carries.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only Spyglass's wheel installed (dependencies seen through a .pth); its directory."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PIP_CONSTRAINT": str(ROOT / "constraints.txt"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "wheels"), str(ROOT)],
                   check=True, capture_output=True, env=env, timeout=300)
    wheels = list((tmp / "wheels").glob("spyglass-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # the dependencies: the test venv's site-packages as a plain path (its .pth files, among them the editable
    # install of the checkout, are not processed from there)
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    str(wheels[0])], check=True, capture_output=True, env=env, timeout=300)
    return venv


def _run(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SPYGLASS_")}
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_installed_cli_starts_outside_the_checkout(installed: Path, tmp_path: Path):
    done = _run(installed, str(installed / "bin" / "spyglass"), "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for command in ("worker", "simulate", "topics", "db", "grafana"):
        assert command in done.stdout
    done = _run(installed, str(installed / "bin" / "spyglass"), "worker", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "--no-migrate" in done.stdout, done.stderr


def test_grafana_provision_finds_the_dashboards_the_wheel_carries(installed: Path, tmp_path: Path):
    probe = ("import json, streams; from streams.cli import grafana as g; "
             "print(json.dumps({'streams': streams.__file__, 'dir': str(g.GRAFANA_DIR), "
             "'uids': sorted(d['uid'] for d in g.load_dashboards(g.GRAFANA_DIR)), "
             "'datasource': (g.GRAFANA_DIR / 'provisioning/datasources/clickhouse.yaml').is_file(), "
             "'rules': sorted(p.name for p in (g.GRAFANA_DIR / 'provisioning/alerting').glob('*.yaml'))}))")
    done = _run(installed, str(installed / "bin" / "python"), "-c", probe, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["streams"]).is_relative_to(installed)  # the wheel's code, not the checkout's
    assert Path(found["dir"]).is_relative_to(installed) and found["dir"].endswith("streams/_grafana")
    committed = sorted(json.loads(p.read_text())["uid"] for p in (ROOT / "grafana/dashboards").glob("*.json"))
    assert found["uids"] == committed and len(committed) >= 6
    assert found["datasource"]
    assert found["rules"] == sorted(p.name for p in (ROOT / "grafana/provisioning/alerting").glob("*.yaml"))
