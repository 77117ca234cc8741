#!/usr/bin/env bash
# README command 2: the whole test suite. Installs PostgreSQL and Redis when
# missing; the tests start their own servers on free loopback ports (once per
# package, template database cloned per test). Rego tests run inside
# `go test ./policy/` through OPA's test runner.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
echo "== gofmt -l"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
echo "== go vet ./..."
go vet ./...
echo "== go test ./..."
go test -count=1 -timeout 15m ./... "$@"
