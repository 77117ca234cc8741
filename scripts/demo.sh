#!/usr/bin/env bash
# README command 1: the whole job end to end on this machine. Installs
# PostgreSQL and Redis from Debian's packages when missing, builds tidings, and
# runs `tidings dev`: local Postgres + Redis on free ports in a temporary folder,
# migrations, API + worker + STARTTLS mail catcher, replay of examples/replay,
# and a summary of the notices. Extra arguments go to `tidings dev`
# (e.g. --exit --json). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh >&2
mkdir -p bin
go build -o bin/tidings ./cmd/tidings
exec bin/tidings dev "$@"
