"""The term survey a wiped node runs before it may vote again. Pure.

A node that lost its storage forgets the votes it cast. Had it voted in
term ``t`` and then voted again in ``t`` after the wipe, two candidates
could each count it and both lead ``t``. So, besides catching up its log,
a recovering node asks the other servers their current terms
(:class:`~mydns_lab.core.messages.TermQuery`) and votes in no term up to
the highest that a majority of them reported.

Why that is enough: a vote in ``t`` that helped elect someone is part of a
majority of all ``n`` servers, so at least ``n // 2`` *other* servers
granted a vote in ``t`` too and moved to term ``t`` or later, durably
(a vote leaves only once its term is persisted). A majority of the
``n - 1`` others has ``(n - 1) // 2 + 1`` members, and
``(n - 1) // 2 + 1 + n // 2 = n > n - 1``: the two sets share a server,
whose report is at least ``t``. Terms only grow, so a later report from
that server is as large. The same holds for an acknowledgement: entries of
term ``u`` committed with the lost node's help were acknowledged by a
majority at term ``u``, so the survey learns a term of at least ``u``; the
node therefore counts as caught up only from a leader of its term after
the survey (a leader of an older term lacks what later terms committed).
The argument needs those grants to have happened before the survey's
answers: a vote request sent before the wipe and still
in flight when the survey ends can be granted afterwards (no survey that
does not reach every server can see it); docs/architecture.md names this.

What survives a crash during recovery, and why nothing here is persisted:

* the survey itself need not be: the storage's durable ``recovering``
  marker keeps the restarted node from voting until it has run a new
  survey, and the new one is at least as protective (terms only grow, and
  any majority of the others meets the voters of ``t``);
* what the survey taught must outlive the marker, so it is folded into
  the hard state before the marker can be removed: the term rule has
  already lifted the node's term to at least the highest report, and when
  the node's term *is* that term, its vote in it is spent
  (``vote = own id``) so it cannot vote in it again. That hard state is
  part of the Ready that ends recovery, or an earlier one, and
  :func:`mydns_lab.host.handle_ready` persists a Ready before it removes
  the marker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .quorum import majority


@dataclass(slots=True)
class TermSurvey:
    """The terms the other servers reported to one survey.

    The node owns it while recovering: it sends a ``TermQuery`` carrying
    ``survey_id`` to every server in :meth:`unanswered` and records each
    matching ``TermReport`` with :meth:`record`. Once :attr:`complete` it
    catches up from a leader of its term (at least :attr:`highest_term`),
    then votes again, in terms above :attr:`highest_term` only.
    """

    survey_id: int
    others: tuple[int, ...]
    reported: dict[int, int] = field(default_factory=dict)  # server -> its term

    def record(self, server: int, term: int) -> None:
        """``server`` reported ``term`` (duplicates and reorderings are fine:
        the highest report of a server is kept)."""
        if server in self.others:
            self.reported[server] = max(term, self.reported.get(server, 0))

    @property
    def complete(self) -> bool:
        """A majority of the other servers answered (trivially, with none)."""
        return not self.others or len(self.reported) >= majority(len(self.others))

    @property
    def highest_term(self) -> int:
        """The highest term reported so far (0 before any report)."""
        return max(self.reported.values(), default=0)

    def unanswered(self) -> list[int]:
        """The servers still to ask, in id order."""
        return [server for server in self.others if server not in self.reported]
