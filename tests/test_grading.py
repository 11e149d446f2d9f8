"""The family grading rules of the shared data's README, on hand-made replies and on every real gold answer."""

from __future__ import annotations

import json

import pytest

from profiling.grading import gradable, grade, mmlu_pro_letter, zeroeval_answer
from tests.conftest import csv_rows, shared_family


def _json_reply(answer: str) -> str:
    return "Reasoning first.\n" + json.dumps({"reasoning": "because", "answer": answer})


def test_mmlu_pro_takes_the_letter_after_answer_is_else_after_answer_colon() -> None:
    assert mmlu_pro_letter("... so the answer is (C).") == "C"
    assert mmlu_pro_letter("Thus the answer is D") == "D"
    assert mmlu_pro_letter("Answer: B") == "B"
    assert mmlu_pro_letter("the answer is (E) and later Answer: B") == "E"
    assert mmlu_pro_letter("I think it is C") is None
    assert grade("mmlu_pro", None, "the answer is (C)", "C") == 1.0
    assert grade("mmlu_pro", None, "the answer is (C)", "D") == 0.0
    assert grade("mmlu_pro", None, "no letter here", "C") == 0.0


def test_zeroeval_numbers_compare_first_numbers_and_crux_compares_exactly() -> None:
    assert zeroeval_answer('text {"a": 1} then {"reasoning": "r", "answer": "42"}') == "42"
    assert zeroeval_answer("no json at all") is None
    assert grade("zeroeval", "gsm", _json_reply("$1,200 in total"), "1200") == 1.0
    assert grade("zeroeval", "gsm", _json_reply("1201"), "1200") == 0.0
    assert grade("zeroeval", "math-l5", _json_reply("x = -3"), "-3") == 1.0
    assert grade("zeroeval", "gsm", "the answer is 1200", "1200") == 0.0  # no JSON object: wrong
    assert grade("zeroeval", "crux", _json_reply("'abc'"), "'abc'") == 1.0
    assert grade("zeroeval", "crux", _json_reply("abc"), "'abc'") == 1.0  # outer quotes stripped
    assert grade("zeroeval", "crux", _json_reply("'abd'"), "'abc'") == 0.0
    assert not gradable("routerbench", "A") and not gradable("zeroeval", "") and gradable("mmlu_pro", "C")


@pytest.mark.parametrize("family", ["mmlu_pro", "zeroeval"])
def test_every_real_gold_answer_grades_right_when_given_and_wrong_otherwise(family: str) -> None:
    queries = csv_rows(shared_family(family) / "queries.csv.gz")
    assert all(gradable(q["benchmark"], q["answer"]) for q in queries)
    for q in queries:
        gold = q["answer"]
        if family == "mmlu_pro":
            right, wrong = f"... the answer is ({gold})", f"the answer is ({'A' if gold != 'A' else 'B'})"
        else:
            right, wrong = _json_reply(gold), _json_reply("@@ nothing @@")
        assert grade(q["benchmark"], q["subject"], right, gold) == 1.0, q["query_id"]
        assert grade(q["benchmark"], q["subject"], wrong, gold) == 0.0, q["query_id"]
