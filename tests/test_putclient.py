"""put.py's logic without a network: the default name and addresses, the
token file, sequence numbers, fail-over, and the upload loop on a fake clock.

Front ends are a fake ``json_call`` that records each request and answers
from a script, so every run is the same.
"""

from __future__ import annotations

import io
import json
import socket
import stat
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest

from mydns_lab.clients.cli import UsageError, zone_of
from mydns_lab.clients.jsonclient import NoAnswer
from mydns_lab.clients.put import (EXIT_NO_ANSWER, EXIT_OK, EXIT_REFUSED, TokenEntry, TokenStore,
                                   Uploader, default_token_file, hostname_label, machine_addresses,
                                   main, next_seq, relative_name, run)
from mydns_lab.records import MAX_ADDRESSES_PER_FAMILY, json_owner, put_mac, split_addresses

Addr = namedtuple("Addr", "family address netmask broadcast ptp")
OWNED_TEXT = ("name 'laptop' is owned by another key; pass the token that claimed it or "
              "choose another name")
TRY_AGAIN_TEXT = ("the cluster did not answer within 3 s; the update may or may not have been "
                  "applied, try again")
STALE_TEXT = "stale upload for 'laptop': sequence 4 is older than the stored 5; nothing changed"
# Replies as service.py gives them: put.py acts on Type, Code and Outcome.
OWNED = {"Type": "Error", "Error": OWNED_TEXT, "Code": "owned"}
TRY_AGAIN = {"Type": "Error", "Error": TRY_AGAIN_TEXT, "Code": "unavailable"}
CLAIMED = {"Type": "PutOk", "Outcome": "claimed"}
UPDATED = {"Type": "PutOk", "Outcome": "updated"}
OWNED_LINE = ('error: name "laptop" is owned by another key; pass --token-file with its token '
              'or choose another name')
UNKNOWN = {"Type": "Error", "Error": "no name 'laptop' to update with a Mac",
           "Code": "unknown_name"}
BAD_SIGNATURE = {"Type": "Error", "Error": "the Mac of this upload is not its owner's",
                 "Code": "bad_signature"}
A, B, C = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)
REFUSED: Any = {"refused": "at once"}


class FakeFrontEnds:
    """``json_call`` stand-in: per server, a list of answers to give in turn
    (a dict; None for no answer, which costs the wait on ``clock``; or
    REFUSED, a port nobody listens on, answered at once); records
    (server, request) pairs."""

    def __init__(self, script: dict[tuple[str, int], list[dict[str, Any] | None]]) -> None:
        self.script = script
        self.clock: FakeClock | None = None
        self.times: list[float] = []
        self.calls: list[tuple[tuple[str, int], dict[str, Any]]] = []

    def __call__(self, server: tuple[str, int], request: dict[str, Any], timeout_s: float,
                 attempts: int) -> dict[str, Any]:
        assert attempts == 1 and timeout_s > 0
        self.calls.append((server, dict(request)))
        self.times.append(self.clock.now if self.clock else 0)
        answers = self.script.get(server, [])
        answer = answers.pop(0) if answers else None
        if answer is REFUSED:
            raise ConnectionRefusedError(111, "Connection refused")
        if answer is None:
            if self.clock:
                self.clock.now += timeout_s
            raise NoAnswer(f"no answer from {server}")
        return answer


def uploader(tmp_path: Path, fake: FakeFrontEnds, servers=(A, B, C), clock=None) -> Uploader:
    """An Uploader calling ``fake``, its retries timed by ``fake.clock``
    (a FakeClock made here when the test has none)."""
    ticks = iter(range(1_000, 10**9, 1_000))
    fake.clock = fake.clock or FakeClock()
    return Uploader("laptop", "mydns.", list(servers), TokenStore(tmp_path / "cfg" / "t.json"),
                    call=fake, clock_ms=clock or (lambda: next(ticks)),
                    monotonic=fake.clock.monotonic, sleep=fake.clock.sleep)


# --- name, zone, addresses ---------------------------------------------------------------

@pytest.mark.parametrize("hostname, label", [
    ("laptop", "laptop"),
    ("Alice-PC", "alice-pc"),
    ("alice_pc.example.com", "alice-pc"),
    ("--weird host!--", "weird-host"),
    ("x" * 80, "x" * 63),
    ("a" * 62 + "-bc", "a" * 62),
    ("___", "host"),
    ("", "host"),
])
def test_hostname_becomes_one_valid_label(hostname: str, label: str) -> None:
    assert hostname_label(hostname) == label


@pytest.mark.parametrize("text, zone, name", [
    ("laptop", "mydns.", "laptop"),
    ("Laptop", "mydns.", "laptop"),
    ("gpu1.lab", "mydns.", "gpu1.lab"),
    ("laptop.mydns.", "mydns.", "laptop"),
    ("laptop.home.arpa.", "home.arpa.", "laptop"),
])
def test_relative_name(text: str, zone: str, name: str) -> None:
    assert relative_name(text, zone) == name


@pytest.mark.parametrize("text, message", [
    ("laptop.example.", "not inside the zone"),
    ("bad_name", "may hold only"),
    ("-x", "may hold only"),
    ("", "empty"),
])
def test_bad_names_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        relative_name(text, "mydns.")


def test_zone_is_normalised() -> None:
    assert zone_of("MyDNS") == "mydns." and zone_of("home.arpa.") == "home.arpa."
    with pytest.raises(UsageError):
        zone_of(".")


def test_machine_addresses_skip_loopback_link_local_and_bridges() -> None:
    v4, v6, link = socket.AF_INET, socket.AF_INET6, socket.AF_PACKET
    interfaces = {
        "lo": [Addr(v4, "127.0.0.1", None, None, None), Addr(v6, "::1", None, None, None)],
        "eth0": [Addr(v4, "192.0.2.2", None, None, None), Addr(v6, "fd00::2", None, None, None),
                 Addr(v6, "fe80::1%eth0", None, None, None),
                 Addr(link, "02:fc:00:00:00:01", None, None, None)],
        "wlan0": [Addr(v4, "10.1.2.3", None, None, None), Addr(v4, "169.254.9.9", None, None, None),
                  Addr(v4, "192.0.2.2", None, None, None)],
        "docker0": [Addr(v4, "172.17.0.1", None, None, None)],
        "br-1a2b": [Addr(v4, "172.18.0.1", None, None, None)],
        "veth9f": [Addr(v6, "fd00::99", None, None, None)],
        "virbr0": [Addr(v4, "192.168.122.1", None, None, None)],
        "cni0": [Addr(v4, "10.88.0.1", None, None, None)],
        "flannel.1": [Addr(v4, "10.244.0.0", None, None, None)],
    }
    assert machine_addresses(interfaces) == ["10.1.2.3", "192.0.2.2", "fd00::2"]
    assert machine_addresses({"lo": interfaces["lo"]}) == []


def test_machine_addresses_keep_as_many_as_a_name_holds() -> None:
    """Privacy addresses pile up on IPv6 interfaces; put.py uploads the
    first MAX_ADDRESSES_PER_FAMILY of each family rather than failing."""
    v4, v6 = socket.AF_INET, socket.AF_INET6
    many = [Addr(v6, f"2001:db8::{i:x}", None, None, None) for i in range(20, 0, -1)]
    many += [Addr(v4, f"10.0.0.{i}", None, None, None) for i in range(12)]
    kept = machine_addresses({"eth0": many})
    assert kept == ([f"10.0.0.{i}" for i in range(MAX_ADDRESSES_PER_FAMILY)]
                    + [f"2001:db8::{i:x}" for i in range(1, MAX_ADDRESSES_PER_FAMILY + 1)])
    assert list(sum(split_addresses(kept), ())) == kept, "a name takes them all"


def test_default_token_file_follows_xdg(tmp_path: Path) -> None:
    assert default_token_file({"XDG_CONFIG_HOME": str(tmp_path)}) == \
        tmp_path / "mydns" / "tokens.json"
    assert default_token_file({}) == Path.home() / ".config" / "mydns" / "tokens.json"


# --- token file and sequence numbers ------------------------------------------------------

def test_token_file_is_private_and_round_trips(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "new" / "mydns" / "tokens.json")
    assert store.get("laptop.mydns.") is None
    store.save("laptop.mydns.", TokenEntry("t1", 5, False))
    store.save("gpu1.mydns.", TokenEntry("t2", 7))
    assert store.get("laptop.mydns.") == TokenEntry("t1", 5, False)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    store.forget("laptop.mydns.")
    assert store.get("laptop.mydns.") is None and store.get("gpu1.mydns.") == TokenEntry("t2", 7)
    assert sorted(p.name for p in store.path.parent.iterdir()) == \
        ["tokens.json", "tokens.json.lock"]  # no temporary file left


def test_hand_written_token_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"laptop.mydns.": "abc", "pc.mydns.": {"token": "def"}}))
    store = TokenStore(path)
    assert store.get("laptop.mydns.") == TokenEntry("abc", 0, True)
    assert store.get("pc.mydns.") == TokenEntry("def", 0, True)


@pytest.mark.parametrize("text", ["not json", "[1]", '{"x.mydns.": 3}',
                                  '{"x.mydns.": {"token": ""}}'])
def test_broken_token_file_is_refused_not_overwritten(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(text)
    with pytest.raises(UsageError, match="fix or move"):
        TokenStore(path).save("laptop.mydns.", TokenEntry("t"))
    assert path.read_text() == text


def test_sequence_numbers_follow_the_clock_but_never_go_back() -> None:
    assert next_seq(0, 1_700_000_000_000) == 1_700_000_000_000
    assert next_seq(1_700_000_000_500, 1_700_000_000_000) == 1_700_000_000_501
    assert next_seq(41, 41) == 42


# --- uploads ------------------------------------------------------------------------------

def test_first_upload_claims_with_a_token_made_and_saved_first(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [CLAIMED]})
    up = uploader(tmp_path, fake)
    outcome = up.upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_OK
    assert outcome.line.startswith("laptop.mydns. -> 10.1.2.3 (claimed via 127.0.0.1:1; "
                                   "token saved to ")
    (_, request), = fake.calls
    entry = up.store.get("laptop.mydns.")
    assert entry == TokenEntry(request["Token"], request["Seq"], True)
    assert request == {"Type": "Put", "Key": "laptop", "Value": "10.1.2.3",
                       "Token": entry.token, "Seq": 1000}
    fake.script[A] = [UPDATED]
    outcome = up.upload(["10.1.2.3", "fd00::1"])
    assert outcome.line == "laptop.mydns. -> 10.1.2.3, fd00::1 (updated via 127.0.0.1:1)"
    # After the claim the token never travels: the upload is signed with it.
    signed = fake.calls[1][1]
    assert signed == {"Type": "Put", "Key": "laptop", "Value": ["10.1.2.3", "fd00::1"],
                      "Seq": 2000, "Mac": put_mac(json_owner(entry.token), "mydns.", "laptop",
                                                  ["10.1.2.3", "fd00::1"], 2000)}
    sent = json.dumps(signed)
    assert entry.token not in sent and json_owner(entry.token) not in sent


def test_fail_over_retries_the_same_request_on_the_next_front_end(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [REFUSED, REFUSED], B: [TRY_AGAIN, CLAIMED]})
    outcome = uploader(tmp_path, fake).upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_OK and "via 127.0.0.1:2" in outcome.line
    assert [server for server, _ in fake.calls] == [A, B, C, A, B]
    assert len({json.dumps(request, sort_keys=True) for _, request in fake.calls}) == 1


def test_no_answer_is_bounded_and_keeps_the_token(tmp_path: Path) -> None:
    fake = FakeFrontEnds({})
    up = uploader(tmp_path, fake)
    outcome = up.upload(["10.1.2.3"])
    # Each silent front end costs the 4 s wait: A, B, then C for the 2 s left of 10.
    assert outcome.exit_code == EXIT_NO_ANSWER and [s for s, _ in fake.calls] == [A, B, C]
    assert fake.clock is not None and fake.clock.now == 10.0
    assert outcome.line.startswith("error: no front end answered the upload of laptop.mydns. "
                                   "within 10 s")
    assert "is the service running" in outcome.line
    assert "so the next run is safe even if this upload claimed the name" in outcome.line
    kept = up.store.get("laptop.mydns.")
    assert kept is not None and not kept.confirmed
    # The next run: the lost upload had claimed the name, so the same token
    # is the owner's (the store says updated); the line says claimed, as it
    # is the token's first success.
    fake.script[A] = [UPDATED]
    outcome = up.upload(["10.1.2.3"])
    assert "(claimed via" in outcome.line and fake.calls[-1][1]["Token"] == kept.token
    assert fake.calls[-1][1]["Seq"] > kept.seq


def test_refused_new_token_is_kept_and_tried_again(tmp_path: Path) -> None:
    """``owned`` for a token that never succeeded proves nothing (a reply
    can be forged, and a lost earlier upload may have claimed the name with
    it): the token stays in the file and the next run sends it again."""
    fake = FakeFrontEnds({A: [OWNED]})
    up = uploader(tmp_path, fake)
    outcome = up.upload(["10.1.2.3"])
    assert outcome == type(outcome)(EXIT_REFUSED, OWNED_LINE + kept_note(up))
    kept = up.store.get("laptop.mydns.")
    assert kept == TokenEntry(fake.calls[0][1]["Token"], 1000, False) and len(fake.calls) == 1
    fake.script[A] = [UPDATED]
    assert "(claimed via" in up.upload(["10.1.2.3"]).line
    assert fake.calls[1][1]["Token"] == kept.token
    assert up.store.get("laptop.mydns.") == TokenEntry(kept.token, 2000, True)


def kept_note(up: Uploader) -> str:
    return f" (the new token stays in {up.store.path}; the next run tries it again)"


def test_refused_known_token_is_kept(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [OWNED]})
    up = uploader(tmp_path, fake)
    up.store.save("laptop.mydns.", TokenEntry("mine", 5))
    assert up.upload(["10.1.2.3"]).exit_code == EXIT_REFUSED
    assert up.store.get("laptop.mydns.") == TokenEntry("mine", 1000)


def test_an_unknown_name_is_claimed_again_with_a_new_token(tmp_path: Path) -> None:
    """The name was released (or the store started afresh): a new token
    claims it, so a forged ``unknown_name`` draws out no token that owns
    the name; the old token is dropped once the new one owns the name."""
    fake = FakeFrontEnds({A: [UNKNOWN, CLAIMED]})
    up = uploader(tmp_path, fake)
    up.store.save("laptop.mydns.", TokenEntry("old-token", 5))
    outcome = up.upload(["10.1.2.3"])
    assert outcome.line.startswith("laptop.mydns. -> 10.1.2.3 (claimed via 127.0.0.1:1; ")
    (_, signed), (_, claim) = fake.calls
    assert "Token" not in signed and "old-token" not in json.dumps(fake.calls)
    assert claim["Seq"] == signed["Seq"] == 1000 and claim["Token"] != "old-token"
    assert up.store.get("laptop.mydns.") == TokenEntry(claim["Token"], 1000, True)


def test_a_refused_reclaim_keeps_both_tokens_until_one_succeeds(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [UNKNOWN, OWNED]})
    up = uploader(tmp_path, fake)
    up.store.save("laptop.mydns.", TokenEntry("old-token", 5))
    assert up.upload(["10.1.2.3"]).line == OWNED_LINE + kept_note(up)
    new_token = fake.calls[1][1]["Token"]
    assert up.store.get("laptop.mydns.") == TokenEntry("old-token", 1000, True, new_token)
    # The file keeps the new token across runs (it is read back, not remembered).
    assert json.loads(up.store.path.read_text())["laptop.mydns."]["reclaim"] == new_token

    # Next run: the old token's signature is refused, as the name is the new
    # token's (the owned answer was forged, or that claim's answer was lost):
    # the new token is sent again and is the owner's.
    fake.script[A] = [BAD_SIGNATURE, UPDATED]
    assert "(claimed via" in up.upload(["10.1.2.3"]).line
    assert fake.calls[3][1]["Token"] == new_token and "old-token" not in json.dumps(fake.calls)
    assert up.store.get("laptop.mydns.") == TokenEntry(new_token, 2000, True)


def test_the_old_tokens_success_keeps_the_new_one(tmp_path: Path) -> None:
    """A PutOk proves nothing (it may be forged while the new token's lost
    claim took the name), so the new token stays for a later refusal."""
    fake = FakeFrontEnds({A: [UPDATED]})
    up = uploader(tmp_path, fake)
    up.store.save("laptop.mydns.", TokenEntry("old-token", 5, True, "new-token"))
    assert "(updated via" in up.upload(["10.1.2.3"]).line
    assert "Mac" in fake.calls[0][1] and "Token" not in fake.calls[0][1]
    assert up.store.get("laptop.mydns.") == TokenEntry("old-token", 1000, True, "new-token")


def test_a_bad_signature_is_refused_and_the_token_kept(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [BAD_SIGNATURE]})
    up = uploader(tmp_path, fake)
    up.store.save("laptop.mydns.", TokenEntry("mine", 5))
    outcome = up.upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_REFUSED and len(fake.calls) == 1
    assert outcome.line.startswith("error: 127.0.0.1:1 did not accept the signature of the "
                                   "upload of laptop.mydns.: the name is owned by another key")
    assert up.store.get("laptop.mydns.") == TokenEntry("mine", 1000)
    assert "mine" not in json.dumps(fake.calls)


def test_an_upload_no_one_took_is_tried_again_until_it_is(tmp_path: Path) -> None:
    """Right after the service starts its ports refuse, then its cluster
    elects a leader: ``--once`` still succeeds, after pauses that double."""
    fake = FakeFrontEnds({A: [REFUSED] * 5 + [TRY_AGAIN, CLAIMED]})
    up = uploader(tmp_path, fake, servers=(A,))
    outcome = up.upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_OK and "(claimed via" in outcome.line
    assert fake.clock is not None and fake.clock.sleeps == [0.25, 0.5, 1.0]
    assert len({json.dumps(request, sort_keys=True) for _, request in fake.calls}) == 1


def test_a_cluster_without_a_majority_is_named_as_such(tmp_path: Path) -> None:
    """The front ends answer ``unavailable`` (their cluster did not commit
    in time): put.py says so, not "is the service running?"."""
    fake = FakeFrontEnds({A: [TRY_AGAIN] * 100, B: [REFUSED] * 100})
    up = uploader(tmp_path, fake, servers=(A, B))
    outcome = up.upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_NO_ANSWER
    assert outcome.line.startswith("error: the upload of laptop.mydns. was not taken within 10 s: "
                                   "the front ends answer, but the service's cluster does not")
    assert "is the service running" not in outcome.line
    assert fake.clock is not None and fake.clock.now == 10.0


def test_a_reclaim_without_answer_keeps_both_tokens(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [UNKNOWN]})
    up = uploader(tmp_path, fake, servers=(A,))
    up.store.save("laptop.mydns.", TokenEntry("old-token", 5))
    assert up.upload(["10.1.2.3"]).exit_code == EXIT_NO_ANSWER
    kept = up.store.get("laptop.mydns.")
    assert kept is not None and kept.token == "old-token" and kept.reclaim == \
        fake.calls[-1][1]["Token"]


def test_other_refusals_are_reported_as_given(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [{"Type": "Error", "Error": STALE_TEXT, "Code": "stale"}]})
    outcome = uploader(tmp_path, fake).upload(["10.1.2.3"])
    assert outcome == type(outcome)(EXIT_REFUSED, f"error: laptop.mydns. refused: {STALE_TEXT}")


# put.py decides on Code and Outcome, never on the words: the service may
# reword a reason, and these tests fail if put.py matched the text again.

def test_owned_is_known_by_its_code_not_its_wording(tmp_path: Path) -> None:
    reworded = {"Type": "Error", "Error": "that name belongs to somebody else", "Code": "owned"}
    up = uploader(tmp_path, FakeFrontEnds({A: [reworded]}))
    outcome = up.upload(["10.1.2.3"])
    assert outcome == type(outcome)(EXIT_REFUSED, OWNED_LINE + kept_note(up))
    assert up.store.get("laptop.mydns.") is not None  # kept: it may own the name


def test_owned_wording_under_another_code_is_not_ownership(tmp_path: Path) -> None:
    invalid = {"Type": "Error", "Error": OWNED_TEXT, "Code": "invalid"}
    up = uploader(tmp_path, FakeFrontEnds({A: [invalid]}))
    outcome = up.upload(["10.1.2.3"])
    assert outcome == type(outcome)(EXIT_REFUSED, f"error: laptop.mydns. refused: {OWNED_TEXT}")
    kept = up.store.get("laptop.mydns.")
    assert kept is not None and not kept.confirmed


def test_unavailable_is_known_by_its_code_not_its_wording(tmp_path: Path) -> None:
    busy = {"Type": "Error", "Error": "the cluster is busy", "Code": "unavailable"}
    fake = FakeFrontEnds({A: [busy], B: [CLAIMED]})
    outcome = uploader(tmp_path, fake).upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_OK and "via 127.0.0.1:2" in outcome.line
    not_busy = {"Type": "Error", "Error": TRY_AGAIN_TEXT, "Code": "invalid"}
    fake = FakeFrontEnds({A: [not_busy], B: [CLAIMED]})
    outcome = uploader(tmp_path, fake).upload(["10.1.2.3"])
    assert outcome == type(outcome)(EXIT_REFUSED,
                                    f"error: laptop.mydns. refused: {TRY_AGAIN_TEXT}")
    assert [server for server, _ in fake.calls] == [A]


@pytest.mark.parametrize("text", [OWNED_TEXT, TRY_AGAIN_TEXT])
def test_an_error_without_a_code_is_reported_not_guessed(tmp_path: Path, text: str) -> None:
    """A front end older than the codes: no fail-over, no token dropped,
    one line that says what happened and what to do."""
    fake = FakeFrontEnds({A: [{"Type": "Error", "Error": text}], B: [CLAIMED]})
    up = uploader(tmp_path, fake)
    outcome = up.upload(["10.1.2.3"])
    assert outcome == type(outcome)(
        EXIT_REFUSED, "error: 127.0.0.1:1 refused the upload of laptop.mydns. without a Code, "
        f"so put.py cannot tell why (an older MyDNS front end?): {text}; update the service "
        "or pass --server with a current one")
    assert len(fake.calls) == 1
    kept = up.store.get("laptop.mydns.")
    assert kept is not None and not kept.confirmed


def test_a_reply_that_is_neither_put_ok_nor_error_is_reported(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [{"Type": "Response", "Value": ""}]})
    outcome = uploader(tmp_path, fake).upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_REFUSED and "without a Code" in outcome.line
    assert "'Type': 'Response'" in outcome.line and "\n" not in outcome.line


def test_outcome_claimed_says_claimed_even_for_a_known_token(tmp_path: Path) -> None:
    """A store started afresh: the token saved long ago claims the name anew."""
    up = uploader(tmp_path, FakeFrontEnds({A: [CLAIMED]}))
    up.store.save("laptop.mydns.", TokenEntry("mine", 5))
    outcome = up.upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_OK
    assert outcome.line.startswith("laptop.mydns. -> 10.1.2.3 (claimed via 127.0.0.1:1; ")
    assert up.store.get("laptop.mydns.") == TokenEntry("mine", 1000)


def test_put_ok_without_outcome_still_succeeds(tmp_path: Path) -> None:
    """A front end older than Outcome: PutOk alone says the upload is stored."""
    fake = FakeFrontEnds({A: [{"Type": "PutOk"}, {"Type": "PutOk"}]})
    up = uploader(tmp_path, fake)
    assert "(claimed via" in up.upload(["10.1.2.3"]).line
    assert up.upload(["10.1.2.4"]).line == "laptop.mydns. -> 10.1.2.4 (updated via 127.0.0.1:1)"


# --- the loop -----------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_loop_uploads_on_change_and_on_each_heartbeat(tmp_path: Path) -> None:
    clock = FakeClock()
    # What the interfaces show at each poll; the loop polls every 5 s.
    seen = ([["10.0.0.1"]] * 3 + [["10.0.0.2"]] * 12 + [[]] * 2 + [["10.0.0.2"]]
            + [["10.0.0.3"]])
    fake = FakeFrontEnds({A: [CLAIMED] + [UPDATED] * 3 + [OWNED]})
    fake.clock = clock
    out, err = io.StringIO(), io.StringIO()

    def addresses() -> list[str]:
        return seen.pop(0)

    code = run(uploader(tmp_path, fake), addresses, once=False, interval_s=30, out=out,
               err=err, monotonic=clock.monotonic, sleep=clock.sleep)
    assert code == EXIT_REFUSED and seen == []
    uploads = [(clock_at, request["Value"]) for clock_at, (_, request)
               in zip(fake.times, fake.calls)]
    # t=0 the first upload; t=15 a change; t=45 the heartbeat; at t=75 no
    # address (nothing sent); t=85 back, the heartbeat overdue; t=90 a change,
    # refused: the loop stops.
    assert uploads == [(0, "10.0.0.1"), (15, "10.0.0.2"), (45, "10.0.0.2"), (85, "10.0.0.2"),
                       (90, "10.0.0.3")]
    assert len(out.getvalue().splitlines()) == 4
    assert err.getvalue().splitlines()[0] == ("no address on this machine's interfaces; "
                                              "waiting for one")
    assert "owned by another key" in err.getvalue().splitlines()[-1]


def test_once_uploads_one_time(tmp_path: Path) -> None:
    clock = FakeClock()
    fake = FakeFrontEnds({A: [CLAIMED]})
    code = run(uploader(tmp_path, fake), lambda: ["10.0.0.1"], once=True, interval_s=60,
               out=io.StringIO(), err=io.StringIO(), monotonic=clock.monotonic,
               sleep=clock.sleep)
    assert code == EXIT_OK and len(fake.calls) == 1 and clock.sleeps == []


def test_once_without_any_address_is_a_usage_error(tmp_path: Path) -> None:
    err = io.StringIO()
    code = run(uploader(tmp_path, FakeFrontEnds({})), lambda: [], once=True, interval_s=60,
               out=io.StringIO(), err=err)
    assert code == 2 and "pass --ip ADDR" in err.getvalue()


@pytest.mark.parametrize("argv, message", [
    (["laptop", "--ip", "10.1.2.300", "--once"], "--ip: '10.1.2.300' is not an IPv4"),
    (["bad_name", "--ip", "10.1.2.3", "--once"], "bad name 'bad_name'"),
    (["laptop", "--server", "nowhere", "--once"], "--server:"),
    (["laptop", "--interval", "0"], "must be positive"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, argv: list[str], message: str) -> None:
    err = io.StringIO()
    code = main([*argv, "--token-file", str(tmp_path / "t.json")], io.StringIO(), err)
    assert code == 2
    assert err.getvalue().count("\n") == 1 and message in err.getvalue(), err.getvalue()
    assert not (tmp_path / "t.json").exists()
