-- +goose Up
-- API keys replace the tenant:token pairs that sat in clear in the
-- environment. Each key belongs to one tenant and has one role; only the
-- SHA-256 of its secret is kept. The id is public: the audit log names it as
-- the actor of what the key did.
CREATE TABLE api_keys (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{16}$'),
    tenant_id   text NOT NULL REFERENCES tenants(id),
    role        text NOT NULL CHECK (role IN ('integration', 'operator', 'contacts', 'compliance', 'admin')),
    name        text NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    secret_hash bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at DESC);
-- The service may make keys and revoke them, never change a key's tenant,
-- role or secret, or delete one (revoked keys stay, as the audit log names
-- them).
REVOKE UPDATE, DELETE, TRUNCATE ON api_keys FROM tidings_app;
GRANT UPDATE (revoked_at) ON api_keys TO tidings_app;

-- +goose Down
DROP TABLE api_keys;
