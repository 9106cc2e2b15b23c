"""Issue 11, defect 4: put.py believed forged replies, and its token was a
password sent in clear with every upload.

Two halves, no lab:

* the client: :func:`json_call` and put.py's :class:`Uploader` on real
  loopback sockets against a scripted server that sends forgeries first
  (from another port, without the ``Id``, with another ``Id``, not JSON)
  and the real reply last, so every outcome is known when the call returns;
* the front end: :class:`JsonFrontEnd` on a real :class:`KVStateMachine`
  (the ``EncodingStore`` of the hostile-JSON tests), taking signed Puts
  (``Mac``, :func:`mydns_lab.records.put_mac`), and put.py against it over
  UDP, to show what travels after the claim.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from pathlib import Path
from typing import Any, Callable

import pytest

from mydns_lab.admission import Admission, AdmissionPolicy, TrustedSources
from mydns_lab.clients.jsonclient import NoAnswer, json_call
from mydns_lab.clients.put import EXIT_OK, EXIT_REFUSED, TokenEntry, TokenStore, Uploader
from mydns_lab.dns.tsig import tsig_owner
from mydns_lab.net.recordcopy import RecordCache
from mydns_lab.protocol import RecordOp
from mydns_lab.records import json_owner, put_mac
from mydns_lab.net.jsonwire import MAX_SMALL_REPLY_BYTES
from mydns_lab.service.jsonfront import JsonFrontEnd
from mydns_lab.service.settings import FrontEndCounters
from tests.test_json_hostile import EncodingStore

TOKEN = "owner-token"
OWNER = json_owner(TOKEN)


# --- a UDP server on loopback that answers from a script ---------------------------------

class ScriptedServer:
    """A UDP server on a loopback port, its own thread: for each datagram,
    ``answer(request, client address)`` returns what to send back, in
    order: (True, bytes) from this server's socket, (False, bytes) from
    another socket (another port: a forgery). Records every datagram."""

    def __init__(self, answer: Callable[[dict[str, Any], Any], list[tuple[bool, bytes]]]) -> None:
        self.answer = answer
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.forger.bind(("127.0.0.1", 0))
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            data, client = self.sock.recvfrom(65535)
            if self._stopping:
                return
            self.received.append(data)
            for own, reply in self.answer(json.loads(data), client):
                (self.sock if own else self.forger).sendto(reply, client)

    def close(self) -> None:
        self._stopping = True
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as waker:
            waker.sendto(b"stop", self.address)
        self._thread.join(timeout=10)
        self.sock.close()
        self.forger.close()


def encoded(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply).encode()


OWNED = {"Type": "Error", "Error": "owned by another key", "Code": "owned"}
FORGERIES: dict[str, Callable[[int], tuple[bool, bytes]]] = {
    "from another port": lambda request_id: (False, encoded({**OWNED, "Id": request_id})),
    "without an Id": lambda request_id: (True, encoded(OWNED)),
    "with another Id": lambda request_id: (True, encoded({**OWNED, "Id": request_id + 1})),
    "with Id true": lambda request_id: (True, encoded({**OWNED, "Id": True})),
    "not JSON": lambda request_id: (True, b"\xffnot json"),
}
"""Replies a forger can send before the real one, by what gives them away."""


def forgeries_then(real: dict[str, Any], kinds: tuple[str, ...] = tuple(FORGERIES)):
    """A script: a forged ``owned`` of each kind, then ``real`` with the Id."""
    def answer(request: dict[str, Any], client: Any) -> list[tuple[bool, bytes]]:
        request_id = request["Id"]
        return ([FORGERIES[kind](request_id) for kind in kinds]
                + [(True, encoded({**real, "Id": request_id}))])
    return answer


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def start(answer) -> ScriptedServer:
        servers.append(ScriptedServer(answer))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("kind", FORGERIES)
def test_json_call_takes_only_the_reply_with_its_id_from_the_server(scripted, kind: str) -> None:
    server = scripted(forgeries_then({"Type": "Response", "Key": "x", "Value": "10.0.0.1"},
                                     (kind,)))
    reply = json_call(server.address, {"Type": "Query", "Key": "x"}, timeout_s=5.0)
    assert reply["Type"] == "Response" and reply["Value"] == "10.0.0.1"


def test_json_call_says_not_json_only_when_nothing_else_came(scripted) -> None:
    server = scripted(lambda request, client: [(True, b"<html>")])
    with pytest.raises(NoAnswer, match="not JSON"):
        json_call(server.address, {"Type": "Query", "Key": "x"}, timeout_s=0.2)


def test_a_forged_owned_never_removes_the_token(scripted, tmp_path: Path) -> None:
    """The forged ``owned`` replies (before the fix, the one from another
    port was taken, and the unconfirmed token deleted) are skipped; the
    real reply confirms the token."""
    server = scripted(forgeries_then({"Type": "PutOk", "Outcome": "claimed"}))
    store = TokenStore(tmp_path / "tokens.json")
    up = Uploader("laptop", "mydns.", [server.address], store, try_timeout_s=5.0)
    outcome = up.upload(["10.1.2.3"])
    sent = json.loads(server.received[0])
    assert store.get("laptop.mydns.") is not None, "the token was dropped"
    assert outcome.exit_code == EXIT_OK and "(claimed via" in outcome.line, outcome.line
    assert store.get("laptop.mydns.") == TokenEntry(sent["Token"], sent["Seq"], True)


# --- the front end: signed Puts ----------------------------------------------------------

class Front:
    """A JsonFrontEnd on an EncodingStore holding ``laptop`` (claimed with
    TOKEN, Seq 100) and the open name ``printer``."""

    def __init__(self, records: RecordCache | None = None,
                 admission: Admission | None = None) -> None:
        self.store = EncodingStore()
        self.ops: list[RecordOp] = []
        inner = self.store.call

        async def call(op: RecordOp, timeout_s: float):
            self.ops.append(op)
            return await inner(op, timeout_s)
        self.store.call = call  # type: ignore[method-assign]
        self.fe = JsonFrontEnd(self.store, FrontEndCounters(), records=records,  # type: ignore
                               admission=admission)
        self.loop = asyncio.new_event_loop()
        assert self.ask(put("laptop", "10.0.0.1", 100, Token=TOKEN))["Outcome"] == "claimed"
        assert self.ask(put("printer", "10.0.0.9", 1))["Open"] is True

    def raw(self, data: bytes, source: str | None = "192.0.2.7") -> bytes:
        reply = self.loop.run_until_complete(self.fe.handle(data, source))
        assert reply is not None
        assert len(reply) <= max(len(data), MAX_SMALL_REPLY_BYTES)
        assert OWNER.encode() not in reply  # the key is never shown
        return reply

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        return json.loads(self.raw(json.dumps(request).encode()))

    def refused(self, request: dict[str, Any], code: str) -> dict[str, Any]:
        before = self.store.state()
        reply = self.ask(request)
        assert reply["Type"] == "Error" and reply["Code"] == code, reply
        assert self.store.state() == before, "a refused Put changed the store"
        return reply

    def value(self, name: str) -> tuple[str, ...]:
        record = self.store.machine.records[name]
        return record.ipv4 + record.ipv6

    def close(self) -> None:
        self.loop.close()


def put(name: str, value: str | list[str], seq: int, **fields: Any) -> dict[str, Any]:
    return {"Type": "Put", "Key": name, "Value": value, "Seq": seq, **fields}


def signed(name: str, value: str | list[str], seq: int, owner: str = OWNER,
           zone: str = "mydns.") -> dict[str, Any]:
    addresses = [value] if isinstance(value, str) else value
    return put(name, value, seq, Mac=put_mac(owner, zone, name, addresses, seq))


@pytest.fixture
def front():
    fe = Front()
    yield fe
    fe.close()


def test_a_signed_put_updates_its_owners_name(front: Front) -> None:
    reply = front.ask(signed("laptop", ["fd00::1", "10.0.0.2"], 200))
    assert reply == {"Type": "PutOk", "Key": "laptop", "Value": ["fd00::1", "10.0.0.2"],
                     "Outcome": "updated"}
    assert front.value("laptop") == ("10.0.0.2", "fd00::1")
    assert front.store.machine.records["laptop"].owner == OWNER


def test_a_captured_signed_put_sets_no_other_value_or_name(front: Front) -> None:
    captured = signed("laptop", "10.0.0.2", 200)
    assert front.ask(put("gpu1", "10.0.0.3", 1, Token=TOKEN))["Outcome"] == "claimed"
    front.refused({**captured, "Value": "10.6.6.6"}, "bad_signature")
    front.refused({**captured, "Value": ["10.0.0.2", "10.6.6.6"]}, "bad_signature")
    front.refused({**captured, "Seq": 201}, "bad_signature")
    front.refused({**captured, "Key": "gpu1"}, "bad_signature")   # same owner, other name
    front.refused({**captured, "Key": "nosuch"}, "unknown_name")
    assert front.value("laptop") == ("10.0.0.1",)


def test_a_replayed_signed_put_is_stale_once_a_newer_one_is_stored(front: Front) -> None:
    captured = signed("laptop", "10.0.0.2", 200)
    assert front.ask(captured)["Outcome"] == "updated"
    assert front.ask(captured)["Outcome"] == "updated"  # a retry: same Seq, same value
    assert front.ask(signed("laptop", "10.0.0.3", 300))["Outcome"] == "updated"
    front.refused(captured, "stale")
    assert front.value("laptop") == ("10.0.0.3",)


@pytest.mark.parametrize("fields, code", [
    ({"Token": TOKEN}, "bad_request"),                    # a Mac and a Token
    ({"Mac": "00" * 31}, "bad_request"),                   # too short
    ({"Mac": "zz" * 32}, "bad_request"),                   # not hex
    ({"Mac": 7}, "bad_request"),
    ({"Mac": "00" * 32}, "bad_signature"),                 # well-formed, wrong
])
def test_malformed_or_mixed_signed_puts_are_refused(front: Front, fields: dict[str, Any],
                                                    code: str) -> None:
    front.refused({**signed("laptop", "10.0.0.2", 200), **fields}, code)


def test_a_signed_put_needs_its_seq(front: Front) -> None:
    request = signed("laptop", "10.0.0.2", 200)
    del request["Seq"]
    front.refused(request, "bad_request")


def test_signatures_from_other_keys_are_refused(front: Front) -> None:
    front.refused(signed("laptop", "10.0.0.2", 200, owner=json_owner("guess")), "bad_signature")
    front.refused(signed("laptop", "10.0.0.2", 200, zone="other."), "bad_signature")
    # An open name's "owner" is no secret: a Mac cannot stand in for no token.
    front.refused(signed("printer", "10.0.0.2", 200, owner="open"), "open")


def test_a_name_granted_to_a_tsig_key_takes_no_signed_put() -> None:
    """Once the keys file grants a name to a key, it is the key's to
    change, even if a token claimed it before, and a Mac made with the
    key's (guessable) owner moves it no more: both ``reserved``, refused
    before the front end reads anything through the cluster."""
    admission = Admission(AdmissionPolicy(), TrustedSources(()),
                          lambda name: "lab-admin" if name == "gpu9" else None, lambda name: True)
    fe = Front(admission=admission)
    try:
        fe.loop.run_until_complete(fe.store.call(
            RecordOp("record_set", "gpu9", ipv4=("10.0.0.9",), owner=OWNER, seq=1), 1.0))
        fe.refused(signed("gpu9", "10.6.6.6", 2), "reserved")
        fe.refused(signed("gpu9", "10.6.6.6", 2, owner=tsig_owner("lab-admin")), "reserved")
    finally:
        fe.close()


@pytest.mark.parametrize("copy", ["the copy", "a read"])
def test_a_key_s_name_takes_no_signed_put_once_the_key_is_gone(copy: str) -> None:
    """A key removed from the keys file reserves nothing any more, but its
    names stay its own: their owner is marked a key's, so no Mac made with
    that (guessable) owner moves them, through the copy or a read."""
    fe = Front()
    try:
        owner = tsig_owner("retired")
        fe.loop.run_until_complete(fe.store.call(
            RecordOp("record_set", "gpu9", ipv4=("10.0.0.9",), owner=owner, seq=1), 1.0))
        if copy == "the copy":
            fe.fe._records = loaded_copy(fe)
        reply = fe.refused(signed("gpu9", "10.6.6.6", 2, owner=owner), "owned")
        assert "nsupdate" in reply["Error"]
        fe.refused(signed("gpu9", "10.6.6.6", 2), "owned")
    finally:
        fe.close()


def test_the_original_tokenless_put_still_works(front: Front) -> None:
    assert front.ask(put("printer", "10.0.0.10", 2)) == {
        "Type": "PutOk", "Key": "printer", "Value": "10.0.0.10", "Outcome": "updated",
        "Open": True}
    without_seq = front.ask({"Type": "Put", "Key": "scanner", "Value": "10.0.0.11"})
    assert without_seq["Outcome"] == "claimed" and without_seq["Open"] is True
    front.refused(put("laptop", "10.6.6.6", 500), "owned")


def loaded_copy(front: Front, names: tuple[str, ...] | None = None) -> RecordCache:
    records = front.store.machine.records
    copy = RecordCache()
    copy.apply(tuple(r for n, r in records.items() if names is None or n in names),
               front.store.machine.serial, full=True)
    return copy


def test_the_front_ends_copy_checks_the_mac_without_a_read() -> None:
    fe = Front()
    try:
        fe.fe._records = loaded_copy(fe)
        del fe.ops[:]
        assert fe.ask(signed("laptop", "10.0.0.2", 200))["Outcome"] == "updated"
        assert [op.kind for op in fe.ops] == ["record_set"]
        assert fe.ops[0].owner == OWNER
    finally:
        fe.close()


def test_a_copy_that_is_behind_falls_back_to_a_read() -> None:
    """A name claimed through another front end, not in this copy yet; and
    a copy not loaded at all: the store's own record decides."""
    fe = Front()
    try:
        fe.fe._records = loaded_copy(fe, names=())
        assert fe.ask(signed("laptop", "10.0.0.2", 200))["Outcome"] == "updated"
        fe.fe._records = RecordCache()
        assert fe.ask(signed("laptop", "10.0.0.3", 300))["Outcome"] == "updated"
        fe.refused(signed("nosuch", "10.0.0.3", 300), "unknown_name")
    finally:
        fe.close()


# --- put.py against the front end, over UDP ------------------------------------------------

def serving(front: Front):
    """A script answering every datagram through ``front``'s JsonFrontEnd."""
    return lambda request, client: [(True, front.raw(json.dumps(request).encode()))]


def test_after_the_claim_no_upload_carries_the_token(scripted, tmp_path: Path) -> None:
    front = Front()
    try:
        server = scripted(serving(front))
        clock = iter(range(1_000, 10**9, 1_000))
        up = Uploader("phone", "mydns.", [server.address], TokenStore(tmp_path / "t.json"),
                      try_timeout_s=5.0, clock_ms=lambda: next(clock))
        assert "(claimed via" in up.upload(["10.1.0.1"]).line
        entry = up.store.get("phone.mydns.")
        assert entry is not None and entry.confirmed
        assert entry.token.encode() in server.received[0]   # the claim
        for address in ("10.1.0.2", "10.1.0.3"):
            outcome = up.upload([address])
            assert outcome.exit_code == EXIT_OK and "(updated via" in outcome.line, outcome.line
        assert front.value("phone") == ("10.1.0.3",)
        for datagram in server.received[1:]:
            assert entry.token.encode() not in datagram
            assert json_owner(entry.token).encode() not in datagram
            assert "Mac" in json.loads(datagram) and "Token" not in json.loads(datagram)

        # A captured upload, replayed with another value, changes nothing...
        captured = json.loads(server.received[1])
        front.refused({**captured, "Value": "10.6.6.6", "Id": 1}, "bad_signature")
        # ...and replayed as it was, it is older than what is stored.
        front.refused(captured, "stale")
        assert front.value("phone") == ("10.1.0.3",)
    finally:
        front.close()


def test_put_py_claims_a_released_name_again_with_a_new_token(scripted, tmp_path: Path) -> None:
    front = Front()
    try:
        server = scripted(serving(front))
        store = TokenStore(tmp_path / "t.json")
        store.save("gone.mydns.", TokenEntry("old-token", 5))  # its name no longer exists
        up = Uploader("gone", "mydns.", [server.address], store, try_timeout_s=5.0)
        outcome = up.upload(["10.1.0.9"])
        assert "(claimed via" in outcome.line, outcome.line
        assert all(b"old-token" not in datagram for datagram in server.received)
        entry = store.get("gone.mydns.")
        assert entry is not None and entry.confirmed and entry.token != "old-token"
        assert front.store.machine.records["gone"].owner == json_owner(entry.token)
        # A machine with another token of the name is refused and keeps it.
        other = Uploader("gone", "mydns.", [server.address],
                         TokenStore(tmp_path / "other.json"), try_timeout_s=5.0)
        assert other.upload(["10.6.6.6"]).exit_code == EXIT_REFUSED
        assert other.store.get("gone.mydns.") is not None
        assert front.value("gone") == ("10.1.0.9",)
    finally:
        front.close()
