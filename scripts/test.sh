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
# go test -json is kept for tidings evidence --test-report; what is printed
# is what plain go test prints (package lines, failed tests' output).
report="${TIDINGS_TEST_REPORT:-$PWD/test-report.jsonl}"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/testreport" ./scripts/testreport
go test -count=1 -timeout 15m -json ./... "$@" | "$bin/testreport" -out "$report"
echo "test report (tidings evidence --test-report): $report"
