-- requires: rbac
-- Tenant isolation inside ClickHouse, for dashboards that must show one tenant only. A Grafana user of
-- one tenant holds spyglass_tenant_grafana (the Grafana grants, through spyglass_grafana) and a row
-- policy per table, `tenant = '<its tenant>'` (schemas.users.tenant_grafana_statements), so no
-- dashboard variable or hand-written query of that user can read another tenant.
-- Once a table has a row policy, ClickHouse shows a user no rows of it unless some policy applies to
-- that user: spyglass_every_tenant keeps every other user (the worker, administrators, the
-- all-tenant Grafana user) seeing every row. pipeline_health and engine_checkpoints have no tenant.
-- Skipped (and not recorded) on 18.16 and chDB, which have no row policies (docs/dashboard-security.md).
CREATE ROLE IF NOT EXISTS spyglass_tenant_grafana;
GRANT spyglass_grafana TO spyglass_tenant_grafana;
CREATE ROW POLICY IF NOT EXISTS spyglass_every_tenant ON {db}.events FOR SELECT USING 1
    TO ALL EXCEPT spyglass_tenant_grafana;
CREATE ROW POLICY IF NOT EXISTS spyglass_every_tenant ON {db}.alerts FOR SELECT USING 1
    TO ALL EXCEPT spyglass_tenant_grafana;
CREATE ROW POLICY IF NOT EXISTS spyglass_every_tenant ON {db}.alert_status FOR SELECT USING 1
    TO ALL EXCEPT spyglass_tenant_grafana;
CREATE ROW POLICY IF NOT EXISTS spyglass_every_tenant ON {db}.events_minute FOR SELECT USING 1
    TO ALL EXCEPT spyglass_tenant_grafana;
CREATE ROW POLICY IF NOT EXISTS spyglass_every_tenant ON {db}.entity_risk_minute FOR SELECT USING 1
    TO ALL EXCEPT spyglass_tenant_grafana
