// Package webhook tells a tenant's own systems what happened to its
// notices, as Standard Webhooks (https://www.standardwebhooks.com): each
// message a JSON event signed with the endpoint's secret (webhook-id,
// webhook-timestamp, webhook-signature), retried with backoff until the
// endpoint answers 2xx, then kept as dead for an operator to replay.
//
// It owns the event vocabulary (Event, the types a tenant may subscribe
// to, and Of, which turns an audit row into an event with ids and
// statuses only, never PHI), the retry schedule, and the Dispatcher that
// fans a tenant's audit chain out to its endpoints and sends what is due.
// The store keeps endpoints, the fan-out cursor and the messages.
package webhook
