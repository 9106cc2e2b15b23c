"""Majority arithmetic: commit indexes and vote tallies. Pure functions."""

from __future__ import annotations

import enum
from typing import Iterable, Mapping, Sequence


def majority(voters: int) -> int:
    """Smallest number of voters that is more than half of ``voters``."""
    return voters // 2 + 1


def committed_index(match_indexes: Iterable[int]) -> int:
    """Highest index held by a majority, given one match index per voter."""
    ordered = sorted(match_indexes, reverse=True)
    return ordered[majority(len(ordered)) - 1]


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def vote_result(votes: Mapping[int, bool], voters: Sequence[int]) -> VoteResult:
    """Outcome of an election given the answers received so far.

    ``votes`` maps a voter to whether it granted its vote; voters that have
    not answered are absent.
    """
    need = majority(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    if granted >= need:
        return VoteResult.WON
    missing = sum(1 for v in voters if v not in votes)
    if granted + missing < need:
        return VoteResult.LOST
    return VoteResult.PENDING
