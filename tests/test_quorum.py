"""Majority arithmetic: commit index from match indexes, vote tallies."""

from __future__ import annotations

import itertools

import pytest

from mydns_lab.core.quorum import VoteResult, committed_index, majority, vote_result


@pytest.mark.parametrize("voters, need", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority(voters: int, need: int) -> None:
    assert majority(voters) == need


@pytest.mark.parametrize("matches, index", [
    ([5], 5), ([5, 3], 3), ([5, 3, 1], 3), ([5, 5, 1, 1], 1), ([9, 7, 5, 3, 1], 5),
    ([0, 0, 7], 0), ([4, 4, 4], 4), ([8, 8, 8, 2, 2], 8),
])
def test_committed_index_is_highest_index_held_by_a_majority(matches: list[int],
                                                             index: int) -> None:
    for order in itertools.permutations(matches):
        assert committed_index(order) == index, order


@pytest.mark.parametrize("votes, result", [
    ({}, VoteResult.PENDING),
    ({1: True}, VoteResult.PENDING),
    ({1: True, 2: True}, VoteResult.WON),
    ({1: True, 2: False}, VoteResult.PENDING),
    ({1: True, 2: False, 3: False}, VoteResult.LOST),
    ({1: False, 2: False}, VoteResult.LOST),
    ({1: True, 9: True}, VoteResult.PENDING),  # 9 is not a voter
])
def test_vote_result_three_voters(votes: dict[int, bool], result: VoteResult) -> None:
    assert vote_result(votes, (1, 2, 3)) is result


def test_vote_result_even_cluster_needs_strict_majority() -> None:
    voters = (1, 2, 3, 4)
    assert vote_result({1: True, 2: True}, voters) is VoteResult.PENDING
    assert vote_result({1: True, 2: True, 3: False, 4: False}, voters) is VoteResult.LOST
    assert vote_result({1: True, 2: True, 3: True}, voters) is VoteResult.WON
    assert vote_result({1: True}, (1,)) is VoteResult.WON
