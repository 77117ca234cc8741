-- +goose Up
-- The audit log without a write lock. A business transaction only INSERTs its
-- audit rows; the chainer (package audit) links them afterwards, per tenant,
-- into audit_chain with a keyed hash (HMAC-SHA-256), and signs checkpoints of
-- the chain's head (Ed25519) that it also writes outside the database.
--
-- xid is the inserting transaction's top-level id. The chain order is
-- (xid, id): once every transaction below a snapshot's xmin has ended, no row
-- can appear before the rows already chained. Existing rows all get this
-- migration's xid and are chained in id order, like new ones.
ALTER TABLE audit_log
    ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    DROP COLUMN prev_hash,
    DROP COLUMN hash;
CREATE INDEX audit_log_chain_order ON audit_log (tenant_id, xid, id);

-- hash_seq = HMAC-SHA-256(key key_id, hash_(seq-1) || seq || canonical row);
-- see package audit for the exact bytes. The tenant is the audit row's (no
-- second foreign key to check for each of thousands of rows a second).
CREATE TABLE audit_chain (
    tenant_id   text NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    audit_id    bigint NOT NULL UNIQUE REFERENCES audit_log(id),
    key_id      text NOT NULL,
    hash        bytea NOT NULL,
    chained_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq)
);

-- A signed statement "the tenant's chain had size rows, ending in head, at at".
CREATE TABLE audit_checkpoints (
    tenant_id       text NOT NULL REFERENCES tenants(id),
    size            bigint NOT NULL CHECK (size > 0),
    head            bytea NOT NULL,
    at              timestamptz NOT NULL,
    signing_key_id  text NOT NULL,
    signature       bytea NOT NULL,
    PRIMARY KEY (tenant_id, size)
);

-- +goose Down
-- The old unkeyed chain cannot be rebuilt in SQL: rows get placeholder
-- hashes that the old verifier reports as broken, and new rows chain on.
DROP TABLE audit_checkpoints;
DROP TABLE audit_chain;
DROP INDEX audit_log_chain_order;
ALTER TABLE audit_log
    DROP COLUMN xid,
    ADD COLUMN prev_hash text NOT NULL DEFAULT '',
    ADD COLUMN hash text;
UPDATE audit_log SET hash = 'unchained:' || id;
ALTER TABLE audit_log
    ALTER COLUMN prev_hash DROP DEFAULT,
    ALTER COLUMN hash SET NOT NULL,
    ADD CONSTRAINT audit_log_hash_key UNIQUE (hash);
