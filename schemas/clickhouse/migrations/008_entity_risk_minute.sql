-- Per-minute risk per tenant, entity type and entity, kept by a materialized view on inserts into
-- alerts (bucketed by first_seen). SummingMergeTree: read with sum(alerts), sum(score_sum),
-- maxMerge(score_max), maxMerge(severity_max) (0 info, 1 low, 2 medium, 3 high, 4 critical)
-- and groupUniqArrayMerge(detectors).
CREATE TABLE IF NOT EXISTS {db}.entity_risk_minute
(
    minute       DateTime {codec_time},
    tenant       String,
    entity_type  String,
    entity       String,
    alerts       UInt64,
    critical     UInt64,
    high         UInt64,
    score_sum    Float64,
    score_max    AggregateFunction(max, Float32),
    severity_max AggregateFunction(max, UInt8),
    detectors    AggregateFunction(groupUniqArray, String)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (tenant, minute, entity_type, entity);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.entity_risk_minute_mv TO {db}.entity_risk_minute AS
SELECT
    toStartOfMinute(first_seen) AS minute,
    tenant,
    entity_type,
    entity,
    count() AS alerts,
    countIf(severity = 'critical') AS critical,
    countIf(severity = 'high') AS high,
    sum(toFloat64(score)) AS score_sum,
    maxState(score) AS score_max,
    maxState(toUInt8(indexOf(['info', 'low', 'medium', 'high', 'critical'], severity) - 1)) AS severity_max,
    groupUniqArrayState(detector) AS detectors
FROM {db}.alerts
GROUP BY minute, tenant, entity_type, entity
