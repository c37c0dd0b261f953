"""Scoring of single outputs. MCQA expectations were checked against opencompass
first_option_postprocess as shipped in the papers' fork (Zrc007/opencompass_CRaFT)."""

from __future__ import annotations

import pytest

from rait.data.scoring import (
    Outcome,
    cut_at_splitter,
    extract_option,
    is_refusal,
    match_answer,
    normalize_answer,
    score_mcqa,
    score_open,
)

# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "text, paper, keywords",
    [
        ("I don't know.", True, True),
        ("I DON'T KNOW", True, True),
        ("I don\u2019t know.", False, True),  # curly apostrophe: the papers' rule misses it
        ("I don\u02bct know", False, True),
        ("I do not know the answer.", False, True),
        ("I'm not sure, but maybe Paris.", False, True),
        ("I am unsure.", False, True),
        ("I can't answer that question.", False, True),
        ("I'm sorry, but I cannot help with that.", False, True),
        ("I don't have enough information to answer.", False, True),
        ("That fact is unknown to me.", False, True),
        ("Paris", False, False),
        ("", False, False),
        # a refusal phrase inside a longer answer still counts (and for the song title, wrongly)
        ("The 2012 hit single was 'I Don't Know' by Ruth B.", True, True),
        ("Paris, I think, though honestly i don't know for sure", True, True),
        # word boundaries: "know" must be the whole word
        ("I don't knowingly lie: Paris.", True, False),
        ("Mi don't know", True, False),
    ],
)
def test_refusal_modes(text, paper, keywords):
    assert is_refusal(text, "paper") is paper
    assert is_refusal(text, "keywords") is keywords


def test_refusal_unknown_mode_raises():
    with pytest.raises(ValueError, match="refusal mode"):
        is_refusal("I don't know", "judge")


# --------------------------------------------------------------------------- open QA


def test_cut_at_splitter_is_case_insensitive_and_keeps_original_case():
    text = "Paris\n\nANSWER THE FOLLOWING QUESTION AS SIMPLE as possible: What is 2+2?"
    assert cut_at_splitter(text, "Answer the following question as simple ") == "Paris\n\n"
    assert cut_at_splitter("Paris", "Answer the following") == "Paris"
    assert cut_at_splitter("Paris", "") == "Paris"


def test_normalize_answer_is_squad_style():
    assert normalize_answer("  The  Beatles!") == "beatles"
    assert normalize_answer("A Tale of Two Cities.") == "tale of two cities"


@pytest.mark.parametrize(
    "text, answers, contains, exact, word",
    [
        ("Paris", ["Paris"], True, True, True),
        ("  paris. ", ["Paris"], True, True, True),
        ("The capital is Paris.", ["Paris"], True, False, True),
        ("The Beatles", ["Beatles"], True, True, True),
        # short aliases and numbers: the papers' substring rule is loose
        ("gold", ["o"], True, False, False),
        ("It is made of gold.", ["O"], True, False, False),
        ("The symbol is Au.", ["Au"], True, False, True),
        ("Au", ["Au"], True, True, True),
        ("au revoir", ["Au"], True, False, False),  # case-sensitive for 1-2 letter aliases
        ("Oxygen, O.", ["O"], True, False, True),
        ("11", ["1"], True, False, False),
        ("He died in 1978.", ["7"], True, False, False),
        ("7 years", ["7"], True, False, True),
        ("1,000 people", ["1"], True, False, False),
        ("Blood type A", ["A"], True, False, True),  # "A" is not thrown away as an article
        ("An apple", ["A"], True, False, False),
        ("A", ["A"], True, True, True),
        # multi-line: exact looks at the first line only, the others at everything
        ("Paris\nIt is in France.", ["Paris"], True, True, True),
        ("Let me think.\nParis", ["Paris"], True, False, True),
        ("New York City is the answer", ["New York"], True, False, True),
        ("", ["Paris"], False, False, False),
        ("Paris", ["", "  "], False, False, False),  # blank aliases never match
        ("The", ["The"], True, False, False),  # an alias that normalises to nothing
    ],
)
def test_match_modes(text, answers, contains, exact, word):
    assert match_answer(text, answers, "contains") is contains
    assert match_answer(text, answers, "exact") is exact
    assert match_answer(text, answers, "word") is word


def test_match_unknown_mode_raises():
    with pytest.raises(ValueError, match="match mode"):
        match_answer("Paris", ["Paris"], "fuzzy")


def test_score_open_checks_refusal_first_and_never_unparsed():
    answers = ["Paris", "paris, france"]
    assert score_open("Paris", answers) == Outcome.CORRECT
    assert score_open("Lyon", answers) == Outcome.WRONG
    assert score_open("", answers) == Outcome.WRONG
    assert score_open("I don't know, maybe Paris?", answers) == Outcome.REFUSED
    assert score_open("I don\u2019t know, maybe Paris?", answers) == Outcome.CORRECT
    assert score_open("I don\u2019t know, maybe Paris?", answers, refusal_mode="keywords") == Outcome.REFUSED
    assert score_open("It is in Paris.", answers, match_mode="exact") == Outcome.WRONG
    assert score_open("Paris", answers) == "correct"  # outcomes compare equal to their strings


# --------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is (B)", "B"),
        ("the answer is: D", "D"),
        ("B.", "B"),
        ("  C  ", "C"),
        ("A", "A"),
        ("An apple", "A"),  # the cushion takes any capital option letter
        ("b", None),  # case-sensitive: a lone lower-case letter parses to nothing
        ("the answer is b", None),
        ("b) Paris", None),
        ("", None),
        ("I think so.", None),
        ("Option 2 is best", None),
        ("Answer: C is correct", "C"),  # a standalone letter beats the "A" of "Answer"
        ("Let me think.\nThe answer is C.\nBecause of X.", "C"),
        ("C\nD", "D"),  # a letter closing the output wins over an earlier one
        ("Erm, answer D or C", "C"),
        # quirks of the original, reproduced on purpose
        ("The correct answer is: Due to Bernoulli, \\boxed{C}", "D"),  # "is: D" of "Due"
        ("1. Dogs and Birds", "B"),  # first letter in options order within the match, not by position
        ("Dogs and Birds", "D"),
    ],
)
def test_extract_option_follows_first_option_postprocess(text, expected):
    assert extract_option(text) == expected


def test_extract_option_respects_the_options():
    assert extract_option("E. none of the above", "ABCDE") == "E"
    assert extract_option("E. none of the above") is None
    with pytest.raises(ValueError):
        extract_option("A", "A|B")


def test_score_mcqa_buckets():
    assert score_mcqa("The answer is (B)", "B") == Outcome.CORRECT
    assert score_mcqa("B.", "C") == Outcome.WRONG
    assert score_mcqa("b", "B") == Outcome.UNPARSED
    assert score_mcqa("", "B") == Outcome.UNPARSED
    assert score_mcqa("I don't know.", "A") == Outcome.REFUSED
    assert score_mcqa("I don't know. Maybe B.", "B") == Outcome.REFUSED  # refusal checked before parsing
    assert score_mcqa("I'm not sure. B.", "B") == Outcome.CORRECT
    assert score_mcqa("I'm not sure. B.", "B", refusal_mode="keywords") == Outcome.REFUSED
