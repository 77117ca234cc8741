-- +goose Up
-- Outbound webhooks (Standard Webhooks): a tenant's endpoints get the
-- delivery and engagement events of its audit chain, ids and statuses
-- only. The chain is the source: its seq orders a tenant's committed
-- actions without gaps, so a dispatcher that fans out rows after its cursor
-- misses none and, with (endpoint, seq) unique, repeats none.
CREATE TABLE webhook_endpoints (
    tenant_id     text NOT NULL REFERENCES tenants(id),
    id            text NOT NULL CHECK (id ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    url           text NOT NULL,
    -- The signing secret, sealed; shown once when the endpoint is made.
    secret_sealed bytea NOT NULL,
    -- Event types it takes; empty: all.
    event_types   text[] NOT NULL DEFAULT '{}',
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Per tenant: the last chain seq fanned out.
CREATE TABLE webhook_cursors (
    tenant_id  text PRIMARY KEY REFERENCES tenants(id),
    seq        bigint NOT NULL
);

CREATE TABLE webhook_messages (
    id              bigserial PRIMARY KEY,
    tenant_id       text NOT NULL,
    endpoint_id     text NOT NULL,
    seq             bigint NOT NULL,
    event_type      text NOT NULL,
    -- The body as sent: ids, statuses and times, never PHI.
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     int NOT NULL DEFAULT 0,
    last_error      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (tenant_id, endpoint_id, seq),
    FOREIGN KEY (tenant_id, endpoint_id) REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_messages_due ON webhook_messages (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_messages_dead ON webhook_messages (tenant_id, id) WHERE status = 'dead';

-- +goose Down
DROP TABLE webhook_messages;
DROP TABLE webhook_cursors;
DROP TABLE webhook_endpoints;
