#!/usr/bin/env bash
# Installs the servers the tests start themselves (package testenv): PostgreSQL
# (initdb, postgres) and redis-server, the programs that open the encrypted
# mail in the message-encryption tests (openssl, and gpg from gnupg), and the
# headless browser the portal's end-to-end test drives (chromium), from
# Debian's packages, when missing. It starts no service: the tests run their
# own servers on free ports. PostgreSQL, Redis, openssl and gnupg are
# required; chromium is tried, and when it cannot be installed the browser
# test skips and says so.
set -euo pipefail

have_initdb() {
	command -v initdb >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
have_redis() {
	command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
}
have_openssl() {
	command -v openssl >/dev/null 2>&1
}
have_gpg() {
	command -v gpg >/dev/null 2>&1 && command -v gpgconf >/dev/null 2>&1
}
have_chromium() {
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

missing=()
have_initdb || missing+=(postgresql)
have_redis || missing+=(redis-server)
have_openssl || missing+=(openssl)
have_gpg || missing+=(gnupg)
want_chromium=()
have_chromium || want_chromium=(chromium)
if [ "${#missing[@]}" -eq 0 ] && [ "${#want_chromium[@]}" -eq 0 ]; then
	echo "ensure-deps: postgresql, redis-server, openssl, gnupg and chromium already installed"
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
if ! "${sudo[@]}" apt-get update -qq >"$log" 2>&1 && [ "${#missing[@]}" -gt 0 ]; then
	cat "$log" >&2
	rm -f "$log"
	echo "ensure-deps: apt-get update failed" >&2
	exit 1
fi
if [ "${#missing[@]}" -gt 0 ] &&
	! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
	cat "$log" >&2
	rm -f "$log"
	echo "ensure-deps: apt-get install ${missing[*]} failed" >&2
	exit 1
fi
if [ "${#want_chromium[@]}" -gt 0 ] &&
	! "${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium >"$log" 2>&1; then
	tail -5 "$log" >&2
	echo "ensure-deps: chromium could not be installed; the portal's browser test will skip" >&2
fi
rm -f "$log"

have_initdb || { echo "ensure-deps: initdb still missing after installing postgresql" >&2; exit 1; }
have_redis || { echo "ensure-deps: redis-server still missing after installing it" >&2; exit 1; }
have_openssl || { echo "ensure-deps: openssl still missing after installing it" >&2; exit 1; }
have_gpg || { echo "ensure-deps: gpg still missing after installing gnupg" >&2; exit 1; }
have_chromium || want_chromium=()
echo "ensure-deps: installed ${missing[*]} ${want_chromium[*]} with apt-get (no service started)"
