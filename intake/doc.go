// Package intake owns what happens to a FHIR notification once its sender is
// authenticated: parse it, record handshakes and heartbeats, and store each
// full-resource event (deduplicated) where the workers claim it; fetch what
// id-only and empty notifications leave out (a fetch and its outbox row,
// handed to the queue), recover gaps in event numbers, notice silent
// subscriptions, and create subscriptions on FHIR sources. It owns the
// types of that world (Subscription, Source, NewEvent, Fetch, Gap). An
// accepted event never depends on Redis; a fetch Redis did not take waits
// in the outbox until the worker's reconciler enqueues it.
package intake
