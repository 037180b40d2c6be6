-- STAND-IN for the storage migrations of issue 5 (branch `storage`), used only by the panel tests and
-- `spyglass bench panels` while those migrations have not landed: the tables of the storage contract
-- (/work/notes/storage-contract.md) with the column names the dashboards read. Created only where missing.
-- Valid on ClickHouse 18.16 and current ClickHouse. Deleted when the real migrations are merged.
CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id String, tenant String, detector String, kind String, entity_type String, entity String,
    severity String, score Float32, first_seen DateTime, last_seen DateTime, title String, explanation String,
    evidence String, feature_names Array(String), feature_values Array(Float64), feature_baselines Array(Float64),
    event_ids Array(String), tags Array(String), source_topic String, source_partition UInt16,
    source_offset UInt64, created_at DateTime
)
ENGINE = ReplacingMergeTree(created_at) PARTITION BY toYYYYMMDD(first_seen) ORDER BY (tenant, alert_id);
CREATE TABLE IF NOT EXISTS {db}.alert_status
(
    alert_id String, tenant String, status String, updated_at DateTime, updated_by String, note String
)
ENGINE = ReplacingMergeTree(updated_at) ORDER BY (tenant, alert_id);
CREATE TABLE IF NOT EXISTS {db}.pipeline_health
(
    ts DateTime, worker String, topic String, partition Int32, events UInt64, dead_letters UInt64, alerts UInt64,
    lag Int64, batch_latency_ms Float32, checkpoint_age_s Float32
)
ENGINE = MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (worker, topic, partition, ts);
CREATE TABLE IF NOT EXISTS {db}.engine_checkpoints
(
    group_id String, topic String, partition UInt16, offset UInt64, state String, digest String,
    entities UInt32, bytes UInt64, worker String, written_at DateTime
)
ENGINE = ReplacingMergeTree(offset) ORDER BY (group_id, topic, partition);
CREATE TABLE IF NOT EXISTS {db}.events_minute
(
    minute DateTime, tenant String, kind String, entity String, events UInt64, failures UInt64, rows UInt64,
    bytes UInt64, tokens UInt64
)
ENGINE = SummingMergeTree PARTITION BY toYYYYMMDD(minute) ORDER BY (tenant, kind, entity, minute);
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_minute_mv TO {db}.events_minute AS
SELECT toStartOfMinute(ts) AS minute, tenant, kind, entity, count() AS events,
       countIf(multiIf(kind = 'api_usage', visitParamExtractString(payload, 'auth_result') != 'ok',
                       kind = 'data_access', visitParamExtractBool(payload, 'granted') = 0,
                       visitParamExtractString(payload, 'outcome') != 'success')) AS failures,
       sum(visitParamExtractUInt(payload, 'rows')) AS rows, sum(visitParamExtractUInt(payload, 'bytes')) AS bytes,
       sum(visitParamExtractUInt(payload, 'tokens_in') + visitParamExtractUInt(payload, 'tokens_out')) AS tokens
FROM {db}.events
GROUP BY minute, tenant, kind, entity;
CREATE TABLE IF NOT EXISTS {db}.entity_risk_minute
(
    minute DateTime, tenant String, entity_type String, entity String, risk Float64, alerts UInt64,
    max_severity UInt8
)
ENGINE = MergeTree PARTITION BY toYYYYMMDD(minute) ORDER BY (tenant, entity_type, entity, minute);
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.entity_risk_minute_mv TO {db}.entity_risk_minute AS
SELECT toStartOfMinute(first_seen) AS minute, tenant, entity_type, entity, sum(score) AS risk, count() AS alerts,
       toUInt8(max(indexOf(['info', 'low', 'medium', 'high', 'critical'], severity)) - 1) AS max_severity
FROM {db}.alerts
GROUP BY minute, tenant, entity_type, entity
