// Package worker is Tidings' thin adapter between the core and its two
// sources of work. The Claimer takes stored events from Postgres in
// batches (LISTEN wakes it; a lease lets another worker take over from one
// that died) and has journey process them; no queue stands between an
// event and its worker. Asynq carries the rest: task types and their
// sealed payloads (Client), handlers that open a task and call the core
// (journey for run wake-ups, intake for fetches) and map its outcome to
// done, retry or skip-retry (Handlers), the scheduler that moves wake-ups
// from Postgres into Redis as they come within the horizon and restores
// those Redis lost, and the reconciler that enqueues the fetches the
// Postgres outbox holds and Redis never got, enqueues again those still
// pending a lease later (Redis may have lost their task), and marks
// unknown the deliveries a dead worker left "sending". Postgres holds the
// truth; a task only says "work on row N now".
package worker
