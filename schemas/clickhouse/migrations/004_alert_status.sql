-- Analyst triage state of an alert: latest row wins (FINAL / argMax(status, updated_at)); no row = 'open'.
-- status is one of 'open', 'acknowledged', 'resolved', 'false_positive' (`spyglass alerts set-status`).
CREATE TABLE IF NOT EXISTS {db}.alert_status
(
    alert_id   String,
    tenant     String,
    status     String,
    updated_at DateTime,
    updated_by String,
    note       String
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (tenant, alert_id)
