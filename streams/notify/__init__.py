"""Alert delivery: ``spyglass notify`` reads the alerts topic and hands each alert to an on-call router
(Prometheus Alertmanager, :mod:`streams.notify.alertmanager`), keeping it firing until it is resolved."""
