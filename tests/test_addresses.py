"""split_addresses: one address takes a short path of its own (most uploads,
and each family of a checked op); it must answer exactly as the general
path does, which a repeat of the same text takes (repeats are merged)."""

from __future__ import annotations

from typing import Any

import pytest

from mydns_lab.records import MAX_ADDRESS_TEXT, InvalidRecord, split_addresses

SINGLE_TEXTS: list[Any] = [
    "192.0.2.1", " 192.0.2.1 ", "192.0.2.01", "0.0.0.0", "255.255.255.255", "256.1.1.1",
    "2001:DB8::1", "2001:db8:0:0:0:0:0:1", "::ffff:192.0.2.1", "fe80::1%eth0", "::", "",
    " ", "not an address", "1.2.3", "1" * (MAX_ADDRESS_TEXT + 1), "1:" * 40,
    " " * MAX_ADDRESS_TEXT + "192.0.2.1", "192.0.2.1\n", 7, None, b"192.0.2.1", ["192.0.2.1"],
]


def outcome(addresses: list[Any]) -> tuple[str, Any]:
    try:
        return "ok", split_addresses(addresses)
    except InvalidRecord as exc:
        return "refused", str(exc)


@pytest.mark.parametrize("text", SINGLE_TEXTS, ids=repr)
def test_one_address_is_split_as_the_general_path_splits_it(text: Any) -> None:
    assert outcome([text]) == outcome([text, text])
    assert outcome((text,)) == outcome([text, text])


def test_no_address_is_no_address_of_either_family() -> None:
    assert split_addresses([]) == split_addresses(()) == ((), ())
