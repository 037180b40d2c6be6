-- The highest detector score an event got (0 = no detector fired on it), written by the worker.
-- `IF NOT EXISTS` is dropped on servers without it (18.16); the runner then checks system.columns.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS score Float32 DEFAULT 0
