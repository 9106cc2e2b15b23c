"""Replay protection for TSIG-signed UPDATEs (RFC 8945 5.2.3).

A signed UPDATE captured on the LAN must not be accepted a second time:
not at the front end that saw it (its cache of MACs), not at another front
end, and not once a newer update from the same key has been accepted (the
record store keeps the last Time Signed per key, in its snapshots too).
A replay gets NOTAUTH with TSIG error BADTIME, signed, and changes
nothing; the fudge a request may choose is capped at 300 s.

The unit tests build requests with the independent signer of
tests/test_dnsfront.py (here with a choice of fudge) and run the ops a
front end plans through a :class:`KVStateMachine`, as the cluster would.
The lab tests replay what dnspython and nsupdate sent to a running lab.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass, field
from typing import Iterator

import dns.message
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from dnslib import DNSRecord

from mydns_lab import codec
from mydns_lab.core.messages import Snapshot
from mydns_lab.dns.answers import Answer, DnsFrontEnd, UpdateNeeded
from mydns_lab.dns.tsig import tsig_owner
from mydns_lab.experiments.labprocess import LabProcess
from mydns_lab.protocol import Command, KvSnapshot, Outcome, Record, RecordOp, Status
from mydns_lab.raftkv import KVStateMachine, Result
from tests.test_dnsfront import (BADTIME, KEYS, NOTAUTH, NOW, OTHER_SECRET, SECRET, MemoryView, add,
                                 check_signed, delete_name, rcode_of, update, wire)
from tests.test_real_clients import need, secret, wait_until_every_front_end

NOERROR, NXDOMAIN = 0, 3


def sign(packet: bytes, *, key: str = "laptop", secret: bytes = SECRET, when: int = NOW,
         fudge: int = 300) -> tuple[bytes, bytes]:
    """``packet`` signed as tests/test_dnsfront.py's ``sign`` does, with the
    fudge chosen by the caller; returns it and the MAC."""
    times = struct.pack("!HIH", when >> 32, when & 0xFFFFFFFF, fudge)
    variables = (wire(key) + struct.pack("!HI", 255, 0) + wire("hmac-sha256") + times
                 + struct.pack("!HH", 0, 0))
    mac = hmac.new(secret, packet + variables, hashlib.sha256).digest()
    rdata = wire("hmac-sha256") + times + struct.pack("!H", len(mac)) + mac + packet[:2] + b"\0" * 4
    rr = wire(key) + struct.pack("!HHIH", 250, 255, 0, len(rdata)) + rdata
    arcount = struct.unpack_from("!H", packet, 10)[0] + 1
    return packet[:10] + struct.pack("!H", arcount) + packet[12:] + rr, mac


# --- the front end: fudge, stamp, cache of MACs ------------------------------------------


@pytest.mark.parametrize("fudge, skew, accepted", [
    (300, 300, True), (3600, 300, True), (3600, 301, False), (65535, -3600, False),
    (60, 61, False),   # a smaller fudge than ours still rules
])
def test_the_fudge_a_request_may_choose_is_capped_at_300_s(fudge: int, skew: int,
                                                          accepted: bool) -> None:
    packet, mac = sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]), when=NOW + skew,
                       fudge=fudge)
    reply = DnsFrontEnd(view=MemoryView(), keyring=KEYS).handle(packet, tcp=False, now_s=NOW)
    if accepted:
        assert isinstance(reply, UpdateNeeded)
        return
    assert isinstance(reply, Answer) and rcode_of(reply.data) == NOTAUTH
    assert check_signed(reply.data, mac).error == BADTIME


def test_every_op_carries_the_stamp_of_its_request() -> None:
    fe = DnsFrontEnd(view=MemoryView(), keyring=KEYS)
    packet, mac = sign(update(updates=[add("gpu1.lab.mydns.", "10.0.0.1"),
                                       add("a.farm.mydns.", "10.0.0.2")]),
                       key="lab-admin", secret=OTHER_SECRET, when=NOW - 5)
    reply = fe.handle(packet, tcp=False, now_s=NOW)
    assert isinstance(reply, UpdateNeeded)
    assert [(op.name, op.tsig_key, op.tsig_time, op.tsig_mac, op.tsig_part)
            for op in reply.ops] == [("gpu1.lab", "lab-admin", NOW - 5, mac.hex(), 0),
                                     ("a.farm", "lab-admin", NOW - 5, mac.hex(), 1)]
    # The stamp travels to the servers (equality leaves it out: compare fields).
    sent = codec.decode(codec.encode(reply.ops[1]))
    assert (sent.tsig_key, sent.tsig_time, sent.tsig_mac, sent.tsig_part) == (
        "lab-admin", NOW - 5, mac.hex(), 1)


def test_the_same_update_again_at_one_front_end_is_badtime() -> None:
    fe = DnsFrontEnd(view=MemoryView(), keyring=KEYS)
    packet, mac = sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]))
    assert isinstance(fe.handle(packet, tcp=False, now_s=NOW), UpdateNeeded)
    again = fe.handle(packet, tcp=True, now_s=NOW + 7)
    assert isinstance(again, Answer) and rcode_of(again.data) == NOTAUTH
    tsig = check_signed(again.data, mac)  # signed with the key, over the request's MAC
    assert (tsig.error, tsig.time_signed) == (BADTIME, NOW)           # the request's time
    assert tsig.other == struct.pack("!HI", 0, NOW + 7)                  # and ours
    # The same change signed anew is a new message.
    fresh, _ = sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]), when=NOW + 1)
    assert isinstance(fe.handle(fresh, tcp=False, now_s=NOW + 7), UpdateNeeded)
    # A signed query may come twice: only updates change anything.
    query, _ = sign(bytes(DNSRecord.question("laptop.mydns.").pack()))
    answers = [fe.handle(query, tcp=False, now_s=NOW) for _ in range(2)]
    assert answers[0] == answers[1] and rcode_of(answers[0].data) == NXDOMAIN


def test_the_cache_of_macs_forgets_what_the_time_check_refuses_anyway() -> None:
    from mydns_lab.dns.tsig import SeenMacs

    seen = SeenMacs(max_entries=3)
    assert seen.first_sight("k", b"m1", NOW, NOW)
    assert not seen.first_sight("k", b"m1", NOW, NOW + 300)
    assert seen.first_sight("other", b"m1", NOW, NOW)      # MACs are per key
    assert seen.first_sight("k", b"m1", NOW, NOW + 301)    # NOW is outside the fudge by now
    for i in range(10):
        seen.first_sight("k", bytes([i]), NOW + 400, NOW + 301)
    assert len(seen) <= 3


@pytest.mark.parametrize("tcp", [False, True])
def test_the_store_refusing_a_replay_is_answered_badtime(tcp: bool) -> None:
    fe = DnsFrontEnd(view=MemoryView(), keyring=KEYS)
    packet, mac = sign(update(updates=[add("laptop.mydns.", "192.0.2.9")]))
    reply = fe.handle(packet, tcp=tcp, now_s=NOW + 2)
    assert isinstance(reply, UpdateNeeded)
    data = reply.finish([(Status.REPLAYED, "signed at ..., not after the last update")])
    assert rcode_of(data) == NOTAUTH
    tsig = check_signed(data, mac)
    assert (tsig.error, tsig.time_signed) == (BADTIME, NOW)           # the request's time
    assert tsig.other == struct.pack("!HI", 0, NOW + 2)                  # and ours
    assert rcode_of(reply.finish([("ok", "")])) == NOERROR  # finish stays repeatable


# --- the store: the last Time Signed per key ------------------------------------------------


def stamped(op: RecordOp, key: str, time_s: int, mac: str, part: int = 0) -> RecordOp:
    return RecordOp(op.kind, op.name, op.ipv4, op.ipv6, op.txt, op.owner, op.seq, op.since,
                    key, time_s, mac, part)


def set_op(name: str, address: str, key: str = "laptop", seq: int = 1) -> RecordOp:
    return RecordOp("record_set", name, ipv4=(address,), owner=tsig_owner(key), seq=seq)


@dataclass
class Store:
    """A state machine fed commands as the log would, one client per call."""

    machine: KVStateMachine = field(default_factory=lambda: KVStateMachine(codec))
    index: int = 0

    def __call__(self, op: RecordOp) -> str:
        self.index += 1
        result, effective = self.machine.apply(self.index, Command(self.index, 1, op))
        assert effective
        return result.status

    def addresses(self) -> dict[str, tuple[str, ...]]:
        return {name: r.ipv4 for name, r in self.machine.records.items()}


def test_every_op_of_an_accepted_message_goes_through_and_its_replay_does_not() -> None:
    store = Store()
    first = [stamped(set_op("a", "10.0.0.1"), "laptop", NOW, "m1", 0),
             stamped(set_op("b", "10.0.0.2"), "laptop", NOW, "m1", 1)]
    assert [store(op) for op in first] == [Status.OK, Status.OK]
    # A newer message moves both names on.
    assert store(stamped(set_op("a", "10.0.0.3", seq=2), "laptop", NOW + 1, "m2")) == Status.OK
    before = store.addresses()
    # The first message again, however the front end plans it now.
    assert store(first[0]) == Status.REPLAYED
    assert store(stamped(set_op("a", "10.0.0.1", seq=3), "laptop", NOW, "m1", 0)) \
        == Status.REPLAYED
    # The newest again: its first op is a part already seen.
    assert store(stamped(set_op("a", "10.0.0.3", seq=3), "laptop", NOW + 1, "m2")) \
        == Status.REPLAYED
    assert store.addresses() == before


def test_deletes_are_ordered_too() -> None:
    store = Store()
    assert store(stamped(set_op("a", "10.0.0.1"), "laptop", NOW, "m1")) == Status.OK
    delete = stamped(RecordOp("record_delete", "a", owner=tsig_owner("laptop")), "laptop",
                     NOW + 1, "m2")
    assert store(delete) == Status.OK
    assert store(stamped(set_op("a", "10.0.0.9", seq=5), "laptop", NOW + 2, "m3")) == Status.OK
    assert store(delete) == Status.REPLAYED
    assert store.addresses() == {"a": ("10.0.0.9",)}


def test_two_messages_signed_in_one_second_both_count_once() -> None:
    store = Store()
    assert store(stamped(set_op("a", "10.0.0.1"), "laptop", NOW, "m1")) == Status.OK
    assert store(stamped(set_op("a", "10.0.0.2", seq=2), "laptop", NOW, "m2")) == Status.OK
    # Replaying the first of the second rolls nothing back.
    assert store(stamped(set_op("a", "10.0.0.1", seq=3), "laptop", NOW, "m1")) \
        == Status.REPLAYED
    assert store.addresses() == {"a": ("10.0.0.2",)}


def test_keys_are_apart_and_unsigned_ops_are_not_checked() -> None:
    store = Store()
    assert store(stamped(set_op("a", "10.0.0.1"), "laptop", NOW + 100, "m1")) == Status.OK
    assert store(stamped(set_op("g", "10.0.0.2", key="admin"), "admin", NOW, "m2")) == Status.OK
    json_op = RecordOp("record_set", "j", ipv4=("10.0.0.3",), owner="token-owner")
    assert store(json_op) == Status.OK
    assert store(json_op) == Status.OK  # a JSON upload again is the seq rule's, as before


def test_a_refused_op_still_uses_up_its_time() -> None:
    """An authentic message counts even when the store refuses its op for
    another reason: replayed once the name is free, it must not claim it."""
    store = Store()
    assert store(RecordOp("record_set", "a", ipv4=("10.0.0.7",), owner="token-owner")) \
        == Status.OK
    claim = stamped(set_op("a", "10.0.0.1"), "laptop", NOW, "m1")
    assert store(claim) == Status.OWNED
    assert store(RecordOp("record_delete", "a", owner="token-owner")) == Status.OK
    assert store(claim) == Status.REPLAYED and store.addresses() == {}


def test_the_last_time_signed_travels_in_snapshots() -> None:
    store = Store()
    op = stamped(set_op("a", "10.0.0.1"), "laptop", NOW, "m1")
    store(op)
    store(stamped(set_op("b", "10.0.0.2"), "laptop", NOW, "m1", 1))
    store(stamped(set_op("g", "10.0.0.3", key="admin"), "admin", NOW - 9, "m9"))
    data = store.machine.snapshot()
    copy = KVStateMachine(codec)
    copy.restore(Snapshot(store.index, 1, data))
    assert copy.snapshot() == data
    result, effective = copy.apply(store.index + 1, Command(999, 1, op))
    assert effective and result.status == Status.REPLAYED
    # A snapshot written before the field existed restores with no times.
    old = KvSnapshot((), (Record("a", ("10.0.0.1",), owner=tsig_owner("laptop"), seq=1),), ())
    copy.restore(Snapshot(3, 1, codec.encode(old)))
    assert copy.apply(4, Command(999, 2, op))[0] == Result(Status.OK, outcome=Outcome.UPDATED)


# --- front ends and a store together ----------------------------------------------------------


class StoreView:
    """A front end's view of the store's records (always current here)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def serial(self) -> int:
        return self.store.machine.serial

    def lookup(self, name: str) -> Record | None:
        return self.store.machine.records.get(name)


def run(fe: DnsFrontEnd, store: Store, packet: bytes, now_s: int) -> bytes:
    """What the service does with a packet: ops through the store in order,
    stopping at the first failure."""
    reply = fe.handle(packet, tcp=False, now_s=now_s)
    if isinstance(reply, Answer):
        return reply.data
    assert isinstance(reply, UpdateNeeded)
    results: list[tuple[str, str]] = []
    for op in reply.ops:
        store.index += 1
        result, _ = store.machine.apply(store.index, Command(store.index, 1, op))
        results.append((result.status, result.value))
        if result.status != Status.OK:
            break
    return reply.finish(results)


def badtime(data: bytes, request_mac: bytes) -> bool:
    """Whether ``data`` is NOTAUTH, signed by lab-admin, with TSIG error BADTIME."""
    return (rcode_of(data) == NOTAUTH
            and check_signed(data, request_mac, OTHER_SECRET).error == BADTIME)


def test_a_replay_at_another_front_end_changes_nothing() -> None:
    store = Store()
    first_fe, second_fe = (DnsFrontEnd(view=StoreView(store), keyring=KEYS) for _ in range(2))
    two_names, mac = sign(update(updates=[add("gpu1.lab.mydns.", "10.0.0.1"),
                                          add("a.farm.mydns.", "10.0.0.2")]),
                          key="lab-admin", secret=OTHER_SECRET)
    assert rcode_of(run(first_fe, store, two_names, NOW)) == NOERROR
    assert store.addresses() == {"gpu1.lab": ("10.0.0.1",), "a.farm": ("10.0.0.2",)}
    # The owner deletes a name; the capture, sent to another front end,
    # would bring it back.
    newer, newer_mac = sign(update(updates=[delete_name("a.farm.mydns.")]), key="lab-admin",
                            secret=OTHER_SECRET, when=NOW + 1)
    assert rcode_of(run(first_fe, store, newer, NOW + 1)) == NOERROR
    assert badtime(run(second_fe, store, two_names, NOW + 2), mac)
    assert store.addresses() == {"gpu1.lab": ("10.0.0.1",)}
    # The delete again: the front end that took it knows its MAC; another
    # plans nothing from it (a.farm is gone), so it answers at once, and
    # nothing changes either way.
    assert badtime(run(first_fe, store, newer, NOW + 2), newer_mac)
    assert rcode_of(run(second_fe, store, newer, NOW + 2)) == NOERROR
    assert store.addresses() == {"gpu1.lab": ("10.0.0.1",)}
    # Once the name is back, the delete would change something: the store
    # refuses it, at a front end that never saw it.
    again, _ = sign(update(updates=[add("a.farm.mydns.", "10.0.0.3")]), key="lab-admin",
                    secret=OTHER_SECRET, when=NOW + 3)
    assert rcode_of(run(first_fe, store, again, NOW + 3)) == NOERROR
    third_fe = DnsFrontEnd(view=StoreView(store), keyring=KEYS)
    assert badtime(run(third_fe, store, newer, NOW + 4), newer_mac)
    assert store.addresses() == {"gpu1.lab": ("10.0.0.1",), "a.farm": ("10.0.0.3",)}


# --- against a running lab ----------------------------------------------------------------


LAB_KEYS = """\
laptop   {laptop}
admin    {admin}   gpu1.lab *.lab
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabProcess]:
    folder = tmp_path_factory.mktemp("replay")
    keys = folder / "keys.txt"
    keys.write_text(LAB_KEYS.format(laptop=secret("laptop"), admin=secret("admin")))
    keys.chmod(0o600)
    with LabProcess(folder / "data", "--keys", str(keys), nservers=3, nclerks=2, seed=11) as lab:
        yield lab


def _send_raw(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.sendto(data, ("127.0.0.1", port))
        return sock.recvfrom(65535)[0]


def _stored(lab: LabProcess, name: str) -> str | list[str]:
    """The name's value as the cluster holds it (a read through the leader)."""
    return lab.call(0, {"Type": "Query", "Key": name})["Value"]


def _badtime(data: bytes, keyring: dict, request_mac: bytes) -> None:
    assert dns.message.from_wire(data, keyring=False).rcode() == dns.rcode.NOTAUTH
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(data, keyring=keyring, request_mac=request_mac)


@pytest.mark.lab
def test_a_replayed_dnspython_update_changes_nothing(lab: LabProcess) -> None:
    keyring = dns.tsigkeyring.from_text({"admin": secret("admin")})

    def signed(*changes: tuple[str, str, str]) -> tuple[bytes, bytes]:
        msg = dns.update.UpdateMessage("mydns.", keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
        for verb, name, address in changes:
            if verb == "replace":
                msg.replace(name, 60, "A", address)
            else:
                msg.delete(name)
        return msg.to_wire(), msg.mac

    def sent(port: int, data: bytes, mac: bytes) -> int:
        reply = _send_raw(port, data)
        return dns.message.from_wire(reply, keyring=keyring, request_mac=mac).rcode()

    first = signed(("replace", "gpu1.lab", "10.50.0.1"), ("replace", "b.lab", "10.50.0.2"))
    assert sent(lab.port, *first) == dns.rcode.NOERROR       # two names: both ops go through
    assert (_stored(lab, "gpu1.lab"), _stored(lab, "b.lab")) == ("10.50.0.1", "10.50.0.2")
    # Front ends plan from their copy of the records: let each catch up.
    wait_until_every_front_end(lab, "b.lab.mydns.", "A", ["10.50.0.2"])
    second = signed(("replace", "gpu1.lab", "10.50.0.3"), ("delete", "b.lab", ""))
    assert sent(lab.port, *second) == dns.rcode.NOERROR
    wait_until_every_front_end(lab, "gpu1.lab.mydns.", "A", ["10.50.0.3"])
    third = signed(("replace", "gpu1.lab", "10.50.0.4"), ("replace", "b.lab", "10.50.0.5"))
    assert sent(lab.port + 1, *third) == dns.rcode.NOERROR
    wait_until_every_front_end(lab, "b.lab.mydns.", "A", ["10.50.0.5"])
    # Each capture, at the front end that saw it and at the other one (but
    # the last there: it would change nothing, and is answered at once).
    for data, mac in (first, second):
        for port in (lab.port, lab.port + 1):
            _badtime(_send_raw(port, data), keyring, mac)
    _badtime(_send_raw(lab.port + 1, third[0]), keyring, third[1])
    assert (_stored(lab, "gpu1.lab"), _stored(lab, "b.lab")) == ("10.50.0.4", "10.50.0.5")


class Relay:
    """A UDP hop between nsupdate and a front end that keeps a copy of
    every UPDATE it passes on; ``twice``: it sends each UPDATE on a second
    time (a replay) and hands nsupdate the answer to that."""

    def __init__(self, port: int, twice: bool = False) -> None:
        self.port = port
        self.twice = twice
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.updates: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                data, client = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            is_update = len(data) > 2 and (data[2] >> 3) & 0xF == 5
            if is_update:
                self.updates.append(data)
            try:
                reply = _send_raw(self.port, data)
                if is_update and self.twice:
                    reply = _send_raw(self.port, data)
                self.sock.sendto(reply, client)
            except socket.timeout:
                pass

    def __enter__(self) -> Relay:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.mark.lab
def test_a_replayed_nsupdate_changes_nothing(lab: LabProcess) -> None:
    binary = need("nsupdate")
    keyring = dns.tsigkeyring.from_text({"laptop": secret("laptop")})

    def nsupdate(port: int, *updates: str) -> subprocess.CompletedProcess:
        script = "\n".join([f"server 127.0.0.1 {port}", "zone mydns.", *updates, "send", ""])
        return subprocess.run([binary, "-t", "5", "-y", f"hmac-sha256:laptop:{secret('laptop')}"],
                              input=script, capture_output=True, text=True, timeout=30)

    with Relay(lab.port) as relay:
        done = nsupdate(relay.address[1], "update add laptop.mydns. 60 A 10.60.0.1")
    assert done.returncode == 0, done.stdout + done.stderr
    (captured,) = relay.updates
    wait_until_every_front_end(lab, "laptop.mydns.", "A", ["10.60.0.1"])
    done = nsupdate(lab.port, "update delete laptop.mydns. A",
                    "update add laptop.mydns. 60 A 10.60.0.2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _stored(lab, "laptop") == "10.60.0.2"
    wait_until_every_front_end(lab, "laptop.mydns.", "A", ["10.60.0.2"])
    request_mac = dns.message.from_wire(captured, keyring=keyring).mac
    for port in (lab.port, lab.port + 1):
        _badtime(_send_raw(port, captured), keyring, request_mac)
    assert _stored(lab, "laptop") == "10.60.0.2"
    # What nsupdate says of a replay's answer (its update did go through).
    with Relay(lab.port + 1, twice=True) as relay:
        done = nsupdate(relay.address[1], "update add laptop.mydns. 60 A 10.60.0.3")
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "update failed: NOTAUTH(BADTIME)" in output, output
    assert _stored(lab, "laptop") == ["10.60.0.2", "10.60.0.3"]
