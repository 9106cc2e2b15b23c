"""How to reach an etcd cluster (``--etcd-*``), apart from the client that
speaks to it: the flags, the launcher and every front end read these, and
only the etcd store's :mod:`~mydns_lab.etcd.gateway` loads aiohttp (about
23 MB a process), so a front end of the embedded store never does."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EtcdOptions:
    """How to reach the cluster: ``--etcd-endpoints``, ``--etcd-prefix``,
    client TLS (``--etcd-cacert``, ``--etcd-cert``, ``--etcd-key``) and
    ``--etcd-user`` with its password."""

    endpoints: tuple[str, ...]
    prefix: str = "/mydns/"
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = None


def tls_context(options: EtcdOptions) -> ssl.SSLContext | None:
    """The client TLS context for https endpoints (None for plain http);
    raises OSError or ssl.SSLError when a file does not load."""
    if not any(e.startswith("https://") for e in options.endpoints):
        return None
    context = ssl.create_default_context(cafile=options.cacert)
    if options.cert:
        context.load_cert_chain(options.cert, options.key)
    return context
