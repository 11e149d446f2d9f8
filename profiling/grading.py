"""Grading a model's answer against a gold answer with its family's own rule (the shared data's README).

- mmlu_pro: the letter after "answer is (X)", else after "Answer: X", as MMLU-Pro's evaluation script does.
- zeroeval: the model ends with a JSON object {"reasoning": ..., "answer": ...}; gsm and math-l5 compare the first
  number of both answers (commas and $ removed); crux compares the answers exactly, outer quotes stripped.
Anything that cannot be extracted counts as wrong; a family without a rule (routerbench) is not gradable.
"""

from __future__ import annotations

import json
import re

MMLU_PRO_INSTRUCTION = (
    "Answer the following multiple choice question. Think step by step, then finish with "
    '"The answer is (X)" where X is the letter of the correct option.'
)
ZEROEVAL_INSTRUCTION = (
    "Solve the following problem. Think step by step, then end your reply with a JSON object of the form "
    '{"reasoning": "<your reasoning>", "answer": "<your final answer only>"}.'
)
INSTRUCTIONS = {"mmlu_pro": MMLU_PRO_INSTRUCTION, "zeroeval": ZEROEVAL_INSTRUCTION}
NUMERIC_SUBJECTS = ("gsm", "math-l5")

_ANSWER_IS = re.compile(r"answer is \(?([A-J])\)?")
_ANSWER_COLON = re.compile(r"[aA]nswer:\s*\(?([A-J])\b")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def gradable(benchmark: str, gold: str | None) -> bool:
    return bool(gold and gold.strip()) and benchmark in INSTRUCTIONS


def mmlu_pro_letter(text: str) -> str | None:
    match = _ANSWER_IS.search(text) or _ANSWER_COLON.search(text)
    return match.group(1) if match else None


def zeroeval_answer(text: str) -> str | None:
    """The `answer` of the last JSON object in the reply that has one."""
    decoder = json.JSONDecoder()
    for start in reversed([i for i, ch in enumerate(text) if ch == "{"]):
        try:
            value, _ = decoder.raw_decode(text[start:])
        except ValueError:
            continue
        if isinstance(value, dict) and "answer" in value:
            answer = value["answer"]
            return answer if isinstance(answer, str) else json.dumps(answer)
    return None


def first_number(text: str) -> float | None:
    match = _NUMBER.search(text.replace(",", "").replace("$", ""))
    return float(match.group(0)) if match else None


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def grade(benchmark: str, subject: str | None, reply: str, gold: str) -> float:
    """1.0 when the reply's extracted answer matches the gold answer under the family's rule, else 0.0."""
    if benchmark == "mmlu_pro":
        return float(mmlu_pro_letter(reply) == gold.strip().upper())
    if benchmark == "zeroeval":
        answer = zeroeval_answer(reply)
        if answer is None:
            return 0.0
        if (subject or "") in NUMERIC_SUBJECTS:
            mine, right = first_number(answer), first_number(gold)
            return float(mine is not None and right is not None and mine == right)
        return float(_unquote(answer) == _unquote(gold))
    raise ValueError(f"no grading rule for benchmark {benchmark!r}")


def prompt(benchmark: str, text: str) -> list[dict[str, str]]:
    """The chat messages that ask a model the item the way its family's scores were made."""
    return [{"role": "system", "content": INSTRUCTIONS[benchmark]}, {"role": "user", "content": text}]
