-- requires: rbac
-- The worker claims and checks partition owner epochs (014): it reads and appends, nothing else.
GRANT INSERT, SELECT ON {db}.partition_owners TO spyglass_writer
