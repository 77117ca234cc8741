-- +goose Up
-- Each tenant's compliance team may upload its own policy revision through
-- the API. Every accepted revision is kept (its files, tests included, so
-- what decided can always be read back); tenant_policies names the one that
-- decides, or none: the deployment's built-in rules. Every serve and worker
-- process loads the active revisions from here.
CREATE TABLE policy_revisions (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants(id),
    -- Hex SHA-256 of the compiled files: what policy_decisions records.
    revision    text NOT NULL CHECK (revision ~ '^[0-9a-f]{64}$'),
    -- File name → content (Rego modules, *_test.rego tests, JSON data).
    files       jsonb NOT NULL CHECK (jsonb_typeof(files) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL
);
CREATE INDEX policy_revisions_tenant ON policy_revisions (tenant_id, id DESC);
-- A revision that decided is evidence: the service never rewrites one.
REVOKE UPDATE, DELETE, TRUNCATE ON policy_revisions FROM tidings_app;

-- Each change of a tenant's active revision takes a new generation. A row's
-- generation only grows, so the sum over all rows changes with every
-- committed change, whatever order transactions commit in: processes poll
-- it to know when to reload.
CREATE SEQUENCE policy_generation;
CREATE TABLE tenant_policies (
    tenant_id    text PRIMARY KEY REFERENCES tenants(id),
    revision_id  bigint REFERENCES policy_revisions(id), -- NULL: the built-in rules
    generation   bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
REVOKE DELETE, TRUNCATE ON tenant_policies FROM tidings_app;

-- +goose Down
DROP TABLE tenant_policies;
DROP SEQUENCE policy_generation;
DROP TABLE policy_revisions;
