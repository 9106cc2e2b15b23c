"""The real programs tests run, as Debian ships them: which package holds
each (the same list ``run_tests.sh`` installs from), and :func:`need`,
which finds one or skips the test saying how to get it."""

from __future__ import annotations

import shutil

import pytest

PACKAGE = {"dig": "bind9-dnsutils", "nsupdate": "bind9-dnsutils", "kdig": "knot-dnsutils",
           "ddclient": "ddclient", "inadyn": "inadyn", "chromium": "chromium",
           "zonemaster-cli": "zonemaster-cli", "knotd": "knot", "etcd": "etcd-server",
           "etcdctl": "etcd-client"}


def need(program: str) -> str:
    """The path of ``program``; skips the test when it is not installed."""
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed: install the Debian package {PACKAGE[program]} "
                    f"(apt-get install {PACKAGE[program]}; run_tests.sh does it as root)")
    return path
