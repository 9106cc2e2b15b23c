"""The flags that say how to reach etcd, for every command that does:
``--store etcd`` front ends (the lab, ``mydns frontend``) and ``mydns
import``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cmdline import readable_file
from .options import EtcdOptions


def add_etcd_flags(p: argparse.ArgumentParser, endpoints_required: bool = False) -> None:
    flag = p.add_argument
    flag("--etcd-endpoints", type=endpoint_list, default=None,
         required=endpoints_required, metavar="URL,...",
         help="with --store etcd: the etcd members' client URLs, e.g. "
              "https://10.0.0.1:2379,https://10.0.0.2:2379 (requests fail over between them)")
    flag("--etcd-prefix", type=etcd_prefix, default="/mydns/", metavar="PREFIX",
         help="the key prefix the records live under (/mydns/)")
    flag("--etcd-cacert", type=readable_file, default=None, metavar="FILE",
         help="CA certificate (PEM) that signed the etcd members' certificates")
    flag("--etcd-cert", type=readable_file, default=None, metavar="FILE",
         help="client certificate (PEM) for etcd's client-cert-auth")
    flag("--etcd-key", type=readable_file, default=None, metavar="FILE",
         help="the private key of --etcd-cert (PEM)")
    flag("--etcd-user", default=None, metavar="NAME", help="etcd user (with etcd's auth on)")
    flag("--etcd-password-file", type=readable_file, default=None, metavar="FILE",
         help="file holding --etcd-user's password (a file, so it is not in `ps`)")


def etcd_options_from(args: argparse.Namespace) -> EtcdOptions:
    """The etcd settings the parsed flags give; raises ValueError (or
    OSError for a password file that cannot be read) in words for the user."""
    if (args.etcd_cert is None) != (args.etcd_key is None):
        raise ValueError("--etcd-cert and --etcd-key go together: give both, or neither")
    if (args.etcd_user is None) != (args.etcd_password_file is None):
        raise ValueError("--etcd-user and --etcd-password-file go together")
    password = None
    if args.etcd_password_file:
        password = Path(args.etcd_password_file).read_text().strip()
    return EtcdOptions(args.etcd_endpoints, args.etcd_prefix, args.etcd_cacert, args.etcd_cert,
                       args.etcd_key, args.etcd_user, password)


def endpoint_list(text: str) -> tuple[str, ...]:
    """``--etcd-endpoints``: comma-separated http(s)://host:port URLs."""
    urls = tuple(part.strip().rstrip("/") for part in text.split(",") if part.strip())
    for url in urls:
        scheme, _, rest = url.partition("://")
        if scheme not in ("http", "https") or not rest or "/" in rest:
            raise argparse.ArgumentTypeError(
                f"expected client URLs such as https://10.0.0.1:2379, got {url!r}")
    if not urls:
        raise argparse.ArgumentTypeError("expected at least one URL")
    return urls


def etcd_prefix(text: str) -> str:
    """``--etcd-prefix``: a key prefix that starts and ends with '/'."""
    if not text.startswith("/") or not text.endswith("/") or len(text) < 2:
        raise argparse.ArgumentTypeError(f"the prefix must start and end with '/', got {text!r}")
    return text
