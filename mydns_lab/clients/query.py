"""What ``query.py`` does: ask MyDNS front ends for a name over real DNS.

    python query.py NAME [--type A|AAAA|TXT|ANY] [--server HOST:PORT ...]
                    [--zone ZONE] [--json] [--timeout SECONDS]

NAME without a trailing dot is relative to the zone (``laptop`` ->
``laptop.mydns.``). Without ``--type`` both A and AAAA are asked. Each
question goes to the front ends in the order given, over UDP with EDNS
(1232-byte payload), again over TCP when the answer comes back truncated;
a front end that does not answer within ``--timeout`` (1 s), or answers
SERVFAIL, is passed over for the next, for two rounds at most and never
longer than :data:`TOTAL_TIMEOUT_S` in all.

Output: the records, one per line in zone-file form (``laptop.mydns. 60 IN
A 10.1.2.3``), or one JSON object with ``--json``. Exit status: 0 found,
1 the name does not exist (NXDOMAIN) or has no record of the type asked
(NODATA; the message says which), 2 no front end answered, one refused the
question (a name outside its zone), or bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from ..cmdline import UsageParser
from ..records import InvalidRecord, normalize_name
from .cli import DEFAULT_ZONE, UsageError, front_ends, zone_of
from .jsonclient import Server, server_text

TRY_TIMEOUT_S = 1.0
TOTAL_TIMEOUT_S = 8.0
ROUNDS = 2
EDNS_PAYLOAD = 1232
TYPES = ("A", "AAAA", "TXT", "ANY")

EXIT_FOUND, EXIT_NOT_FOUND, EXIT_NO_ANSWER = 0, 1, 2


class NoServerAnswered(Exception):
    """No front end gave a usable answer; the message lists what each did."""


class QueryRefused(Exception):
    """A front end answered REFUSED: it does not serve that name."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """One question's answer: rcode NOERROR or NXDOMAIN, and its records."""

    qname: str
    rdtype: str
    rcode: str
    server: Server
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.rcode == "NXDOMAIN":
            return "NXDOMAIN"
        return "found" if self.records else "NODATA"


def qualified(name: str, zone: str) -> str:
    """NAME as a fully qualified name: as given when it ends with a dot,
    else with the zone appended. A NAME relative to the zone must be one
    the zone can hold (:func:`mydns_lab.records.normalize_name`): asking
    for ``bad name!`` would only ever get NXDOMAIN, which reads as "not
    uploaded yet" rather than "mistyped"."""
    name = name.strip()
    if not name or name == ".":
        raise UsageError("NAME is empty")
    if not name.endswith("."):
        try:
            normalize_name(name)
        except InvalidRecord as exc:
            raise UsageError(f"bad name {name!r}: {exc}; MyDNS names are host names "
                             "(end NAME with a dot to ask for any other name)") from None
    fqdn = name if name.endswith(".") else f"{name}.{zone}"
    try:
        dns.name.from_text(fqdn)
    except dns.exception.DNSException as exc:
        raise UsageError(f"bad name {name!r}: {exc}") from None
    return fqdn.lower()


def _records_of(response: dns.message.Message) -> list[dict[str, Any]]:
    records = []
    for rrset in response.answer:
        for rdata in rrset:
            value = (b"".join(rdata.strings).decode(errors="replace")
                     if rrset.rdtype == dns.rdatatype.TXT else rdata.to_text())
            records.append({"name": rrset.name.to_text(), "ttl": rrset.ttl,
                            "type": dns.rdatatype.to_text(rrset.rdtype), "value": value,
                            "text": f"{rrset.name} {rrset.ttl} IN "
                                    f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}"})
    return records


def ask(qname: str, rdtype: str, servers: list[Server], try_timeout_s: float = TRY_TIMEOUT_S,
        deadline: float | None = None) -> Lookup:
    """Ask the front ends in order until one answers NOERROR or NXDOMAIN.

    Raises :class:`QueryRefused` on REFUSED and :class:`NoServerAnswered`
    when the rounds or the ``deadline`` (``time.monotonic()``) run out.
    """
    deadline = time.monotonic() + TOTAL_TIMEOUT_S if deadline is None else deadline
    problems: list[str] = []
    for _ in range(ROUNDS):
        for server in servers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                problems.append(f"gave up after {TOTAL_TIMEOUT_S:g} s in all")
                raise NoServerAnswered("; ".join(dict.fromkeys(problems)))
            query = dns.message.make_query(qname, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
            timeout = min(try_timeout_s, remaining)
            try:
                response, _tcp = dns.query.udp_with_fallback(query, server[0], timeout,
                                                             port=server[1])
            except dns.exception.Timeout:
                problems.append(f"{server_text(server)}: no answer within {timeout:g} s")
                continue
            except (OSError, dns.exception.DNSException) as exc:
                problems.append(f"{server_text(server)}: {exc}")
                continue
            rcode = dns.rcode.to_text(response.rcode())
            if rcode in ("NOERROR", "NXDOMAIN"):
                return Lookup(qname, rdtype, rcode, server, _records_of(response))
            if rcode == "REFUSED":
                raise QueryRefused(f"{server_text(server)} refused {qname} {rdtype}: it does "
                                   "not serve that name (is it inside the zone? see --zone)")
            problems.append(f"{server_text(server)}: {rcode}")
    raise NoServerAnswered("; ".join(dict.fromkeys(problems)))


def lookup_all(qname: str, rdtypes: tuple[str, ...], servers: list[Server],
               try_timeout_s: float) -> list[Lookup]:
    """One :class:`Lookup` per type, sharing one total deadline."""
    deadline = time.monotonic() + TOTAL_TIMEOUT_S
    return [ask(qname, rdtype, servers, try_timeout_s, deadline) for rdtype in rdtypes]


def verdict(lookups: list[Lookup]) -> str:
    """``found`` if any type has records, else ``NXDOMAIN`` if the name does
    not exist, else ``NODATA``."""
    statuses = {lookup.status for lookup in lookups}
    if "found" in statuses:
        return "found"
    return "NXDOMAIN" if "NXDOMAIN" in statuses else "NODATA"


def report(lookups: list[Lookup], as_json: bool, out: TextIO, err: TextIO) -> int:
    status = verdict(lookups)
    records = [record for lookup in lookups for record in lookup.records]
    servers = list(dict.fromkeys(server_text(lookup.server) for lookup in lookups))
    qname, types = lookups[0].qname, "/".join(lookup.rdtype for lookup in lookups)
    if as_json:
        print(json.dumps({"name": qname, "type": types, "status": status, "server": servers[0],
                          "records": [{k: v for k, v in r.items() if k != "text"}
                                      for r in records]}), file=out)
    elif status == "found":
        for record in records:
            print(record["text"], file=out)
    elif status == "NXDOMAIN":
        print(f"{qname}: no such name (NXDOMAIN from {servers[0]})", file=err)
    else:
        print(f"{qname}: the name exists but has no {types} record (NODATA from {servers[0]})",
              file=err)
    return EXIT_FOUND if status == "found" else EXIT_NOT_FOUND


def build_parser(prog: str = "query.py") -> argparse.ArgumentParser:
    p = UsageParser(prog=prog, description="Look a name up in MyDNS over DNS.")
    p.add_argument("name", metavar="NAME",
                   help="a name in the zone (laptop), or a fully qualified one (laptop.mydns.)")
    p.add_argument("--type", choices=TYPES, type=str.upper, default=None,
                   help="record type (default: A and AAAA)")
    p.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                   help="a front end, tried in order (repeatable; default: 127.0.0.1:9876 "
                        "to 127.0.0.1:9880)")
    p.add_argument("--zone", default=DEFAULT_ZONE, help="zone appended to NAME (mydns.)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=TRY_TIMEOUT_S, metavar="SECONDS",
                   help="how long to wait for one front end (1)")
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, prog: str = "query.py") -> int:
    """The command; returns the exit status. Prints to ``out``/``err``
    (default: the streams current at the call); ``prog`` names it in usage
    and errors (``mydns query`` when run as a subcommand)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser(prog).parse_args(argv)
    try:
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        qname = qualified(args.name, zone_of(args.zone))
        servers = front_ends(args.server)
        rdtypes = (args.type,) if args.type else ("A", "AAAA")
        lookups = lookup_all(qname, rdtypes, servers, args.timeout)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_NO_ANSWER
    except QueryRefused as exc:
        print(f"error: {exc}", file=err)
        return EXIT_NO_ANSWER
    except NoServerAnswered as exc:
        print(f"error: no DNS server answered {qname} ({exc}); is the service running "
              "(sh run_dns.sh)? Pass --server HOST:PORT to ask others", file=err)
        return EXIT_NO_ANSWER
    except KeyboardInterrupt:
        return 130
    return report(lookups, args.json, out, err)
