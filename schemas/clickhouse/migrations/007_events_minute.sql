-- Per-minute aggregates per tenant, kind, entity and principal, kept by a materialized view on
-- inserts into events, so dashboards never scan raw events for their time series.
-- SummingMergeTree: the numeric columns are summed and the AggregateFunction columns merged
-- when parts merge; read them with sum(...), maxMerge(score_max) and
-- quantilesMerge(0.5, 0.9, 0.99)(score_quantiles) GROUP BY whatever you need.
-- Counters by kind: auth_failures (api_usage, auth_result != 'ok'); denied, sensitive
-- (confidential/restricted), cross_department (principal and dataset owner departments differ):
-- data_access; privileged (privilege 'admin'), bypassed (approval 'bypassed'), untrusted
-- (untrusted_input), agent_failures (outcome != 'success'): agent_execution.
-- Counts are per insert: a re-delivered event counted again is a known limit (events itself dedupes).
CREATE TABLE IF NOT EXISTS {db}.events_minute
(
    minute           DateTime {codec_time},
    tenant           String,
    kind             String,
    entity           String,
    principal        String,
    events           UInt64,
    scored           UInt64,
    auth_failures    UInt64,
    denied           UInt64,
    sensitive        UInt64,
    cross_department UInt64,
    privileged       UInt64,
    bypassed         UInt64,
    untrusted        UInt64,
    agent_failures   UInt64,
    rows             UInt64,
    bytes            UInt64,
    request_bytes    UInt64,
    response_bytes   UInt64,
    tokens_in        UInt64,
    tokens_out       UInt64,
    score_sum        Float64,
    score_max        AggregateFunction(max, Float32),
    score_quantiles  AggregateFunction(quantiles(0.5, 0.9, 0.99), Float32)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (tenant, kind, minute, entity, principal);

-- visitParamExtract* needs no space after the colon, so `"k": v` is first made `"k":v`.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_minute_mv TO {db}.events_minute AS
WITH replaceAll(payload, '": ', '":') AS p
SELECT
    toStartOfMinute(ts) AS minute,
    tenant,
    kind,
    entity,
    principal,
    count() AS events,
    countIf(score > 0) AS scored,
    countIf(kind = 'api_usage' AND visitParamExtractString(p, 'auth_result') != 'ok') AS auth_failures,
    countIf(kind = 'data_access' AND visitParamExtractBool(p, 'granted') = 0) AS denied,
    countIf(kind = 'data_access'
            AND visitParamExtractString(p, 'sensitivity') IN ('confidential', 'restricted')) AS sensitive,
    countIf(kind = 'data_access'
            AND visitParamExtractString(p, 'principal_department')
                != visitParamExtractString(p, 'dataset_owner_department')) AS cross_department,
    countIf(kind = 'agent_execution' AND visitParamExtractString(p, 'privilege') = 'admin') AS privileged,
    countIf(kind = 'agent_execution' AND visitParamExtractString(p, 'approval') = 'bypassed') AS bypassed,
    countIf(kind = 'agent_execution' AND visitParamExtractBool(p, 'untrusted_input') = 1) AS untrusted,
    countIf(kind = 'agent_execution' AND visitParamExtractString(p, 'outcome') != 'success') AS agent_failures,
    sum(visitParamExtractUInt(p, 'rows')) AS rows,
    sum(visitParamExtractUInt(p, 'bytes')) AS bytes,
    sum(visitParamExtractUInt(p, 'request_bytes')) AS request_bytes,
    sum(visitParamExtractUInt(p, 'response_bytes')) AS response_bytes,
    sum(visitParamExtractUInt(p, 'tokens_in')) AS tokens_in,
    sum(visitParamExtractUInt(p, 'tokens_out')) AS tokens_out,
    sum(toFloat64(score)) AS score_sum,
    maxState(score) AS score_max,
    quantilesState(0.5, 0.9, 0.99)(score) AS score_quantiles
FROM {db}.events
GROUP BY minute, tenant, kind, entity, principal
