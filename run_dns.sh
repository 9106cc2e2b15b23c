#!/bin/sh
# Runs the MyDNS service on this host. Creates .venv on first use.
set -eu
cd "$(dirname "$0")"
. scripts/ensure_venv.sh
exec .venv/bin/python -m mydns_lab "$@"
