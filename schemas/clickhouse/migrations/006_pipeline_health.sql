-- One row per worker per batch flush (every few seconds): throughput, lag, latency, checkpoint age.
CREATE TABLE IF NOT EXISTS {db}.pipeline_health
(
    ts               DateTime {codec_time},
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
