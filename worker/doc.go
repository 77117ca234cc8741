// Package worker is Tidings' thin Asynq adapter: task types and their
// sealed payloads (Client), handlers that open a task and call the core
// (journey for events and run wake-ups, intake for fetches) and map its
// outcome to done, retry or skip-retry (Handlers), the scheduler that moves
// wake-ups from Postgres into Redis as they come within the horizon and
// restores those Redis lost, and the reconciler that enqueues what the
// Postgres outbox holds and Redis never got or lost. Postgres holds the
// truth; a task only says "work on row N now".
package worker
