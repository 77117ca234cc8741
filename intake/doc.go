// Package intake owns what happens to a FHIR notification once its sender is
// authenticated: parse it, record handshakes and heartbeats, store each
// full-resource event with its outbox row (deduplicated), and hand the new
// events to the queue; fetch what id-only and empty notifications leave
// out, recover gaps in event numbers, notice silent subscriptions, and
// create subscriptions on FHIR sources. It owns the types of that world
// (Subscription, Source, NewEvent, Fetch, Gap). Redis being down never
// loses an accepted event: the outbox keeps it until the worker's
// reconciler enqueues it.
package intake
