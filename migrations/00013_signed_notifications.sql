-- +goose Up
-- The signatures of the signed notifications received lately: a signed
-- request posted again within the replay window is refused, so a captured
-- status change ("off", "error") cannot be made to take effect twice. The
-- signature covers the timestamp and the body, so (subscription, signature)
-- names one request. Rows older than twice the window are deleted as new
-- ones arrive; they could match no request the window admits.
CREATE TABLE signed_notifications (
    subscription_id  text NOT NULL REFERENCES subscriptions(id) ON DELETE CASCADE,
    signature        bytea NOT NULL,
    signed_at        timestamptz NOT NULL,
    PRIMARY KEY (subscription_id, signature)
);
CREATE INDEX signed_notifications_signed_at ON signed_notifications (subscription_id, signed_at);

-- +goose Down
DROP TABLE signed_notifications;
