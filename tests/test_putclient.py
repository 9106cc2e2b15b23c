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
A, B, C = ("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)


class FakeFrontEnds:
    """``json_call`` stand-in: per server, a list of answers to give in turn
    (a dict, or None for no answer); records (server, request) pairs."""

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
        if answer is None:
            raise NoAnswer(f"no answer from {server}")
        return answer


def uploader(tmp_path: Path, fake: FakeFrontEnds, servers=(A, B, C), clock=None) -> Uploader:
    ticks = iter(range(1_000, 10**9, 1_000))
    return Uploader("laptop", "mydns.", list(servers), TokenStore(tmp_path / "cfg" / "t.json"),
                    call=fake, clock_ms=clock or (lambda: next(ticks)))


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
    assert fake.calls[1][1]["Token"] == entry.token and fake.calls[1][1]["Seq"] == 2000
    assert fake.calls[1][1]["Value"] == ["10.1.2.3", "fd00::1"]


def test_fail_over_retries_the_same_request_on_the_next_front_end(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [None, None], B: [TRY_AGAIN, CLAIMED]})
    outcome = uploader(tmp_path, fake).upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_OK and "via 127.0.0.1:2" in outcome.line
    assert [server for server, _ in fake.calls] == [A, B, C, A, B]
    assert len({json.dumps(request, sort_keys=True) for _, request in fake.calls}) == 1


def test_no_answer_is_bounded_and_keeps_the_token(tmp_path: Path) -> None:
    fake = FakeFrontEnds({})
    up = uploader(tmp_path, fake)
    outcome = up.upload(["10.1.2.3"])
    assert outcome.exit_code == EXIT_NO_ANSWER and len(fake.calls) == 6
    assert outcome.line.startswith("error: no front end answered the upload of laptop.mydns.")
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


def test_refused_new_token_is_forgotten(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [OWNED]})
    up = uploader(tmp_path, fake)
    outcome = up.upload(["10.1.2.3"])
    assert outcome == type(outcome)(EXIT_REFUSED, OWNED_LINE)
    assert up.store.get("laptop.mydns.") is None and len(fake.calls) == 1


def test_refused_known_token_is_kept(tmp_path: Path) -> None:
    fake = FakeFrontEnds({A: [OWNED]})
    up = uploader(tmp_path, fake)
    up.store.save("laptop.mydns.", TokenEntry("mine", 5))
    assert up.upload(["10.1.2.3"]).exit_code == EXIT_REFUSED
    assert up.store.get("laptop.mydns.") == TokenEntry("mine", 1000)


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
    assert outcome == type(outcome)(EXIT_REFUSED, OWNED_LINE)
    assert up.store.get("laptop.mydns.") is None  # the new token owned nothing


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
