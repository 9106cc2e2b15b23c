"""What ``put.py`` does: keep this machine's name pointing at its addresses.

    python put.py [NAME] [--ip ADDR ...] [--server HOST:PORT ...] [--once]
                  [--interval SECONDS] [--deadline SECONDS] [--token-file PATH]
                  [--zone ZONE]

Each upload is one JSON ``Put`` (see :mod:`mydns_lab.service.jsonfront`) carrying the
name, the addresses, a sequence number and either the token or a signature:

* **Token (the claim).** The first upload of a name sends a token made here
  (``secrets.token_urlsafe``), and a Put whose token is new claims a free
  name for that token. The token is written to the token file *before* the
  Put leaves, so an upload whose answer was lost can be retried with the
  same token: if it had claimed the name, the retry is the owner's and
  succeeds. A token that might own its name is never dropped: a refusal
  with ``Code`` ``owned`` keeps it (a reply proves nothing, and a lost
  earlier upload may have claimed the name), and the next run tries again.
* **Signature (every later upload).** Once an upload with the token
  succeeded (``confirmed``), the token is never sent again: each upload
  carries ``Mac``, :func:`mydns_lab.records.put_mac` keyed by
  ``json_owner(token)``, over zone, name, addresses and ``Seq``, so a
  captured upload sets no other value or name, and once a newer one is
  stored it is stale. If the service answers ``unknown_name`` (the name
  was released unrefreshed, or the store started afresh), the name is
  claimed again with a *new* token, kept beside the old one until its
  claim succeeds (:meth:`Uploader.upload`).
* **Sequence number.** The wall clock in milliseconds, but never below the
  last one used for the name plus one (kept in the token file), so uploads
  from this machine only move forward and the store refuses a stale one.
  Every retry of one upload (other front end, second round) re-sends the
  same request: same token, same ``Seq``.

The token file (default ``$XDG_CONFIG_HOME/mydns/tokens.json`` or
``~/.config/mydns/tokens.json``; mode 0600, its folder created 0700) maps a
fully qualified name to ``{"token": T, "seq": N, "confirmed": bool}`` (with
``"reclaim": T2`` while a new token claims the name again); a hand-written
``{"laptop.mydns.": "T"}`` is accepted too and counts as confirmed (add
``"confirmed": false`` to a hand-written token that is to claim a new name).

Replies are read on a connected socket and must carry the request's
``Id`` (:func:`mydns_lab.clients.jsonclient.json_call`); anything else is
skipped while the wait for the real reply goes on.

Front ends are tried in the order given, each once per round for at most
``--timeout`` seconds (4: longer than the 3 s a front end waits for its
cluster, so its ``unavailable`` answer comes back), for two rounds; an
error with ``Code`` ``unavailable`` (the cluster did not answer it in
time) moves on like no answer. An upload that no front end took is tried
again, after a pause, until ``--deadline`` seconds (10) have passed since
it began (so ``--once`` right after the service starts succeeds); then its
line says whether no front end answered (is the service running?) or the
front ends answered but their cluster did not (too few servers up: DNS
goes on answering the last records). Every upload prints one line: the
outcome on stdout, or ``error: ...`` on stderr. Exit status: 0 uploaded,
1 refused, 2 no front end or cluster answered, or bad usage.

**Replies are read by their fields, never their wording**: ``Type``
(``PutOk`` or ``Error``), an error's ``Code`` and a PutOk's ``Outcome``.
The line says "claimed" when the upload carried a token (a lost answer
may have claimed the name) or ``Outcome`` is ``claimed``, else "updated".
An error without a ``Code`` (a front end older than the codes,
or not MyDNS) cannot be told apart, so it is a refusal whose line says so.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

import psutil

from ..cmdline import EXIT_USAGE, UsageParser
from ..records import (MAX_ADDRESSES_PER_FAMILY, InvalidRecord, json_owner, normalize_name,
                       put_mac, split_addresses)
from .cli import DEFAULT_ZONE, UsageError, front_ends, write_atomically, zone_of
from .putservice import install, put_unit, unit_dir
from .jsonclient import NoAnswer, Server, json_call, server_text

TRY_TIMEOUT_S = 4.0          # > the front end's 3 s wait for its cluster (PUT_TIMEOUT_S)
ROUNDS = 2
DEADLINE_S = 10.0
FIRST_PAUSE_S, MAX_PAUSE_S = 0.25, 2.0   # between tries of an upload no one took
DEFAULT_INTERVAL_S = 60.0
ADDRESS_POLL_S = 5.0        # how often the loop looks for an address change
RETRY_AFTER_S = 5.0         # after no front end answered, in the loop
BRIDGE_PREFIXES = ("docker", "br-", "veth", "virbr", "cni", "flannel")
TOKEN_BYTES = 24

EXIT_OK, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2

# The reply fields put.py acts on (their values: docs/service.md, mydns_lab/service/jsonfront.py)
CODE_OWNED, CODE_UNAVAILABLE, CODE_NO_SPACE = "owned", "unavailable", "nospace"
CODE_BAD_SIGNATURE, CODE_UNKNOWN_NAME = "bad_signature", "unknown_name"
OUTCOME_CLAIMED = "claimed"

JsonCall = Callable[[Server, dict[str, Any], float, int], dict[str, Any]]


# --- the name and the addresses ----------------------------------------------------------

def hostname_label(hostname: str) -> str:
    """This machine's host name as one DNS label: the part before the first
    dot, lower-case, characters other than ``a-z 0-9 -`` made ``-``, no
    ``-`` at either end, at most 63 octets; ``host`` if nothing is left."""
    label = re.sub(r"[^a-z0-9-]", "-", hostname.split(".")[0].lower()).strip("-")
    return label[:63].strip("-") or "host"


def relative_name(text: str, zone: str) -> str:
    """NAME as the store keeps it (relative to the zone). A name ending in
    a dot is fully qualified and must lie inside the zone."""
    name = text.strip().lower()
    if name.endswith("."):
        if not name.endswith("." + zone):
            raise UsageError(f"{text!r} is not inside the zone {zone}; give the name without "
                             "a trailing dot, or pass --zone")
        name = name[:-len(zone) - 1]
    try:
        return normalize_name(name)
    except InvalidRecord as exc:
        raise UsageError(f"bad name {text!r}: {exc}") from None


def machine_addresses(interfaces: Mapping[str, Iterable[Any]] | None = None) -> list[str]:
    """Every IPv4 and IPv6 address of this machine's interfaces
    (``psutil.net_if_addrs()`` unless given), in canonical order, leaving out
    loopback, link-local, multicast and unspecified addresses and container
    bridges (interfaces named ``docker*``, ``br-*``, ``veth*``, ``virbr*``,
    ``cni*``, ``flannel*``). A name holds at most MAX_ADDRESSES_PER_FAMILY
    of each family: beyond that (IPv6 privacy addresses pile up) the first
    in that order are kept."""
    if interfaces is None:
        interfaces = psutil.net_if_addrs()
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for interface, addresses in interfaces.items():
        if interface == "lo" or interface.startswith(BRIDGE_PREFIXES):
            continue
        for entry in addresses:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            try:
                address = ipaddress.ip_address(entry.address.split("%")[0])
            except ValueError:
                continue
            if not (address.is_loopback or address.is_link_local or address.is_multicast
                    or address.is_unspecified):
                found.add(address)
    kept = []
    for version in (4, 6):
        family = sorted(a for a in found if a.version == version)  # type: ignore[type-var]
        kept += [str(a) for a in family[:MAX_ADDRESSES_PER_FAMILY]]
    return kept


def checked_addresses(texts: list[str]) -> list[str]:
    """``--ip`` values in canonical order; UsageError naming a bad one."""
    try:
        v4, v6 = split_addresses(texts)
    except InvalidRecord as exc:
        raise UsageError(f"--ip: {exc}") from None
    return list(v4 + v6)


# --- the token file ----------------------------------------------------------------------

def default_token_file(environ: Mapping[str, str] = os.environ) -> Path:
    config = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "mydns" / "tokens.json"


def shown_path(path: Path) -> str:
    """``path`` for messages, with the home folder written ``~``."""
    try:
        return "~/" + str(path.resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    token: str
    seq: int = 0               # the last sequence number sent for the name
    confirmed: bool = True     # an upload with this token succeeded
    reclaim: str = ""          # a new token claiming the name again (see Uploader.upload)


class TokenStore:
    """The token file. Each :meth:`save` rewrites it whole (temporary file,
    fsync, rename), mode 0600, under a lock; a missing folder is created
    0700."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, fqdn: str) -> TokenEntry | None:
        return self._load().get(fqdn)

    def save(self, fqdn: str, entry: TokenEntry) -> None:
        with self._locked():
            entries = self._load()
            entries[fqdn] = entry
            self._write(entries)

    def forget(self, fqdn: str) -> None:
        with self._locked():
            entries = self._load()
            if entries.pop(fqdn, None) is not None:
                self._write(entries)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold ``<file>.lock``: two put.py runs sharing the file (a daemon
        and a --once for another name) must not lose each other's entries."""
        self._make_folder()
        fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _make_folder(self) -> None:
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
            folder.chmod(0o700)  # mkdir's mode is filtered by the umask

    def _load(self) -> dict[str, TokenEntry]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the token file {self.path}: {exc}; fix or move "
                             "it") from None
        if not isinstance(raw, dict):
            raise UsageError(f"{self.path} is not a token file (expected a JSON object of "
                             "name -> token); fix or move it")
        return {name: _entry_from(self.path, name, value) for name, value in raw.items()}

    def _write(self, entries: dict[str, TokenEntry]) -> None:
        data = {name: {"token": e.token, "seq": e.seq, "confirmed": e.confirmed,
                       **({"reclaim": e.reclaim} if e.reclaim else {})}
                for name, e in sorted(entries.items())}
        write_atomically(self.path, json.dumps(data, indent=2) + "\n", 0o600)


def _entry_from(path: Path, name: str, value: Any) -> TokenEntry:
    if isinstance(value, str) and value:
        return TokenEntry(value)
    if isinstance(value, dict) and isinstance(value.get("token"), str) and value["token"]:
        seq, confirmed = value.get("seq", 0), value.get("confirmed", True)
        reclaim = value.get("reclaim", "")
        if (isinstance(seq, int) and not isinstance(seq, bool) and isinstance(confirmed, bool)
                and isinstance(reclaim, str)):
            return TokenEntry(value["token"], max(seq, 0), confirmed, reclaim)
    raise UsageError(f"{path}: the entry for {name!r} is not a token (expected \"TOKEN\" or "
                     "{\"token\": \"TOKEN\"}); fix or move the file")


def next_seq(last_seq: int, now_ms: int) -> int:
    """The wall clock in ms, but always after the last number used."""
    return max(now_ms, last_seq + 1)


# --- one upload --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class UploadResult:
    """What one upload came to: the exit status and the line to print."""

    exit_code: int     # EXIT_OK, EXIT_REFUSED or EXIT_NO_ANSWER
    line: str          # the one line to print (stdout when OK, stderr otherwise)


def _transient(reply: dict[str, Any]) -> bool:
    """A front end's error that another front end (or a second try) may not
    give: the cluster did not answer it in time (the upload may or may not
    have been applied, so re-sending the same request is safe)."""
    return reply.get("Type") == "Error" and reply.get("Code") == CODE_UNAVAILABLE


@dataclass
class _NotTaken:
    """Why no front end took a request: each failed try, and whether a
    front end answered that its cluster did not (``unavailable``)."""
    problems: list[str] = field(default_factory=list)
    cluster_silent: bool = False


class Uploader:
    """Uploads one name's addresses; owns the name's token file entry.

    ``call`` is :func:`json_call` (a fake in tests), ``clock_ms`` the wall
    clock in milliseconds, ``monotonic`` and ``sleep`` time the retries
    of a request no front end took, for up to ``deadline_s``.
    """

    def __init__(self, name: str, zone: str, servers: list[Server], store: TokenStore,
                 try_timeout_s: float = TRY_TIMEOUT_S, call: JsonCall = json_call,
                 clock_ms: Callable[[], int] = lambda: int(time.time() * 1000), *,
                 deadline_s: float = DEADLINE_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        assert servers, "at least one front end"
        self.name, self.zone, self.fqdn = name, zone, f"{name}.{zone}"
        self.servers = servers
        self.store = store
        self.try_timeout_s = try_timeout_s
        self.deadline_s = deadline_s
        self._call = call
        self._clock_ms = clock_ms
        self._monotonic = monotonic
        self._sleep = sleep

    def upload(self, addresses: list[str]) -> UploadResult:
        """Send ``addresses`` for the name; never raises for the network.

        A confirmed token is never sent: the upload is signed with it
        (``Mac``). Only when the service says the name does not exist
        (``unknown_name``: released unrefreshed, or a store started
        afresh) is it claimed again, with a *new* token (``reclaim``), so
        that a forged ``unknown_name`` draws out nothing that owns the name.
        Both tokens stay in the file until the new one's claim succeeds (the
        name is then the new one's, so the old one owns nothing); while
        both are kept, a ``bad_signature`` for the old one (the new claim's
        answer was lost, or its ``owned`` forged) sends the new one again.
        Replies are not signed, so a forger on the path who fakes both an
        ``unknown_name`` and that claim's PutOk can make put.py drop the old
        token; such a forger can as well drop every upload until the name
        expires."""
        entry = self.store.get(self.fqdn) or TokenEntry(secrets.token_urlsafe(TOKEN_BYTES),
                                                        confirmed=False)
        entry = replace(entry, seq=next_seq(entry.seq, self._clock_ms()))
        self.store.save(self.fqdn, entry)  # persist before the Put can claim anything
        value: str | list[str] = addresses[0] if len(addresses) == 1 else addresses
        put = {"Type": "Put", "Key": self.name, "Value": value, "Seq": entry.seq}
        shown = ", ".join(addresses)
        if not entry.confirmed:
            return self._claim(entry, entry.token, put, shown)
        mac = put_mac(json_owner(entry.token), self.zone, self.name, addresses, entry.seq)
        answered = self._send({**put, "Mac": mac})
        if isinstance(answered, _NotTaken):
            return UploadResult(EXIT_NO_ANSWER, self._no_answer_line(entry, answered))
        server, reply = answered
        if reply.get("Type") == "PutOk":  # a reclaim token stays: a PutOk proves nothing
            return self._succeeded(entry, server, shown, reply.get("Outcome"))
        code = reply.get("Code")
        if code == CODE_UNKNOWN_NAME or (code == CODE_BAD_SIGNATURE and entry.reclaim):
            entry = replace(entry, reclaim=entry.reclaim or secrets.token_urlsafe(TOKEN_BYTES))
            self.store.save(self.fqdn, entry)  # persist before the claim leaves
            return self._claim(entry, entry.reclaim, put, shown)
        return self._refused(entry, server, reply)

    def _claim(self, entry: TokenEntry, token: str, put: dict[str, Any],
               shown: str) -> UploadResult:
        """``put`` carrying ``token`` (the entry's unconfirmed token or its
        ``reclaim``): a claim, or the owner's update if a lost earlier
        upload with it had claimed the name. On success ``token`` is the
        entry's confirmed token, alone."""
        answered = self._send({**put, "Token": token})
        if isinstance(answered, _NotTaken):
            return UploadResult(EXIT_NO_ANSWER, self._no_answer_line(entry, answered))
        server, reply = answered
        if reply.get("Type") != "PutOk":
            return self._refused(entry, server, reply)
        self.store.save(self.fqdn, TokenEntry(token, entry.seq, True))
        return UploadResult(EXIT_OK, f"{self.fqdn} -> {shown} (claimed via "
                                     f"{server_text(server)}; token saved to "
                                     f"{shown_path(self.store.path)})")

    def _send(self, request: dict[str, Any]) -> tuple[Server, dict[str, Any]] | _NotTaken:
        """The first front end's reply that is not ``unavailable``, with that
        front end: each in turn for ROUNDS rounds, then again after a pause
        (FIRST_PAUSE_S, doubling up to MAX_PAUSE_S), until ``deadline_s``
        has passed since the first try; else why no front end took it."""
        give_up = self._monotonic() + self.deadline_s
        not_taken = _NotTaken()
        pause = FIRST_PAUSE_S
        while True:
            for _ in range(ROUNDS):
                for server in self.servers:
                    remaining = give_up - self._monotonic()
                    if remaining <= 0:
                        return not_taken
                    reply = self._try(server, request, min(self.try_timeout_s, remaining),
                                      not_taken)
                    if reply is not None:
                        return server, reply
            remaining = give_up - self._monotonic()
            if remaining <= 0:
                return not_taken
            self._sleep(min(pause, remaining))
            pause = min(2 * pause, MAX_PAUSE_S)

    def _try(self, server: Server, request: dict[str, Any], timeout_s: float,
             not_taken: _NotTaken) -> dict[str, Any] | None:
        """The front end's reply, or None (noted in ``not_taken``) when it
        gave none or asked to try again."""
        try:
            reply = self._call(server, request, timeout_s, 1)
        except NoAnswer as exc:  # silence, or an answer that is not JSON
            not_taken.problems.append(str(exc))
            return None
        except OSError as exc:  # e.g. no route to that host
            not_taken.problems.append(f"{server_text(server)}: {exc.strerror or exc}")
            return None
        if _transient(reply):
            not_taken.problems.append(f"{server_text(server)}: {reply.get('Error', reply)}")
            not_taken.cluster_silent = True
            return None
        return reply

    def _succeeded(self, entry: TokenEntry, server: Server, shown: str,
                   reply_outcome: object) -> UploadResult:
        """The line for a PutOk of a signed upload; ``reply_outcome`` is its
        ``Outcome`` (None from a front end older than the field)."""
        via = server_text(server)
        if reply_outcome != OUTCOME_CLAIMED:
            return UploadResult(EXIT_OK, f"{self.fqdn} -> {shown} (updated via {via})")
        return UploadResult(EXIT_OK, f"{self.fqdn} -> {shown} (claimed via {via}; token saved "
                                     f"to {shown_path(self.store.path)})")

    def _refused(self, entry: TokenEntry, server: Server, reply: dict[str, Any]) -> UploadResult:
        """The line for a refusal, decided by the reply's ``Code``."""
        reason = str(reply.get("Error", reply))
        code = reply.get("Code")
        if code == CODE_OWNED:
            # A token that might own the name is never dropped: a reply proves
            # nothing (anyone on the path can forge one), and had a lost
            # earlier upload claimed the name with it, losing it loses the name.
            kept = ("" if entry.confirmed and not entry.reclaim else
                    f" (the new token stays in {shown_path(self.store.path)}; the next run "
                    "tries it again)")
            return UploadResult(EXIT_REFUSED, f"error: name \"{self.name}\" is owned by another "
                                              "key; pass --token-file with its token or choose "
                                              f"another name{kept}")
        if code == CODE_BAD_SIGNATURE:
            return UploadResult(EXIT_REFUSED, f"error: {server_text(server)} did not accept the "
                                              f"signature of the upload of {self.fqdn}: the name "
                                              "is owned by another key than the token in "
                                              f"{shown_path(self.store.path)} (released and "
                                              "claimed anew?), or the upload was changed on the "
                                              f"way ({reason}); pass --token-file with its token "
                                              "or choose another name")
        if code is None:
            # Without a Code the refusal cannot be told from a transient one
            # or an ownership one, so say so rather than guess from the words.
            return UploadResult(EXIT_REFUSED, f"error: {server_text(server)} refused the upload "
                                              f"of {self.fqdn} without a Code, so put.py cannot "
                                              f"tell why (an older MyDNS front end?): {reason}; "
                                              "update the service or pass --server with a "
                                              "current one")
        if code == CODE_NO_SPACE:
            return UploadResult(EXIT_REFUSED, f"error: {self.fqdn} not updated: the service's "
                                              "disk is full and it takes no writes until its "
                                              f"operator frees space ({reason})")
        return UploadResult(EXIT_REFUSED, f"error: {self.fqdn} refused: {reason}")

    def _no_answer_line(self, entry: TokenEntry, not_taken: _NotTaken) -> str:
        kept = ("" if entry.confirmed else
                f"; its token stays in {shown_path(self.store.path)}, so the next run "
                "is safe even if this upload claimed the name")
        if not_taken.cluster_silent:
            # Say what is wrong: the front ends are up, their Raft cluster has
            # no majority; DNS answers go on from the front ends' copies.
            return (f"error: the upload of {self.fqdn} was not taken within "
                    f"{self.deadline_s:g} s: the front ends answer, but the service's cluster "
                    "does not (fewer than a majority of its servers are up or reachable); DNS "
                    "goes on answering the last records. Try again once the servers are "
                    f"back{kept}")
        tried = "; ".join(dict.fromkeys(not_taken.problems))
        return (f"error: no front end answered the upload of {self.fqdn} within "
                f"{self.deadline_s:g} s ({tried}); is the service running (sh run_dns.sh)? "
                f"Pass --server HOST:PORT to use others{kept}")


# --- the loop ----------------------------------------------------------------------------

def run(uploader: Uploader, addresses: Callable[[], list[str]], once: bool,
        interval_s: float, out: TextIO, err: TextIO,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> int:
    """Upload now, then whenever the addresses change and every
    ``interval_s`` as a heartbeat, until a refusal (returns 1). With
    ``once``: upload one time and return its exit status."""
    last: list[str] | None = None
    due = monotonic()
    said_none = False
    while True:
        current = addresses()
        now = monotonic()
        if not current:
            if once:
                print("error: found no address to upload (loopback, link-local and container "
                      "bridges are left out); pass --ip ADDR", file=err, flush=True)
                return EXIT_USAGE
            if not said_none:
                print("no address on this machine's interfaces; waiting for one",
                      file=err, flush=True)
                said_none = True
            sleep(ADDRESS_POLL_S)
            continue
        if current != last or now >= due:
            said_none = False
            outcome = uploader.upload(current)
            print(outcome.line, file=out if outcome.exit_code == EXIT_OK else err, flush=True)
            if once or outcome.exit_code == EXIT_REFUSED:
                return outcome.exit_code
            if outcome.exit_code == EXIT_OK:
                last, due = current, now + interval_s
            else:
                due = now + min(interval_s, RETRY_AFTER_S)
        sleep(max(0.0, min(ADDRESS_POLL_S, due - monotonic())))


# --- command line ------------------------------------------------------------------------

def _install_service(args: argparse.Namespace, zone: str, name: str,
                     environ: Mapping[str, str] = os.environ) -> str:
    """``--install-service``: the unit for this command line, written."""
    scope = args.install_service
    if scope == "auto":
        scope = "system" if os.geteuid() == 0 else "user"
    put_args = [*(a for server in args.server for a in ("--server", server)),
                *(a for ip in args.ip for a in ("--ip", ip)),
                "--zone", zone, "--interval", f"{args.interval:g}",
                "--token-file", str((args.token_file or default_token_file(environ)).absolute())]
    unit = put_unit(scope, unit_dir(scope, environ), f"{name}.{zone}", name, put_args)
    return install(unit)


def build_parser(prog: str = "put.py") -> argparse.ArgumentParser:
    p = UsageParser(prog=prog, description="Point NAME.<zone> at this machine's addresses "
                    "in MyDNS, and keep it pointed there.")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="the name to claim (default: this machine's host name)")
    p.add_argument("--ip", action="append", default=[], metavar="ADDR",
                   help="an address to upload (repeatable; default: every address of this "
                        "machine's interfaces but loopback, link-local and container bridges)")
    p.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                   help="a front end, tried in order (repeatable; default: 127.0.0.1:9876 "
                        "to 127.0.0.1:9880)")
    p.add_argument("--once", action="store_true", help="upload once and exit")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                   help="heartbeat: upload again this often (60)")
    p.add_argument("--token-file", type=Path, default=None, metavar="PATH",
                   help="where tokens are kept (default: ~/.config/mydns/tokens.json)")
    p.add_argument("--zone", default=DEFAULT_ZONE, help="the service's zone (mydns.)")
    p.add_argument("--timeout", type=float, default=TRY_TIMEOUT_S, metavar="SECONDS",
                   help="how long to wait for one front end's answer (4: more than the 3 s "
                        "a front end waits for its cluster)")
    p.add_argument("--deadline", type=float, default=DEADLINE_S, metavar="SECONDS",
                   help="how long to keep trying an upload no front end took (10)")
    p.add_argument("--install-service", nargs="?", const="auto", choices=["user", "system", "auto"],
                   metavar="user|system",
                   help="write a systemd unit that runs this command (without --once) at "
                        "every boot or login, and say how to start it (default: system as "
                        "root, else user); uploads nothing")
    return p


def main(argv: list[str] | None = None, out: TextIO | None = None,
         err: TextIO | None = None, prog: str = "put.py") -> int:
    """The command; returns the exit status. Prints to ``out``/``err``
    (default: the streams current at the call); ``prog`` names it in usage
    and errors (``mydns put`` when run as a subcommand)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    args = build_parser(prog).parse_args(argv)
    try:
        if min(args.interval, args.timeout, args.deadline) <= 0:
            raise UsageError("--interval, --timeout and --deadline must be positive")
        zone = zone_of(args.zone)
        name = relative_name(args.name if args.name else hostname_label(socket.gethostname()),
                             zone)
        servers = front_ends(args.server)
        fixed = checked_addresses(args.ip) if args.ip else None
        if args.install_service:
            print(_install_service(args, zone, name), file=out)
            return EXIT_OK
        store = TokenStore(args.token_file or default_token_file())
        uploader = Uploader(name, zone, servers, store, args.timeout, deadline_s=args.deadline)
        return run(uploader, (lambda: fixed) if fixed else machine_addresses, args.once,
                   args.interval, out, err)
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
