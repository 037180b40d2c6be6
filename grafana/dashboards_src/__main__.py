"""``python -m grafana.dashboards_src``: regenerate grafana/dashboards/*.json and the alert-rule provisioning."""

from __future__ import annotations

from . import write

if __name__ == "__main__":
    for path in write():
        print(path)
