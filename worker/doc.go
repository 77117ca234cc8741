// Package worker owns the Asynq side of Tidings: task types and their sealed
// payloads, the handler that turns a stored event into a policy-checked,
// delivered notice, and the reconciler that re-enqueues from the Postgres
// outbox whatever Redis never got (Redis down at intake, process killed
// between commit and enqueue). Tasks Redis loses after accepting them are not
// recovered yet.
package worker
