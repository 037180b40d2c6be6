-- Per-partition engine state shared by all workers; read with argMax(..., offset).
-- offset is the next offset the state does NOT yet reflect; digest is the hex HMAC of state.
CREATE TABLE IF NOT EXISTS {db}.engine_checkpoints
(
    group_id   String,
    topic      String,
    partition  UInt16,
    offset     UInt64,
    state      String {codec_text},
    digest     String,
    entities   UInt32,
    bytes      UInt64,
    worker     String,
    written_at DateTime
)
ENGINE = ReplacingMergeTree(offset)
ORDER BY (group_id, topic, partition)
