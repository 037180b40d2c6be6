-- What became of an alert after the engine raised it (docs/analysts.md):
-- mode          'enforce' (published and routed), or 'shadow' (its detector runs in shadow mode for the
--               tenant: stored only, never published or routed; detector configuration as code);
-- suppressed_by the id of the suppression rule that matched it ('' when none): stored only, never
--               published or routed.
-- Rows stored before this migration, and writers that leave the columns out, were enforced and not
-- suppressed.
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS mode String DEFAULT 'enforce';
ALTER TABLE {db}.alerts ADD COLUMN IF NOT EXISTS suppressed_by String DEFAULT ''
