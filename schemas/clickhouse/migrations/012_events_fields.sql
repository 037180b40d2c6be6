-- The contract fields the dashboards show, as the worker decoded them (schemas.rows.event_fields), so a
-- panel reads a column instead of re-parsing payload. Re-parsing was not only slow: visitParamExtract*
-- takes the first `"name":` anywhere in the text, so an unknown nested object of the emitter's
-- ({"extra": {"client_ip": "..."}, "client_ip": "..."}) decided what the analyst saw, while the
-- detectors used the real field. ClickHouse 18.16 has no JSONExtract (top-level reads) to do better.
-- '' (an empty array for scopes_granted) where the event's kind has no such field or it was absent.
-- A writer that leaves them out (a worker of an older release during an upgrade, a hand-written
-- INSERT) and the rows stored before this migration get them from the DEFAULT expressions, which
-- read payload the old way (first match, spaces after colons tolerated as in migration 010).
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS client_ip String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'client_ip');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS auth_result String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'auth_result');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS user_agent String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'user_agent');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS scope_used String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'scope_used');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS dataset String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'dataset');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS principal_department String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'principal_department');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS dataset_owner_department String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'dataset_owner_department');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS sensitivity String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'sensitivity');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS operation String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'operation');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS purpose String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'purpose');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS agent_type String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'agent_type');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS session_id String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'session_id');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS action String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'action');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS target_system String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'target_system');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS privilege String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'privilege');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS approval String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'approval');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS triggered_by String
    DEFAULT visitParamExtractString(replaceAll(payload, '": ', '":'), 'triggered_by');
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS scopes_granted Array(String)
    DEFAULT extractAll(visitParamExtractRaw(replaceAll(payload, '": ', '":'), 'scopes_granted'), '"([^"]+)"')
