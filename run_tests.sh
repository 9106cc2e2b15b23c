#!/bin/sh
# Runs every test. Creates .venv on first use. Extra arguments go to pytest,
# e.g. `sh run_tests.sh -k election -x`.
set -eu
cd "$(dirname "$0")"
. scripts/ensure_venv.sh

# Real components are tested as Debian ships them. Each line below names
# the commands some tests run, the packages that hold them, and what skips
# without them. Missing ones are installed when we can (root with apt-get);
# a failed install only means those tests skip, saying why.
apt_updated="" installed=""
have_all() {
    for command in "$@"; do
        command -v "$command" >/dev/null 2>&1 || return 1
    done
}
ensure_tools() {  # PACKAGES WHAT-SKIPS COMMAND...
    packages=$1 skips=$2
    shift 2
    have_all "$@" && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        [ -n "$apt_updated" ] || { apt-get update -qq >/dev/null 2>&1 || true; apt_updated=yes; }
        # shellcheck disable=SC2086  # PACKAGES is a list
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null 2>&1 &&
            installed="$installed $packages"
    fi
    have_all "$@" || echo "note: $* missing (apt-get install $packages); $skips will skip" >&2
}
ensure_tools "bind9-dnsutils knot-dnsutils" "the real-client tests" dig kdig nsupdate
ensure_tools "chromium" "the status page's browser test" chromium
ensure_tools "ddclient inadyn" "the dyndns2 client tests" ddclient inadyn
ensure_tools "zonemaster-cli knot" "the Zonemaster conformance test" zonemaster-cli knotd
ensure_tools "etcd-server etcd-client" "the etcd store tests" etcd etcdctl

# Tests start their own ddclient, inadyn and knotd, once each: a daemon a
# package installed just now may have enabled is stopped (never one that
# was here before).
for service in ddclient inadyn knot; do
    case " $installed " in
        *" $service "*) systemctl disable --now "$service.service" >/dev/null 2>&1 || true ;;
    esac
done

exec .venv/bin/python -m pytest "$@"
