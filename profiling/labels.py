"""Readable names for the benchmark labels that seed domain dimensions (`ori_mmlu-high_school_mathematics` ->
`high school mathematics`), so a query profile reads like something a person would say."""

from __future__ import annotations

import re

# Source prefixes that name where an item came from, not what it is about.
_PREFIXES = ("ori_mmlu-", "stemez-", "theoremqa-", "scibench-")

# Labels that are abbreviations or dataset names: what they are about, in words.
_KNOWN = {
    "gsm": "grade school math word problems",
    "math-l5": "competition mathematics",
    "crux": "code execution reasoning",
    "mbpp": "basic python programming",
    "arc-challenge": "grade school science",
    "winogrande": "commonsense reasoning",
    "commonsense": "commonsense reasoning",
    "science": "general science",
    "code": "programming",
    "other": "general knowledge",
    "miscellaneous": "general knowledge",
    "eecs": "electrical engineering and computer science",
    "matter": "physical chemistry",
    "atkins": "physical chemistry",
    "chemmc": "chemistry",
    "quan": "quantum chemistry",
    "fund": "fundamental physics",
    "class": "classical mechanics",
    "thermo": "thermodynamics",
    "diff": "differential equations",
    "stat": "statistics",
    "calculus": "calculus",
    "math": "mathematics",
    "us foreign policy": "us foreign policy",
}


def readable_label(label: str) -> str:
    """A lower-case, space-separated topic name for a source label; unknown labels are only tidied up."""
    text = label.strip()
    lowered = text.lower()
    for prefix in _PREFIXES:
        if lowered.startswith(prefix):
            text = text[len(prefix) :]
            break
    if text.lower() in _KNOWN:
        return _KNOWN[text.lower()]
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # OrganicChemistry -> Organic Chemistry
    text = re.sub(r"[_\s]+", " ", text).strip().lower()
    return _KNOWN.get(text, text)
