"""Grafana as code: the dashboard and alert-rule builder (``grafana.dashboards_src``) and its output."""
