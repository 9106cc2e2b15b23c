"""The record store's client protocol: operations, commands and replies.

What a front end's clerk sends to the servers, what the log carries and
what comes back. Clients are addressed like nodes, by int ids; the lab
gives clerks ids above every server id. Pure types; bytes are
:mod:`mydns_lab.codec`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .core.messages import NO_NODE


@dataclass(frozen=True, slots=True)
class KvOp:
    """One operation on the key/value store.

    ``kind`` is one of ``get``, ``put``, ``append``, ``cas`` (set ``value``
    if the current value equals ``expected``) and ``delete``. Missing keys
    read as the empty string.
    """

    kind: str
    key: str
    value: str = ""
    expected: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """One name's addresses, as the store keeps them.

    ``name`` is relative to the zone and already normalised
    (:func:`mydns_lab.records.normalize_name`). ``owner`` is the SHA-256
    (hex) of the token that claimed the name; the token itself is never
    stored. ``seq`` is the uploader's sequence number: an upload with a
    lower one never overwrites this record. ``updated_ms`` is the leader's
    wall clock when the last change was proposed.
    """

    name: str
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    txt: tuple[str, ...] = ()
    owner: str = ""
    seq: int = 0
    updated_ms: int = 0


@dataclass(frozen=True, slots=True)
class RecordOp:
    """One operation on DNS records.

    ``kind``: ``record_set`` (claim the name if free and the zone holds
    fewer than ``max_names`` names (0: no limit), else update it when
    ``owner`` matches and ``seq`` is not older), ``record_delete`` (when
    ``owner`` matches), ``record_expire`` (release the name if it was last
    changed before ``older_than_ms``, whoever owns it: the front ends'
    ``--expire``), ``record_get`` and ``record_list`` (linearizable
    reads), ``record_changes`` (a watch: what changed after serial
    ``since``; with ``name`` set, the next page of a full listing, after
    that name). ``ipv4`` holds only IPv4 addresses and ``ipv6`` only IPv6:
    the sender splits them by family (:func:`mydns_lab.records.split_addresses`).
    ``seq`` is the uploader's sequence number, nothing else. ``owner``
    :data:`mydns_lab.records.OPEN_OWNER` claims or updates an open name.

    The ``tsig_*`` fields stamp a change planned from a TSIG-signed DNS
    UPDATE (empty for every other op): the key's name, the request's Time
    Signed (seconds), its MAC (hex) and the op's place among the ops that
    request planned (0, 1, ...). The store refuses a stamp older than the
    last it accepted for that key, or of a message it already took (RFC
    8945 5.2.3; the rule is
    :func:`mydns_lab.records.accept_signed`). They say
    which message carried the op, not what it does, so equality leaves
    them out: two ops making the same change compare equal.
    """

    kind: str
    name: str = ""
    ipv4: tuple[str, ...] = ()
    ipv6: tuple[str, ...] = ()
    txt: tuple[str, ...] = ()
    owner: str = ""
    seq: int = 0
    since: int = 0
    tsig_key: str = field(default="", compare=False)
    tsig_time: int = field(default=0, compare=False)
    tsig_mac: str = field(default="", compare=False)
    tsig_part: int = field(default=0, compare=False)
    max_names: int = 0
    older_than_ms: int = 0


StoreOp = Union[KvOp, RecordOp]
"""Anything a clerk can ask of the store."""


@dataclass(frozen=True, slots=True)
class Command:
    """What a log entry of the record store carries.

    ``(client_id, seq)`` makes retries idempotent; ``time_ms`` is the wall
    time the leader stamped at proposal, so replicas never read a clock.
    ``checked``: the leader put a record operation in stored form
    (:func:`mydns_lab.records.checked_op`) before proposing it, so no
    replica checks it again; entries written before this field existed read
    as False and are checked when applied, as they always were.
    """

    client_id: int
    seq: int
    op: StoreOp
    time_ms: int = 0
    checked: bool = False


@dataclass(frozen=True, slots=True)
class ClientRequest:
    src: int
    dst: int
    client_id: int
    seq: int
    op: StoreOp


class Status:
    """Outcomes a :class:`ClientReply` can carry. A front end picks its
    reply by status and never reads the words of ``value`` (which are for
    people and may change). The refusals are kept in the record store's
    session table and its snapshots too, so a retried upload is refused for
    the same reason."""

    OK = "ok"
    NOT_LEADER = "not_leader"   # try ``leader_hint`` (0: unknown)
    RETRY = "retry"             # leadership was lost before an answer; try again
    ERROR = "error"             # the operation is invalid; ``value`` says why
    OWNED = "owned"             # the name was claimed by another owner
    STALE = "stale"             # the upload's seq is older than the stored record's
    NO_SPACE = "no_space"       # the leader's disk is (nearly) full: no writes until space is freed
    REPLAYED = "replayed"       # a signed op older than its key's last, or of a message taken
    OPEN = "open"               # an owner's claim of an open name (anyone may update it)
    ZONE_FULL = "zone_full"     # a claim when the zone holds ``max_names`` names


REFUSALS = frozenset({Status.ERROR, Status.OWNED, Status.STALE, Status.OPEN, Status.ZONE_FULL})
"""Every status of an operation the store refused: final, not to retry.
Each has a JSON ``Code``; ``REPLAYED`` is not here because only ops stamped
from a TSIG-signed DNS UPDATE can get it, and DNS answers it as a TSIG
error (BADTIME), not as a JSON refusal."""

FINAL = REFUSALS | {Status.OK, Status.NO_SPACE, Status.REPLAYED}
"""Every status a clerk stops at: an answer, not a reason to try another
server. ``NO_SPACE`` is final for this attempt (every server shares the
leader's view until space is freed); it is not kept in the session table,
so the same request succeeds once writes resume."""


class Outcome:
    """What an accepted record change did (:attr:`ClientReply.outcome`)."""

    NONE = ""            # a read, a KV operation, or a refusal
    CLAIMED = "claimed"  # the name was free and now belongs to the sender
    UPDATED = "updated"  # the owner changed its addresses
    DELETED = "deleted"  # the owner removed the name
    EXPIRED = "expired"  # not refreshed within the front ends' --expire: released


@dataclass(frozen=True, slots=True)
class ClientReply:
    """The store's answer to a :class:`ClientRequest`.

    ``status`` decides (see :class:`Status`); ``value`` is a KV read's
    value or, for a refusal, the reason in words for people. Record
    operations answer in fields: ``outcome`` (an :class:`Outcome`) for a
    change, ``records`` and the zone's ``serial`` for a read; a watch's
    ``records`` are every record when ``full`` is set, else the ones that
    changed after the serial it named (a deleted name as a record with no
    owner), and it resumes from ``serial``. A full answer comes in pages:
    ``more`` says another follows (see ``RecordOp``).
    """

    src: int
    dst: int
    client_id: int
    seq: int
    status: str
    value: str = ""
    leader_hint: int = NO_NODE
    records: tuple[Record, ...] = ()
    outcome: str = Outcome.NONE
    serial: int = 0
    full: bool = False
    more: bool = False


@dataclass(frozen=True, slots=True)
class KvSnapshot:
    """The record store's state as stored in a Raft snapshot."""

    items: tuple[tuple[str, str], ...]
    records: tuple[Record, ...]
    sessions: tuple[tuple[int, int, str, str], ...]  # client, seq, status, value
    serial: int = 0
    outcomes: tuple[str, ...] = ()
    """The :class:`Outcome` of each session's last result, in the order of
    ``sessions`` (empty in snapshots written before outcomes had a field)."""
    signed: tuple[tuple[str, int, str, int], ...] = ()
    """Replay protection for TSIG keys: (key name, Time Signed, MAC, last
    part) for each message accepted at its key's latest Time Signed (empty
    in snapshots written before it had a field)."""
