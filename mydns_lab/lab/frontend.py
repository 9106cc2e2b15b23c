"""``mydns frontend``: one front end alone, in the foreground, on
``--port`` (53 in a deployment) of ``--bind``: what each machine of a
deployment across machines runs beside its etcd member (docs/deploy.md).

It takes the lab's front-end flags (:mod:`.flags`) and needs ``--store
etcd``: the embedded store's servers only exist inside the lab. A port in
use, a bad certificate or keys file stops it with one line and exit 2; it
then serves until SIGTERM or Ctrl-C, logging to stderr.
"""

from __future__ import annotations

import sys

from ..admission import AdmissionPolicy
from ..cmdline import UsageParser
from ..dns.tsig import KeyFileError, KeyRing
from ..net.procs import set_role_title
from ..net.endpoints import FrontEndFailed, FrontEndListening
from ..service.process import listen_endpoints, serve_alone
from ..service.settings import FrontEndSettings
from .flags import add_front_end_flags, add_store_flags, etcd_options
from .preflight import bind_problem, endpoint_problem, published_name_servers, tls_problem


def build_parser(prog: str = "mydns frontend") -> UsageParser:
    p = UsageParser(prog=prog, description="Run one MyDNS front end (DNS, the JSON protocol "
                    "and HTTP) on --port of --bind, keeping its records in etcd: what each "
                    "machine of a deployment runs (docs/deploy.md).")
    add_front_end_flags(p)
    add_store_flags(p)
    p.set_defaults(port=53, store="etcd")
    return p


def settings_from(argv: list[str], prog: str = "mydns frontend") -> FrontEndSettings:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        etcd = etcd_options(args)
        name_servers = published_name_servers(args.zone, args.ns, args.bind, 1)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if etcd is None:
        parser.error("mydns frontend keeps its records in etcd (--store etcd "
                     "--etcd-endpoints URL,...); the embedded store runs with sh run_dns.sh")
    if (args.http_cert is None) != (args.http_key is None):
        parser.error("--http-cert and --http-key go together: give both for HTTPS, or neither")
    if args.http_cert and (problem := tls_problem(args.http_cert, args.http_key)):
        parser.error(problem)
    if args.keys is not None:
        try:
            KeyRing.load(str(args.keys))
        except (OSError, KeyFileError) as exc:
            parser.error(f"cannot use --keys {args.keys}: {exc}")
    return FrontEndSettings((), args.port, args.bind, args.zone, args.ttl, args.dns_reads,
                            str(args.keys) if args.keys else None, args.trusted,
                            AdmissionPolicy(args.expire, args.claims_per_minute, args.max_names,
                                            args.open_names),
                            args.rrl, name_servers=name_servers, http_port=args.http_port,
                            http_bind=args.http_bind, http_cert=args.http_cert,
                            http_key=args.http_key, status_page=args.status_page, etcd=etcd)


def main(argv: list[str] | None = None, prog: str = "mydns frontend") -> int:
    settings = settings_from(sys.argv[1:] if argv is None else list(argv), prog)
    for endpoint in listen_endpoints(settings, 0):
        if problem := endpoint_problem(endpoint):
            print(f"{prog}: error: {problem}", file=sys.stderr)
            return 2
    set_role_title("frontend")

    def told(message: object) -> None:
        match message:
            case FrontEndListening():
                where = ", ".join(str(e) for e in listen_endpoints(settings, 0))
                assert settings.etcd is not None
                print(f"{prog}: serving {settings.zone} on {where}; records in etcd at "
                      f"{', '.join(settings.etcd.endpoints)} under {settings.etcd.prefix}",
                      file=sys.stderr, flush=True)
            case FrontEndFailed(endpoint=endpoint, errno=error, reason=reason):
                line = bind_problem(endpoint, error, reason) if endpoint else reason
                print(f"{prog}: error: {line}", file=sys.stderr, flush=True)

    return 0 if serve_alone(settings, told) else 2
