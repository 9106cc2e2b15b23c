"""Who may add names to the zone, and how many: the operator's policy and
the per-source rate of new claims.

The policy's limits that every replica must agree on travel through the
log: the zone's size limit in each claim (``RecordOp.max_names``) and the
expiry cutoff in each release (``record_expire``), so the state machine
applies them without knowing the flags. The claim rate is each front end's
own (as BIND's and Knot's rate limits are each server's): a source that
spreads its claims over n front ends gets n times the rate.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from .records import sender_address

DAY_S = 86_400.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S}
OPEN_NAMES_CHOICES = ("allow", "deny")
MAX_TRACKED_SOURCES = 10_000
"""Sources whose claim budget a front end remembers; beyond it the one
unseen longest is forgotten (and starts again with a full budget)."""


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    """The operator's rules for names (flags of the same names).

    ``expire_s``: a name not refreshed for this long is released (0: never).
    ``claims_per_minute``: new claims a front end takes from one untrusted
    source (an IPv4 address, an IPv6 /64) per minute (0: no limit).
    ``max_names``: names the zone may hold (0: no limit).
    ``open_names``: ``allow`` lets a Put without a token claim an open name,
    which later Puts without a token may update (the original's protocol);
    ``deny`` refuses every Put without a token.
    """

    expire_s: float = 30 * DAY_S
    claims_per_minute: int = 60
    max_names: int = 100_000
    open_names: str = "allow"


def duration(text: str) -> float:
    """``--expire``: a number with a unit, ``s``, ``m``, ``h`` or ``d``
    (``30d``, ``12h``, ``5s``); a bare number is seconds; ``0`` is never."""
    stripped = text.strip().lower()
    unit = _UNITS.get(stripped[-1:], None)
    number = stripped[:-1] if unit is not None else stripped
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30d, 12h, 15m or 90s, got {text!r}") from None
    if not 0 <= value < 100 * 365 * DAY_S:
        raise argparse.ArgumentTypeError(f"not a usable duration: {text!r}")
    return value


class TrustedSources:
    """The networks (CIDR) of ``--trusted``: their Stats are answered, and
    no claim rate or response rate limit applies to them."""

    REMEMBERED = 4096
    """Verdicts kept per source text: a front end asks for every request,
    mostly about the same few senders, and parsing the address each time
    was a tenth of a JSON put's cost there. Past this many, all are
    forgotten and learnt again (a flood of senders stays bounded)."""

    def __init__(self, networks: tuple[str, ...]) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._verdicts: dict[str, bool] = {}

    def __contains__(self, source: object) -> bool:
        """Whether IP address ``source`` (a string; None or anything else:
        not from the network, never trusted) is in a trusted network."""
        if not isinstance(source, str):
            return False
        verdict = self._verdicts.get(source)
        if verdict is None:
            address = sender_address(source)
            verdict = address is not None and any(address in network
                                                  for network in self._networks)
            if len(self._verdicts) >= self.REMEMBERED:
                self._verdicts.clear()
            self._verdicts[source] = verdict
        return verdict


def source_prefix(source: str) -> str:
    """The unit a claim rate is counted by: an IPv4 address, or the /64 of
    an IPv6 address (one host usually holds a whole /64). An IPv4 address
    seen by a dual-stack socket counts as itself."""
    address = sender_address(source)
    if address is None:
        raise ValueError(f"{source!r} is not an IP address")
    if address.version == 6:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class ClaimLimiter:
    """A token bucket per source: ``per_minute`` claims at once, refilled at
    ``per_minute`` a minute. Memory is bounded by MAX_TRACKED_SOURCES.

    :meth:`allow` asks before a Put goes to the store; :meth:`spend` is
    called once the store says the Put claimed a name. So only names
    actually added count, however stale the front end's idea of which
    names exist (a Put of a name it has not seen yet asks, but an update
    spends nothing)."""

    def __init__(self, per_minute: int, max_sources: int = MAX_TRACKED_SOURCES) -> None:
        self.per_minute = per_minute
        self._max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, key: str, now_s: float) -> bool:
        """Whether ``key`` (a :func:`source_prefix`) has a claim left at
        time ``now_s``."""
        return self.per_minute <= 0 or self._refilled(key, now_s) >= 1.0

    def spend(self, key: str, now_s: float) -> None:
        """Take one claim from ``key``'s budget (it may go below zero when
        several claims were in flight at once: the debt is paid first)."""
        if self.per_minute > 0:
            self._buckets[key] = (self._refilled(key, now_s) - 1.0, now_s)
            self._buckets.move_to_end(key)
            if len(self._buckets) > self._max_sources:
                self._buckets.popitem(last=False)

    def _refilled(self, key: str, now_s: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.per_minute), now_s))
        return min(float(self.per_minute), tokens + max(0.0, now_s - at) * self.per_minute / 60.0)


class Refused(Exception):
    """A Put the policy turns away before it reaches the store; ``code`` is
    the JSON ``Code``, the message says why and what to do. ``as_claim``:
    refused only because the name looked new (the claim rate); a Put of a
    name the store does hold is no claim, and may go on."""

    def __init__(self, message: str, code: str, as_claim: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.as_claim = as_claim


class Admission:
    """The front end's gate for JSON Puts, applied before the store sees
    them. ``reserved(name)`` names the TSIG key a name is granted to (None:
    not reserved); ``name_servers`` are the zone's NS names (stored form),
    which no Put may take; ``known(name)`` says whether the name exists as far as
    this front end knows (its copy of the records), which is what decides
    whether a Put is a new claim for the claim rate."""

    def __init__(self, policy: AdmissionPolicy, trusted: TrustedSources,
                 reserved: Callable[[str], str | None], known: Callable[[str], bool],
                 name_servers: frozenset[str] = frozenset()) -> None:
        self.policy = policy
        self._name_servers = name_servers
        self._trusted = trusted
        self._reserved = reserved
        self._known = known
        self._claims = ClaimLimiter(policy.claims_per_minute)
        self._guesses = ClaimLimiter(policy.claims_per_minute)  # Puts refused as not the owner's

    def check_put(self, name: str, has_token: bool, source: str | None, now_s: float) -> None:
        """Raise :class:`Refused` for a Put of ``name`` (stored form) that the
        policy refuses: a new name from an untrusted source whose claims
        are spent is one (call :meth:`claimed` when a Put did claim)."""
        if not has_token and self.policy.open_names == "deny":
            raise Refused("this service takes only Puts with a Token (--open-names deny): "
                          "use put.py, which makes and keeps one", "token_required")
        if name in self._name_servers:
            raise Refused(f"name {name!r} is a name server of the zone: its address is the "
                          "operator's (--ns); choose another name", "reserved")
        key = self._reserved(name)
        if key is not None:
            raise Refused(f"name {name!r} is reserved for the TSIG key {key!r} in the keys file; "
                          "change it with nsupdate and that key", "reserved")
        if source in self._trusted:
            return
        prefix = _claimant(source)
        if not self._guesses.allow(prefix, now_s):
            # Tokens chosen by people (a router's dyndns2 password) can be
            # guessed: each wrong one costs a log entry, so they are counted.
            raise Refused(f"too many updates from {prefix} were refused as not the name "
                          f"owner's (at most {self.policy.claims_per_minute} a minute, "
                          "--claims-per-minute); check the token and try again in a minute",
                          "rate_limited")
        if not self._known(name) and not self._claims.allow(prefix, now_s):
            raise Refused(f"too many new names claimed from {prefix} "
                          f"(at most {self.policy.claims_per_minute} a minute, "
                          "--claims-per-minute); try again in a minute", "rate_limited",
                          as_claim=True)

    def claimed(self, source: str | None, now_s: float) -> None:
        """A Put from ``source`` claimed a name: spend one of its claims."""
        if source not in self._trusted:
            self._claims.spend(_claimant(source), now_s)

    def not_owner(self, source: str | None, now_s: float) -> None:
        """A Put from ``source`` was refused as not the name owner's
        (``owned``, ``bad_signature``, ``open``): spend one of its guesses."""
        if source not in self._trusted:
            self._guesses.spend(_claimant(source), now_s)


def _claimant(source: str | None) -> str:
    return source_prefix(source) if source else "an unknown source"
