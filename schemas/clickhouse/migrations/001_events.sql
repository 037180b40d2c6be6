-- Audit trail of every decoded event (contract v1), one row per event.
-- Valid on ClickHouse 18.16 (Debian) and on current ClickHouse (chDB): DateTime plus a
-- millisecond column instead of DateTime64, which 18.16 lacks, so queries are the same on both.
-- ReplacingMergeTree keyed by event_id: a re-delivered event collapses into one row
-- (FINAL or argMax at read time; merges do it eventually).
-- {codec_*} are compression codecs on servers that have them, nothing on 18.16.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id    String,
    kind        String,
    ts          DateTime {codec_time},
    ts_ms       UInt16,
    tenant      String,
    source      String,
    entity      String,
    principal   String,
    payload     String {codec_text},
    ingested_at DateTime {codec_time}
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMMDD(ts)
ORDER BY (tenant, kind, entity, event_id)
