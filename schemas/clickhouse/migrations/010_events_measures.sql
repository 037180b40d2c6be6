-- Typed measures of every event, so the per-minute view sums columns instead of parsing each
-- payload's JSON on every insert (that parse was the costliest part of an insert on the server;
-- `spyglass bench store` measures both forms).
-- The worker writes them from the decoded event (schemas.rows.event_columns). A writer that leaves
-- them out (a worker of an older release during an upgrade, a hand-written INSERT) gets them from
-- the DEFAULT expressions, which compute them from payload with the rules the view used before.
-- flags, one bit per counter of events_minute:
--   1 auth failure (api_usage: auth_result != 'ok')
--   2 denied (data_access: not granted)
--   4 sensitive (data_access: confidential or restricted)
--   8 cross-department (data_access: principal and dataset owner departments differ)
--  16 privileged (agent_execution: privilege 'admin')
--  32 bypassed (agent_execution: approval 'bypassed')
--  64 untrusted input (agent_execution)
-- 128 failed (agent_execution: outcome != 'success')
-- Read a bit with bitAnd(flags, 8) != 0. The volume columns are 0 where the kind has no such field.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS flags UInt8 DEFAULT toUInt8(
      (kind = 'api_usage' AND visitParamExtractString(replaceAll(payload, '": ', '":'), 'auth_result') != 'ok')
    + (kind = 'data_access' AND visitParamExtractBool(replaceAll(payload, '": ', '":'), 'granted') = 0) * 2
    + (kind = 'data_access' AND visitParamExtractString(replaceAll(payload, '": ', '":'), 'sensitivity')
                                IN ('confidential', 'restricted')) * 4
    + (kind = 'data_access'
       AND visitParamExtractString(replaceAll(payload, '": ', '":'), 'principal_department')
           != visitParamExtractString(replaceAll(payload, '": ', '":'), 'dataset_owner_department')) * 8
    + (kind = 'agent_execution' AND visitParamExtractString(replaceAll(payload, '": ', '":'), 'privilege') = 'admin') * 16
    + (kind = 'agent_execution' AND visitParamExtractString(replaceAll(payload, '": ', '":'), 'approval') = 'bypassed') * 32
    + (kind = 'agent_execution' AND visitParamExtractBool(replaceAll(payload, '": ', '":'), 'untrusted_input') = 1) * 64
    + (kind = 'agent_execution' AND visitParamExtractString(replaceAll(payload, '": ', '":'), 'outcome') != 'success') * 128);
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS rows UInt64
    DEFAULT visitParamExtractUInt(replaceAll(payload, '": ', '":'), 'rows');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS bytes UInt64
    DEFAULT visitParamExtractUInt(replaceAll(payload, '": ', '":'), 'bytes');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS request_bytes UInt64
    DEFAULT visitParamExtractUInt(replaceAll(payload, '": ', '":'), 'request_bytes');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS response_bytes UInt64
    DEFAULT visitParamExtractUInt(replaceAll(payload, '": ', '":'), 'response_bytes');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS tokens_in UInt64
    DEFAULT visitParamExtractUInt(replaceAll(payload, '": ', '":'), 'tokens_in');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS tokens_out UInt64
    DEFAULT visitParamExtractUInt(replaceAll(payload, '": ', '":'), 'tokens_out');

-- The view, rebuilt on the columns. Inserts that land between the DROP and the CREATE (once, while
-- this migration runs) are not aggregated; events itself keeps them.
DROP TABLE IF EXISTS {db}.events_minute_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_minute_mv TO {db}.events_minute AS
SELECT
    toStartOfMinute(ts) AS minute,
    tenant,
    kind,
    entity,
    principal,
    count() AS events,
    countIf(score > 0) AS scored,
    countIf(bitAnd(flags, 1) != 0) AS auth_failures,
    countIf(bitAnd(flags, 2) != 0) AS denied,
    countIf(bitAnd(flags, 4) != 0) AS sensitive,
    countIf(bitAnd(flags, 8) != 0) AS cross_department,
    countIf(bitAnd(flags, 16) != 0) AS privileged,
    countIf(bitAnd(flags, 32) != 0) AS bypassed,
    countIf(bitAnd(flags, 64) != 0) AS untrusted,
    countIf(bitAnd(flags, 128) != 0) AS agent_failures,
    sum(rows) AS rows,
    sum(bytes) AS bytes,
    sum(request_bytes) AS request_bytes,
    sum(response_bytes) AS response_bytes,
    sum(tokens_in) AS tokens_in,
    sum(tokens_out) AS tokens_out,
    sum(toFloat64(score)) AS score_sum,
    maxState(score) AS score_max,
    quantilesState(0.5, 0.9, 0.99)(score) AS score_quantiles
FROM {db}.events
GROUP BY minute, tenant, kind, entity, principal
