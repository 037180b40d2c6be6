"""Spyglass dashboards and Grafana alert rules as code (grafana-foundation-sdk), written as JSON/YAML for provisioning.

Regenerate after a change: ``python -m grafana.dashboards_src`` (or ``make dashboards``); a unit test
fails while the committed files differ from what this code generates.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from .dashboards import BOARDS
from .kit import Board, PanelSpec, expand

__all__ = ["Board", "PanelSpec", "boards", "dashboard_json", "expand", "render", "write", "DASHBOARD_DIR"]

GRAFANA_DIR = Path(__file__).resolve().parents[1]
DASHBOARD_DIR = GRAFANA_DIR / "dashboards"


def boards() -> list[Board]:
    """Every dashboard, freshly built."""
    return [make() for make in BOARDS]


def dashboard_json(board: Board) -> str:
    """The dashboard as the stable JSON text committed in grafana/dashboards/ (sorted keys, 2-space indent)."""
    model = json.loads(json.dumps(board.builder.build(), cls=JSONEncoder))
    return json.dumps(model, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render() -> dict[str, str]:
    """Relative path under grafana/ -> file text, for every generated file."""
    from .alerting import alerting_yaml

    out = {f"dashboards/{b.uid.removeprefix('spyglass-')}.json": dashboard_json(b) for b in boards()}
    out["provisioning/alerting/spyglass.yaml"] = alerting_yaml()
    return out


def write(root: Path = GRAFANA_DIR) -> list[Path]:
    """Write every generated file under ``root``; returns the paths written."""
    written = []
    for rel, text in render().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
