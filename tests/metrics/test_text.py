import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamo.metrics.text import exact_match, lcs_length, rouge_l, tokens


def test_tokens_ignore_case_and_punctuation():
    assert tokens("The Circle, moved; left!") == ["the", "circle", "moved", "left"]


def test_rouge_l_on_hand_computed_pairs():
    # LCS of "the cat sat on the mat" / "the cat is on a mat" is "the cat on mat": 4 of 6 words each
    score = rouge_l("The cat sat on the mat", "the cat is on a mat")
    assert (score.precision, score.recall, score.f1) == pytest.approx((4 / 6, 4 / 6, 4 / 6))
    score = rouge_l("a b c d", "d c b a")
    assert score.f1 == pytest.approx(0.25)
    assert rouge_l("", "anything").f1 == 0 and rouge_l("x", "").f1 == 0 and rouge_l("x y", "z").f1 == 0


def test_exact_match_ignores_case_and_punctuation_only():
    assert exact_match("Two shapes.", "two shapes")
    assert not exact_match("Two shapes.", "Three shapes.")


sentences = st.lists(st.sampled_from(["a", "b", "c", "red", "circle", "the"]), max_size=8).map(" ".join)


@given(sentences, sentences)
def test_rouge_l_is_bounded_symmetric_in_f1_and_one_on_identity(a, b):
    forward, backward = rouge_l(a, b), rouge_l(b, a)
    assert 0 <= forward.f1 <= 1
    assert forward.f1 == pytest.approx(backward.f1)
    assert forward.precision == pytest.approx(backward.recall)
    assert lcs_length(tokens(a), tokens(b)) <= min(len(tokens(a)), len(tokens(b)))
    if tokens(a):
        assert rouge_l(a, a).f1 == 1
