-- Owner epochs of the topic partitions (streams/fencing.py): a worker taking a partition on claims the next
-- epoch (the highest so far plus one) and holds it while the claim with the highest (epoch, claim_id) is
-- its own. Each worker checks its claims before it writes for a partition, and stops writing for one
-- another worker claimed since (a worker paused past its session timeout, say). A checkpoint records the
-- epoch it was written under; a restore takes the highest epoch first, so a late checkpoint of an older
-- owner never shadows the newer owner's.
CREATE TABLE IF NOT EXISTS {db}.partition_owners
(
    group_id   String,
    topic      String,
    partition  UInt16,
    epoch      UInt64,
    claim_id   String,
    worker     String,
    claimed_at DateTime
)
ENGINE = MergeTree
ORDER BY (group_id, topic, partition, epoch);
ALTER TABLE {db}.engine_checkpoints ADD COLUMN IF NOT EXISTS epoch UInt64 DEFAULT 0
