-- +goose Up
-- tidings_app is the role `tidings serve` and `tidings worker` run as (through
-- a LOGIN role granted it): everything the service needs, but the audit
-- tables are append-only for it, so no application credential can rewrite
-- or delete evidence. Migrations run as the tables' owner.
--
-- Roles belong to the cluster, not the database: create it only once. An
-- owner without CREATEROLE needs it created beforehand by an administrator.
-- +goose StatementBegin
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tidings_app') THEN
        CREATE ROLE tidings_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- another database's migration created it at the same moment
END
$$;
-- +goose StatementEnd

GRANT USAGE ON SCHEMA public TO tidings_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO tidings_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO tidings_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tidings_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO tidings_app;

-- Audit rows: insert and read only. The id, the time and the inserting
-- transaction's xid always come from the database, so the application cannot
-- place a row before rows already chained or date it.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_log FROM tidings_app;
GRANT INSERT (tenant_id, actor, action, subject_type, subject_id, detail) ON audit_log TO tidings_app;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_chain, audit_checkpoints FROM tidings_app;
-- The migration history is the owner's.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON goose_db_version FROM tidings_app;

-- +goose Down
-- The role stays: other databases of the cluster may use it.
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM tidings_app;
ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM tidings_app;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM tidings_app;
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM tidings_app;
REVOKE USAGE ON SCHEMA public FROM tidings_app;
