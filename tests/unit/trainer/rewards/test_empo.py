import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empo_trainer.rewards.empo import (
    GroupFilter, copies_question, normalized_entropy, rouge_l_precision, score_group, semantic_entropy,
)


def test_rewards_are_cluster_shares():
    r = score_group(["a", "a", "b", "a"], [0, 0, 1, 0])
    assert r.rewards == [0.75, 0.75, 0.25, 0.75]
    assert r.entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert r.majority_answer == "a" and r.majority_ratio == 0.75 and not r.filtered and r.num_clusters == 2


def test_all_equal_has_zero_entropy_and_zero_advantage():
    r = score_group(["7"] * 5, [0] * 5)
    assert r.entropy == 0.0 and r.normalized_entropy == 0.0 and not r.filtered
    assert len(set(r.rewards)) == 1  # (r - mean) / std is 0 for every sample


def test_all_distinct_is_filtered_by_the_default_band():
    r = score_group(["1", "2", "3", "4", "5", "6", "7"], list(range(7)))
    assert r.normalized_entropy == 1.0
    assert r.filtered and r.rewards == [0.0] * 7


@pytest.mark.parametrize("band, min_majority, filtered", [
    ((0.0, 1.0), 0.0, False),
    ((0.0, 0.5), 0.0, True),  # H / ln 4 = 0.75 is above the band
    ((0.8, 1.0), 0.0, True),  # and below this one
    ((0.0, 1.5), 0.6, True),  # majority 0.5 < 0.6
    ((0.0, 1.5), 0.5, False),
])
def test_group_filter(band, min_majority, filtered):
    r = score_group(["a", "a", "b", "c"], [0, 0, 1, 2], group_filter=GroupFilter(*band, min_majority))
    assert r.normalized_entropy == pytest.approx(0.75)
    assert r.filtered is filtered
    assert (len(set(r.rewards)) == 1) if filtered else r.rewards == [0.5, 0.5, 0.25, 0.25]


@pytest.mark.parametrize("mode, expected", [("zero", [0.5, 0.5, 0.0, 0.0]), ("singleton", [0.5, 0.5, 0.25, 0.25])])
def test_unanswered(mode, expected):
    r = score_group(["a", "a", None, None], [0, 0, None, None], unanswered=mode)
    assert r.rewards == expected
    assert r.unanswered == 2 and r.num_clusters == 3  # each unanswered one is its own cluster
    assert r.cluster_ids == [0, 0, 1, 2]


def test_free_form_rules():
    r = score_group(["Paris", "Paris", None, "what is the capital of France"], [0, 0, None, None],
                    free_form=True, copied=[False, False, False, True])
    assert r.rewards == [0.5, 0.5, -0.5, 0.0]


def test_no_answers_at_all():
    r = score_group([None, None, None], [None, None, None])
    assert r.majority_answer is None and r.filtered and r.rewards == [0.0] * 3


@pytest.mark.parametrize("answer, copy", [
    ("What is the capital of France", True),  # substring
    ("What is the capital city of France", True),  # not a substring; ROUGE-L precision 6/7
    ("Paris", False),  # short answers occurring in the question are fine
    ("The capital city is Paris, on the Seine", False),
])
def test_copies_question(answer, copy):
    assert copies_question(answer, "What is the capital of France? Explain.") is copy


def test_rouge_l_precision():
    assert rouge_l_precision("a b c d", "a x b y c") == 0.75


groups = st.lists(st.integers(0, 5), min_size=1, max_size=16)


def _score(labels, unanswered_mask=None):
    answers = [None if unanswered_mask and unanswered_mask[i] else str(x) for i, x in enumerate(labels)]
    first = {}
    ids = []
    for a in answers:
        ids.append(None if a is None else first.setdefault(a, len(first)))
    return score_group(answers, ids, group_filter=GroupFilter(0.0, 1.5, 0.0))


@settings(max_examples=200, deadline=None)
@given(groups, st.lists(st.booleans(), min_size=16, max_size=16), st.sampled_from(["zero", "singleton"]))
def test_rewards_in_unit_interval_and_entropy_bounded(labels, mask, mode):
    answers = [None if mask[i] else str(x) for i, x in enumerate(labels)]
    ids, first = [], {}
    for a in answers:
        ids.append(None if a is None else first.setdefault(a, len(first)))
    r = score_group(answers, ids, unanswered=mode)
    assert all(0.0 <= x <= 1.0 for x in r.rewards)
    assert 0.0 <= r.entropy <= math.log(len(labels)) + 1e-12
    assert 0.0 <= r.normalized_entropy <= 1.0


@settings(max_examples=200, deadline=None)
@given(groups)
def test_mean_reward_is_sum_of_squared_cluster_shares(labels):
    r = _score(labels)
    shares = [labels.count(v) / len(labels) for v in set(labels)]
    assert sum(r.rewards) / len(labels) == pytest.approx(sum(p * p for p in shares))
    assert r.entropy == pytest.approx(semantic_entropy([labels.count(v) for v in set(labels)]))


@settings(max_examples=200, deadline=None)
@given(groups, st.randoms(use_true_random=False))
def test_permutation_invariance(labels, rnd):
    order = list(range(len(labels)))
    rnd.shuffle(order)
    a, b = _score(labels), _score([labels[i] for i in order])
    assert [b.rewards[order.index(i)] for i in range(len(labels))] == pytest.approx(a.rewards)
    assert b.entropy == pytest.approx(a.entropy) and b.filtered == a.filtered
    assert b.majority_ratio == a.majority_ratio


def test_normalized_entropy_of_a_single_sample():
    assert normalized_entropy(0.0, 1) == 0.0
