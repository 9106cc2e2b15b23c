#!/bin/sh
# Runs every test. Creates .venv on first use. Extra arguments go to pytest,
# e.g. `sh run_tests.sh -k election -x`.
set -eu
cd "$(dirname "$0")"
. scripts/ensure_venv.sh

# The real-client tests run dig, kdig and nsupdate (Debian packages
# bind9-dnsutils and knot-dnsutils). Install them when missing and we can;
# a failed install only means those tests skip.
has_dns_tools() {
    command -v dig >/dev/null 2>&1 && command -v kdig >/dev/null 2>&1 &&
        command -v nsupdate >/dev/null 2>&1
}
if ! has_dns_tools; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq bind9-dnsutils knot-dnsutils; } >/dev/null 2>&1 || true
    fi
    has_dns_tools || echo "note: dig, kdig or nsupdate is missing (apt-get install bind9-dnsutils knot-dnsutils); the real-client tests will skip" >&2
fi

exec .venv/bin/python -m pytest "$@"
