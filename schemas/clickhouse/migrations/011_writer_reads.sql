-- requires: rbac
-- The worker's reads that 009 did not grant. On a partition's assignment it looks up the alerts an
-- earlier owner raised from the records it is about to re-score, and after a failed insert it looks
-- up which events of the batch landed (streams/scoring.py). Column grants: the ids it checks, not
-- the payloads or the alert texts.
GRANT SELECT(tenant, kind, entity, event_id, ts) ON {db}.events TO spyglass_writer;
GRANT SELECT(alert_id, source_topic, source_partition, source_offset) ON {db}.alerts TO spyglass_writer
