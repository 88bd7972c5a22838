"""pass@k, avg@k, maj@k and semantic entropy against hand-computed values."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from empo_trainer.evaluation.metrics import (avg_at_k, cluster_answers, maj_at_k, majority_index, pass_at_k,
                                             pass_k_values, semantic_entropy)


@pytest.mark.parametrize("n, c, k, exact", [
    (1, 1, 1, Fraction(1)),
    (1, 0, 1, Fraction(0)),
    (5, 2, 1, Fraction(2, 5)),                   # pass@1 = c / n
    (5, 2, 2, 1 - Fraction(3, 10)),              # C(3,2)/C(5,2) = 3/10
    (10, 3, 5, 1 - Fraction(21, 252)),           # C(7,5)=21, C(10,5)=252
    (8, 1, 4, Fraction(1, 2)),                   # C(7,4)/C(8,4) = 35/70
    (8, 0, 8, Fraction(0)),
    (16, 13, 4, Fraction(1)),                    # n - c < k: every draw holds a correct one
    (16, 2, 8, 1 - Fraction(3003, 12870)),       # C(14,8)=3003, C(16,8)=12870
    (200, 7, 100, 1 - Fraction(math.comb(193, 100), math.comb(200, 100))),  # big binomials stay exact
])
def test_pass_at_k_matches_the_combinatorial_formula(n, c, k, exact):
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


@pytest.mark.parametrize("n, c, k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(n, c, k)


def test_avg_at_k_is_the_share_correct():
    assert avg_at_k([True, False, True, True]) == 0.75
    assert avg_at_k([]) == 0.0


def _eq(a: str, b: str) -> bool:  # a toy equivalence: numbers by value
    return float(a) == float(b)


@pytest.mark.parametrize("answers, expected", [
    (["2", "2.0", "3", None, "3", "2"], [0, 0, 1, 2, 1, 0]),   # None is its own cluster
    ([None, None], [0, 1]),
    (["5"], [0]),
])
def test_cluster_answers_groups_equivalent_answers(answers, expected):
    assert cluster_answers(answers, _eq) == expected


@pytest.mark.parametrize("clusters, entropy", [
    ([0, 0, 0, 0], 0.0),
    ([0, 1, 2, 3], math.log(4)),
    ([0, 0, 1, 1], math.log(2)),
    ([0, 0, 0, 1], -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))),
])
def test_semantic_entropy(clusters, entropy):
    assert semantic_entropy(clusters) == pytest.approx(entropy)


@pytest.mark.parametrize("answers, correct, expected_majority, expected_maj", [
    (["7", "7.0", "8", None], [True, True, False, False], 0, True),
    (["8", "7", "8", "7", "8"], [False, True, False, True, False], 0, False),   # wrong majority beats right minority
    (["7", "8", "8", "7"], [True, False, False, True], 0, True),                 # tie: the cluster seen first
    ([None, None, "9"], [False, False, True], 2, True),                          # unparsed answers never win
    ([None, None], [False, False], None, False),
])
def test_majority_vote(answers, correct, expected_majority, expected_maj):
    clusters = cluster_answers(answers, _eq)
    assert majority_index(answers, clusters) == expected_majority
    assert maj_at_k(answers, correct, clusters) is expected_maj


def test_pass_k_values_are_powers_of_two_then_k():
    assert pass_k_values(1) == [1]
    assert pass_k_values(8) == [1, 2, 4, 8]
    assert pass_k_values(12) == [1, 2, 4, 8, 12]
