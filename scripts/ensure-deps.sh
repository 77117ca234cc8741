#!/usr/bin/env bash
# Installs the servers the tests start themselves (package testenv): PostgreSQL
# (initdb, postgres) and redis-server, from Debian's packages, when missing.
# It starts no service: the tests run their own servers on free ports.
set -euo pipefail

have_initdb() {
	command -v initdb >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
have_redis() {
	command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
}

missing=()
have_initdb || missing+=(postgresql)
have_redis || missing+=(redis-server)
if [ "${#missing[@]}" -eq 0 ]; then
	echo "ensure-deps: postgresql and redis-server already installed"
	exit 0
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	sudo=(sudo)
fi

# Debian's postinst scripts start a service unless policy-rc.d forbids it.
# Forbid it for this install if the machine does not already.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
	"${sudo[@]}" chmod 755 "$policy"
	trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq &&
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
	cat "$log" >&2
	rm -f "$log"
	echo "ensure-deps: apt-get install ${missing[*]} failed" >&2
	exit 1
fi
rm -f "$log"

have_initdb || { echo "ensure-deps: initdb still missing after installing postgresql" >&2; exit 1; }
have_redis || { echo "ensure-deps: redis-server still missing after installing it" >&2; exit 1; }
echo "ensure-deps: installed ${missing[*]} with apt-get (no service started)"
