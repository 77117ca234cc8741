// Package testenv starts throwaway PostgreSQL and Redis servers from the
// machine's own packages, on free loopback ports inside a temporary folder, and
// stops them without leaving a process behind. Test binaries call Main from
// TestMain to get one migrated template database per package, then NewDB and
// NewRedisDB per test; `tidings dev` uses StartPostgres and StartRedis directly,
// and `tidings load` also StartProcess for the services it measures.
package testenv
