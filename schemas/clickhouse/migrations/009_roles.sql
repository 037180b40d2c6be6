-- requires: rbac
-- Least privilege on servers with SQL access control (ClickHouse >= 20.4): roles, not users.
-- An administrator creates the users and grants them a role, e.g.
--   CREATE USER worker IDENTIFIED WITH sha256_password BY '...' DEFAULT ROLE spyglass_writer;
--   CREATE USER grafana IDENTIFIED WITH sha256_password BY '...' DEFAULT ROLE spyglass_grafana;
-- spyglass_writer (the worker): INSERT into the tables it writes (and the views' targets, which an
-- insert into events/alerts feeds), SELECT only on engine_checkpoints (its state) and
-- schema_migrations (to check the schema is current). No DDL: migrations run as an administrator.
-- spyglass_grafana (dashboards): SELECT on what analysts see (not the checkpoint blobs), with
-- per-query time and memory limits it cannot raise. Skipped (and not recorded) on 18.16 and chDB.
CREATE ROLE IF NOT EXISTS spyglass_writer;
CREATE ROLE IF NOT EXISTS spyglass_grafana;
GRANT INSERT ON {db}.events TO spyglass_writer;
GRANT INSERT ON {db}.alerts TO spyglass_writer;
GRANT INSERT ON {db}.pipeline_health TO spyglass_writer;
GRANT INSERT, SELECT ON {db}.engine_checkpoints TO spyglass_writer;
GRANT INSERT ON {db}.events_minute TO spyglass_writer;
GRANT INSERT ON {db}.entity_risk_minute TO spyglass_writer;
GRANT SELECT ON {db}.schema_migrations TO spyglass_writer;
GRANT SELECT ON {db}.events TO spyglass_grafana;
GRANT SELECT ON {db}.alerts TO spyglass_grafana;
GRANT SELECT ON {db}.alert_status TO spyglass_grafana;
GRANT SELECT ON {db}.events_minute TO spyglass_grafana;
GRANT SELECT ON {db}.entity_risk_minute TO spyglass_grafana;
GRANT SELECT ON {db}.pipeline_health TO spyglass_grafana;
GRANT SELECT ON {db}.schema_migrations TO spyglass_grafana;
CREATE SETTINGS PROFILE IF NOT EXISTS spyglass_grafana_limits
    SETTINGS max_execution_time = 60 READONLY, max_memory_usage = 2000000000 READONLY
    TO spyglass_grafana
