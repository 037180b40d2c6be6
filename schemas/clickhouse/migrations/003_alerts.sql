-- One row per alert: the alert contract (detectors/alerts.py), mapped by schemas/rows.py:alert_columns.
-- Alert ids are deterministic, so a retried insert collapses (FINAL / argMax at read time).
-- feature_baselines holds NaN where a feature has no baseline.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id          String,
    tenant            String,
    detector          String,
    kind              String,
    entity_type       String,
    entity            String,
    severity          String,
    score             Float32,
    first_seen        DateTime,
    last_seen         DateTime,
    title             String,
    explanation       String {codec_text},
    evidence          String {codec_text},
    feature_names     Array(String),
    feature_values    Array(Float64),
    feature_baselines Array(Float64),
    event_ids         Array(String) {codec_text},
    tags              Array(String),
    source_topic      String,
    source_partition  UInt16,
    source_offset     UInt64,
    created_at        DateTime
)
ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMMDD(first_seen)
ORDER BY (tenant, alert_id)
