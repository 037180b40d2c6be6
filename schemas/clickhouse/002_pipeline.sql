-- Tables the worker writes besides the events (see the storage contract in the README).
-- Valid on ClickHouse 18.16 (Debian) and on current ClickHouse (chDB).

-- One row per alert (the alert contract). A re-delivered alert (same deterministic alert_id)
-- collapses into one row: read with FINAL or argMax.
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
    explanation       String,
    evidence          String,
    feature_names     Array(String),
    feature_values    Array(Float64),
    feature_baselines Array(Float64),
    event_ids         Array(String),
    tags              Array(String),
    source_topic      String,
    source_partition  UInt16,
    source_offset     UInt64,
    created_at        DateTime
)
ENGINE = ReplacingMergeTree(created_at)
PARTITION BY toYYYYMMDD(first_seen)
ORDER BY (tenant, alert_id);

-- The engine's per-partition state with the offset it reflects, shared by every worker.
CREATE TABLE IF NOT EXISTS {db}.engine_checkpoints
(
    group_id   String,
    topic      String,
    partition  UInt16,
    offset     UInt64,
    state      String,
    digest     String,
    entities   UInt32,
    bytes      UInt64,
    worker     String,
    written_at DateTime
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY (group_id, topic, partition);

-- One row per worker, topic partition and flushed batch.
CREATE TABLE IF NOT EXISTS {db}.pipeline_health
(
    ts               DateTime,
    worker           String,
    topic            String,
    partition        Int32,
    events           UInt64,
    dead_letters     UInt64,
    alerts           UInt64,
    lag              Int64,
    batch_latency_ms Float32,
    checkpoint_age_s Float32
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (worker, topic, partition, ts)
