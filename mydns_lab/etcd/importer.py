"""``mydns import --etcd-endpoints URL[,URL] FILE``: load the records
``mydns export`` wrote into etcd, owners and all, so that moving from the
embedded store to etcd claims no name again.

    mydns export --data-dir mydns-data --output records.jsonl
    mydns import --etcd-endpoints https://10.0.0.1:2379,https://10.0.0.2:2379 \\
        --etcd-cacert ca.pem --etcd-cert client.pem --etcd-key client-key.pem records.jsonl

Who calls what: :func:`read_json_lines` checks the whole file first (a bad
line names its number, and nothing is written); :func:`import_records` then
writes one record at a time, each in one etcd transaction atomic with the
zone's name count (``<prefix>meta/names``, which ``--max-names`` reads):
a read of the record and the count at one revision, then a write that
holds only if neither changed since (each key's ``mod_revision``, 0 for a
key that did not exist), started over when another writer got there first,
as :class:`~mydns_lab.etcd.store.EtcdStore` writes. Front ends may run
meanwhile.

Per name: absent in etcd, it is imported; held by the same owner, the
record with the higher ``seq`` stays (the file's replaces an older one: an
update); held by another owner, it is refused and left as it is. The
zone's ``--max-names`` is not applied: the operator moves what the zone
already holds. Importing twice changes nothing the second time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

from ..cmdline import EXIT_USAGE, UsageParser
from ..protocol import Record
from ..records import (KEY_OWNER_PREFIX, MAX_SEQ, OPEN_OWNER, InvalidRecord, check_txt,
                       normalize_name, same_owner, split_addresses)
from .flags import add_etcd_flags, etcd_options_from
from .gateway import (EtcdError, EtcdUnavailable, Gateway, first_kv, put_request, range_request,
                      unb64, unchanged)
from .layout import BadValue, Layout, record_from, record_value
from .options import EtcdOptions

FIELDS = ("name", "ipv4", "ipv6", "txt", "owner", "seq", "updated_ms")
"""The fields of each line, as :func:`mydns_lab.lab.export.record_json` writes them."""
MAX_ATTEMPTS = 20
"""Tries per record: after this many lost races the import stops."""
MAX_UNANSWERED = 5
"""Tries per record that no member answered (each already tried every
endpoint) before the import stops: about two seconds of back-off."""
RETRY_BACKOFF_S = (0.05, 1.0)
EXIT_REFUSED = 1
_HASH = re.compile(r"[0-9a-f]{64}")


class ImportFileError(ValueError):
    """A line of the file is not a record; the message names the line."""


class ImportFailed(Exception):
    """The import stopped part-way; the message says why and what to do.
    Records before the one named are in etcd (importing again skips them)."""


class Outcome:
    """What the import did with one record."""

    IMPORTED = "imported"            # the name was free in etcd
    UPDATED = "updated"              # the same owner held it with an older seq
    ALREADY_THERE = "already_there"  # the same owner holds it, seq as new or newer
    REFUSED = "refused"              # another owner holds it: left as it is


@dataclass(slots=True)
class ImportReport:
    """Counts per :class:`Outcome`: ``imported`` includes the ``updated``
    ones; ``refused`` lists the names another owner holds."""

    imported: int = 0
    updated: int = 0
    already_there: int = 0
    refused: list[str] = field(default_factory=list)

    def count(self, name: str, outcome: str) -> None:
        if outcome == Outcome.REFUSED:
            self.refused.append(name)
        elif outcome == Outcome.ALREADY_THERE:
            self.already_there += 1
        else:
            self.imported += 1
            self.updated += outcome == Outcome.UPDATED

    def lines(self) -> list[str]:
        """The report as printed: a summary, then one line per refused name."""
        return [f"imported={self.imported} updated={self.updated} "
                f"already_there={self.already_there} refused={len(self.refused)}",
                *(f"refused {name}: another owner holds it in etcd; it was left as it is "
                  "(its owner keeps it)" for name in self.refused)]


# --- the file ---------------------------------------------------------------------------

def read_json_lines(lines: Iterable[str]) -> list[Record]:
    """The records of an export, in the file's order; blank lines are
    skipped. Raises ImportFileError naming the first bad line."""
    records: list[Record] = []
    first_line: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = record_of(json.loads(text))
        except ValueError as exc:  # InvalidRecord and JSON errors alike
            raise ImportFileError(f"line {number}: {exc}; fix or remove the line "
                                  "(nothing was imported)") from None
        if record.name in first_line:
            raise ImportFileError(f"line {number}: name {record.name!r} again (first on line "
                                  f"{first_line[record.name]}); keep one of the two "
                                  "(nothing was imported)")
        first_line[record.name] = number
        records.append(record)
    return records


def record_of(fields: Any) -> Record:
    """One line's object as a record, each field checked by the rules the
    store applies; raises InvalidRecord (a ValueError) saying what is wrong."""
    if not isinstance(fields, dict):
        raise InvalidRecord(f"expected a JSON object with {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in fields]
    unknown = sorted(set(fields) - set(FIELDS))
    if missing or unknown:
        raise InvalidRecord(f"missing {', '.join(missing)}" if missing
                            else f"unknown field {unknown[0]!r}")
    name = normalize_name(fields["name"])
    ipv4, wrong = split_addresses(_list(fields, "ipv4"))
    if wrong:
        raise InvalidRecord(f"{wrong[0]} in ipv4 is not an IPv4 address")
    wrong, ipv6 = split_addresses(_list(fields, "ipv6"))
    if wrong:
        raise InvalidRecord(f"{wrong[0]} in ipv6 is not an IPv6 address")
    if not ipv4 and not ipv6:
        raise InvalidRecord(f"no address for {name!r}")
    txt = check_txt(_list(fields, "txt"))
    owner = fields["owner"]
    if not isinstance(owner, str) or not _is_owner(owner):
        raise InvalidRecord("owner must be what the store keeps: a SHA-256 in hex, 'key:' and "
                            f"one, or {OPEN_OWNER!r} (a token never goes in an export)")
    seq, updated_ms = fields["seq"], fields["updated_ms"]
    if not _whole(seq) or not 0 <= seq <= MAX_SEQ:
        raise InvalidRecord(f"seq must be a whole number from 0 to {MAX_SEQ}")
    if not _whole(updated_ms) or updated_ms < 0:
        raise InvalidRecord("updated_ms must be a whole number of milliseconds, not negative")
    return Record(name, ipv4, ipv6, txt, owner, seq, updated_ms)


def _list(fields: dict[str, Any], key: str) -> list[Any]:
    if not isinstance(fields[key], list):
        raise InvalidRecord(f"{key} must be a list")
    return fields[key]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_owner(owner: str) -> bool:
    return (owner == OPEN_OWNER or _HASH.fullmatch(owner) is not None
            or _HASH.fullmatch(owner.removeprefix(KEY_OWNER_PREFIX)) is not None)


# --- etcd -------------------------------------------------------------------------------

async def import_records(gateway: Gateway, layout: Layout,
                         records: Iterable[Record]) -> ImportReport:
    """Import ``records`` one at a time (see the module's doc). Raises
    ImportFailed, EtcdUnavailable when no member answered
    :data:`MAX_UNANSWERED` tries, or EtcdError when etcd refused."""
    report = ImportReport()
    for record in records:
        report.count(record.name, await import_record(gateway, layout, record))
    return report


async def import_record(gateway: Gateway, layout: Layout, record: Record) -> str:
    """One record's read-decide-write rounds; returns its :class:`Outcome`."""
    key = layout.record_key(record.name)
    intended: str | None = None  # set once a write got no answer: it may have been applied
    unanswered = 0
    for _ in range(MAX_ATTEMPTS):
        try:
            answer = await gateway.txn([], [range_request(key), range_request(layout.names)], writes=False)
        except EtcdUnavailable as exc:
            unanswered = await _back_off(unanswered, exc)
            continue
        found_record, found_count = (first_kv(r) for r in answer["responses"])
        current = _stored(record.name, found_record)
        if current is not None and current == record and intended is not None:
            return intended  # the write that got no answer was applied
        if current is None:
            outcome = Outcome.IMPORTED
            compares = [unchanged(key, None), unchanged(layout.names, found_count)]
            writes = [put_request(key, record_value(record)),
                      put_request(layout.names, str(_count(layout, found_count) + 1))]
        elif not (same_owner(current.owner, record.owner)
                  or same_owner(record.owner, current.owner)):
            return Outcome.REFUSED
        elif current.seq >= record.seq:
            return Outcome.ALREADY_THERE
        else:
            outcome = Outcome.UPDATED
            compares, writes = [unchanged(key, found_record)], [put_request(key, record_value(record))]
        try:
            result = await gateway.txn(compares, writes)
        except EtcdUnavailable as exc:
            intended = outcome
            unanswered = await _back_off(unanswered, exc)
            continue
        if result.get("succeeded"):
            return outcome
    raise ImportFailed(f"{record.name}: its record or the name count changed under every one "
                       f"of {MAX_ATTEMPTS} tries; import again (names already there are "
                       "skipped), at a quieter time")


def _stored(name: str, kv: dict[str, Any] | None) -> Record | None:
    if kv is None:
        return None
    try:
        return record_from(name, unb64(kv["value"]))
    except BadValue as exc:
        raise ImportFailed(f"the value stored for {name!r} is not one this program wrote "
                           f"({exc}); repair or delete it with etcdctl, then import again "
                           "(names already there are skipped)") from None


def _count(layout: Layout, kv: dict[str, Any] | None) -> int:
    if kv is None:
        return 0
    try:
        return int(unb64(kv["value"]))
    except ValueError:
        raise ImportFailed(f"{layout.names} holds {unb64(kv['value'])[:40]!r}, not a count of "
                           "names; set it to the number of keys under "
                           f"{layout.records} with etcdctl, then import again") from None


async def _back_off(unanswered: int, exc: EtcdUnavailable) -> int:
    """A pause before asking a cluster that did not answer again (its
    members may be electing a leader), doubling up to the cap; returns the
    new count of unanswered tries. Raises ``exc`` once
    :data:`MAX_UNANSWERED` tries went unanswered."""
    unanswered += 1
    if unanswered >= MAX_UNANSWERED:
        raise exc
    low, high = RETRY_BACKOFF_S
    await asyncio.sleep(min(high, low * 2 ** unanswered))
    return unanswered


# --- the command line -------------------------------------------------------------------

def build_parser(prog: str = "mydns import") -> argparse.ArgumentParser:
    p = UsageParser(prog=prog, description="Load the records `mydns export` wrote into etcd, "
                    "owners and all; a name another owner holds there is refused and left "
                    "as it is (exit status 1).")
    flag = p.add_argument
    flag("file", metavar="FILE", help="the export, one JSON object per line ('-': standard input)")
    add_etcd_flags(p, endpoints_required=True)
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, prog: str = "mydns import") -> int:
    """The command: prints the report on ``out``; returns 0, 1 when a name
    was refused, or 2 for bad usage, a bad file, or etcd unreachable or
    refusing."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser(prog).parse_args(argv)
    try:
        options = etcd_options_from(args)
        records = _read_file(args.file)
    except (ValueError, OSError) as exc:  # ImportFileError is a ValueError
        print(f"{prog}: error: {exc}", file=err)
        return EXIT_USAGE
    try:
        report = asyncio.run(_import(options, records))
    except ImportFailed as exc:
        print(f"{prog}: error: {exc}", file=err)
        return EXIT_USAGE
    except EtcdUnavailable as exc:
        print(f"{prog}: error: no etcd member answered ({exc}); check --etcd-endpoints and "
              "that etcd runs, then import again (names already there are skipped)", file=err)
        return EXIT_USAGE
    except EtcdError as exc:
        print(f"{prog}: error: etcd refused the import: {exc.message}; fix that (credentials, "
              "space quota), then import again (names already there are skipped)", file=err)
        return EXIT_USAGE
    for line in report.lines():
        print(line, file=out)
    return EXIT_REFUSED if report.refused else 0


async def _import(options: EtcdOptions, records: list[Record]) -> ImportReport:
    try:
        gateway = Gateway(options)
    except OSError as exc:  # ssl.SSLError among them
        raise ImportFailed(f"cannot load the etcd TLS files ({exc}); check --etcd-cacert, "
                           "--etcd-cert and --etcd-key") from None
    try:
        return await import_records(gateway, Layout(options.prefix), records)
    finally:
        await gateway.close()


def _read_file(name: str) -> list[Record]:
    if name == "-":
        return read_json_lines(sys.stdin)
    try:
        with open(name, encoding="utf-8") as f:
            return read_json_lines(f)
    except OSError as exc:
        raise OSError(f"cannot read {name}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"{name} is not UTF-8 text ({exc.reason}); pass the file "
                              "`mydns export` wrote") from None
