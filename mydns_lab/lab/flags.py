"""The flags a front end takes, shared by the lab (``sh run_dns.sh``) and
``mydns frontend``: where it listens, the zone, who may do what, HTTP,
and which store keeps the records (``--store raft|etcd`` and how to reach
etcd). One definition, so the two command lines cannot drift apart."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from ..admission import OPEN_NAMES_CHOICES, AdmissionPolicy, duration
from ..cmdline import ip_address, non_negative_int, port_number, readable_file, ttl_seconds
from ..etcd.flags import add_etcd_flags, etcd_options_from
from ..etcd.options import EtcdOptions
from .launcher import LOOPBACK_NETWORKS
from .preflight import name_server_entry, zone_name

STORES = ("raft", "etcd")


def add_front_end_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of a front end but the store's."""
    flag = p.add_argument
    flag("--port", type=port_number, default=9876, help="first front-end port (9876)")
    flag("--bind", type=ip_address, default="127.0.0.1",
         help="address the front ends listen on (127.0.0.1; 0.0.0.0 or :: for all)")
    flag("--zone", type=zone_name, default="mydns.", help="DNS zone served (mydns.)")
    flag("--ttl", type=ttl_seconds, default=60, help="TTL of answers in seconds (60)")
    flag("--ns", type=name_server_entry, action="append", default=[], metavar="NAME=ADDR",
         help="a name server of the zone and its address, repeatable, in order (the first is "
              "the SOA MNAME); NAME is relative to --zone or absolute with a trailing dot "
              "(default: ns1 .. ns<nclerks> at --bind)")
    flag("--dns-reads", choices=["cache", "linearizable"], default="cache",
         help="answer DNS from each front end's copy of the records (cache, the default) "
              "or read each name through the cluster (linearizable)")
    flag("--trusted", type=networks, default=LOOPBACK_NETWORKS, metavar="CIDR,...",
         help="networks exempt from the claim and response rate limits, whose JSON Stats "
              "requests are answered (loopback)")
    policy = AdmissionPolicy()
    flag("--expire", type=duration, default=policy.expire_s, metavar="DURATION",
         help="release a name not refreshed for this long: 30d (default), 12h, 15m, 90s; "
              "0 never")
    flag("--claims-per-minute", type=non_negative_int, default=policy.claims_per_minute,
         metavar="N", help="new names one untrusted source (an IPv4 address, an IPv6 /64) may "
                           f"claim a minute at each front end ({policy.claims_per_minute}; 0 no limit)")
    flag("--max-names", type=non_negative_int, default=policy.max_names, metavar="N",
         help=f"names the zone may hold ({policy.max_names:,}; 0 no limit)")
    flag("--open-names", choices=OPEN_NAMES_CHOICES, default=policy.open_names,
         help="allow (default): a JSON Put without a token claims an open name that any later "
              "Put without a token may update, as the original's clients expect; deny: every "
              "Put needs a token")
    flag("--rrl", type=non_negative_int, default=100, metavar="RATE",
         help="DNS responses a second to one client network (/24, IPv6 /56) before answers "
              "are dropped or truncated; 0 no limit (100)")
    flag("--http-port", type=http_port, default=9980, metavar="P",
         help="front end i serves HTTP on P+i: dyndns2 updates (/nic/update), the status "
              "page (/), /metrics, /healthz, /readyz (9980; 0 none)")
    flag("--http-bind", type=ip_address, default=None, metavar="ADDR",
         help="address the HTTP endpoints listen on (default: --bind)")
    flag("--http-cert", type=readable_file, default=None, metavar="FILE",
         help="with --http-key: serve HTTPS with this certificate chain (PEM)")
    flag("--http-key", type=readable_file, default=None, metavar="FILE",
         help="the private key of --http-cert (PEM)")
    flag("--status-page", choices=["local", "public", "off"], default="local",
         help="the status page (/ on the HTTP port): local (default) shows the names to "
              "loopback and --trusted sources, the cluster alone to others; public: all to "
              "all; off: none")
    flag("--keys", type=Path, default=None, metavar="FILE",
         help="TSIG keys allowed to send RFC 2136 updates (see docs/service.md)")


def add_store_flags(p: argparse.ArgumentParser) -> None:
    flag = p.add_argument
    flag("--store", choices=STORES, default="raft",
         help="where the records live: raft (default), our own Raft servers on this host; "
              "etcd, an etcd cluster (--etcd-endpoints), for a deployment across machines "
              "(docs/deploy.md)")
    add_etcd_flags(p)


def etcd_options(args: argparse.Namespace) -> EtcdOptions | None:
    """The etcd settings the parsed flags ask for (None: --store raft);
    raises ValueError, in words for the user, when they do not fit."""
    if args.store != "etcd":
        given = [f for f in ("etcd_endpoints", "etcd_cacert", "etcd_cert", "etcd_key",
                             "etcd_user", "etcd_password_file") if getattr(args, f)]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} needs --store etcd")
        return None
    if not args.etcd_endpoints:
        raise ValueError("--store etcd needs --etcd-endpoints URL[,URL...] "
                         "(the etcd members' client URLs)")
    return etcd_options_from(args)


def http_port(text: str) -> int:
    """``--http-port``: a port number, or 0 for no HTTP."""
    return 0 if text.strip() == "0" else port_number(text)


def networks(text: str) -> tuple[str, ...]:
    """``--trusted``: comma-separated networks in CIDR notation (an address
    alone is a network of one), each in canonical form."""
    try:
        return tuple(str(ipaddress.ip_network(part.strip(), strict=False))
                     for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected networks such as 127.0.0.0/8,192.168.1.0/24, got {text!r}") from None


