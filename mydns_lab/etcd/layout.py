"""How the record store lies in etcd: key names under ``--etcd-prefix`` and
the JSON each value holds. JSON, not msgpack, so an operator can read and
repair the store with ``etcdctl get --prefix /mydns/`` (CoreDNS's etcd
plugin keeps JSON for the same reason). Pure.

    <prefix>records/<name>            one record (see :func:`record_value`)
    <prefix>meta/names                how many names the zone holds (--max-names)
    <prefix>tsig/<key name>           a TSIG key's replay state
    <prefix>sessions/<client>/<seq>   the result of one request, for an
                                      ambiguous retry; on a lease, so they go
"""

from __future__ import annotations

import json
from typing import Any

from ..protocol import Record
from ..records import SignedState


class BadValue(ValueError):
    """A value under the prefix that this program did not write."""


class Layout:
    def __init__(self, prefix: str) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError(f"the etcd prefix {prefix!r} must start and end with '/'")
        self.prefix = prefix
        self.records = prefix + "records/"
        self.names = prefix + "meta/names"

    def record_key(self, name: str) -> str:
        return self.records + name

    def name_of(self, key: str) -> str:
        return key[len(self.records):]

    def tsig_key(self, key_name: str) -> str:
        return f"{self.prefix}tsig/{key_name}"

    def session_key(self, client_id: int, seq: int) -> str:
        return f"{self.prefix}sessions/{client_id:x}/{seq}"


def record_value(record: Record) -> str:
    return json.dumps({"ipv4": list(record.ipv4), "ipv6": list(record.ipv6),
                       "txt": list(record.txt), "owner": record.owner, "seq": record.seq,
                       "updated_ms": record.updated_ms}, separators=(",", ":"))


def record_from(name: str, value: bytes) -> Record:
    """The record stored as ``value``; raises BadValue for anything else."""
    try:
        fields = json.loads(value)
        return Record(name, tuple(map(str, fields["ipv4"])), tuple(map(str, fields["ipv6"])),
                      tuple(map(str, fields["txt"])), str(fields["owner"]), int(fields["seq"]),
                      int(fields["updated_ms"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadValue(f"{name}: not a record ({exc})") from None


def signed_value(state: SignedState) -> str:
    return json.dumps({"time": state[0], "parts": dict(state[1])}, separators=(",", ":"))


def signed_from(value: bytes) -> SignedState:
    try:
        fields = json.loads(value)
        return int(fields["time"]), {str(k): int(v) for k, v in fields["parts"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadValue(f"not a TSIG replay state ({exc})") from None


def session_value(status: str, value: str, outcome: str) -> str:
    return json.dumps({"status": status, "value": value, "outcome": outcome})


def session_from(value: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(value)
        return {"status": str(fields["status"]), "value": str(fields["value"]),
                "outcome": str(fields["outcome"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise BadValue(f"not a session ({exc})") from None
