"""A capability-scoring lever measured on a labelled probe, against the deployment's own profile.

    CAPPROF_DATA_DIR=.capprof .venv/bin/python scripts/lever_probe_capabilities.py data/probe/dev_queries.jsonl

Each capability scores the mean cosine similarity of its `--nearest` closest exemplars (instead of the summed
similarity of the 16 nearest exemplars of any capability), and comprehension gains `--material-bonus` when the query
supplies material to read: a quoted passage of 6+ words, or a block of 6+ words after a colon and a line break.
Prints top-1 capability agreement: the deployment's profile, the scoring alone, and with the bonus
(docs/evaluation.md, "Query profiles against a person's labels"). Measured, not built in.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiling.query_profile import CAPABILITY  # noqa: E402
from service.cli import _opened  # noqa: E402
from service.jobs.probe import read_probe  # noqa: E402
from service.store.readers import load_profiler  # noqa: E402

# a straight single quote opens only after a non-letter and closes only before one: "students' grades" and
# "What's" are apostrophes, not quotes
QUOTED = re.compile(r"""(?:"(.{20,}?)"|\u201c(.{20,}?)\u201d|\u2018(.{20,}?)\u2019|(?<!\w)'(.{20,}?)'(?!\w))""", re.S)
BLOCK = re.compile(r":\s*\n")


def supplies_material(text: str, min_words: int = 6) -> bool:
    """A quoted passage or a block after a colon and a line break, of at least `min_words` words."""
    if any(len(next(g for g in m.groups() if g is not None).split()) >= min_words for m in QUOTED.finditer(text)):
        return True
    block = BLOCK.search(text)
    return block is not None and len(text[block.end() :].split()) >= min_words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", type=Path)
    parser.add_argument("--nearest", type=int, default=6)
    parser.add_argument("--material-bonus", type=float, default=0.1)
    args = parser.parse_args()
    items = read_probe(args.probe)
    with _opened("probe") as runtime, runtime.sessions() as session:
        profiler = load_profiler(session, runtime.store, runtime.settings)
        vectors = runtime.embedder.embed([i.text for i in items])
    weights, _, _ = profiler.profile_vectors(vectors)
    exemplars = profiler.exemplars[CAPABILITY]
    columns = np.unique(exemplars.columns)
    names = [profiler.catalog.names[c] for c in columns]
    truth = np.array([names.index(i.capability) if i.capability in names else -1 for i in items])
    now = (weights[:, columns].argmax(axis=1) == truth).mean()
    sims = vectors @ exemplars.index.vectors.T
    scores = np.stack(
        [-np.sort(-sims[:, exemplars.columns == c], axis=1)[:, : args.nearest].mean(axis=1) for c in columns], axis=1
    )
    alone = (scores.argmax(axis=1) == truth).mean()
    material = np.array([supplies_material(i.text) for i in items])
    scores[material, names.index("comprehension")] += args.material_bonus
    print(
        f"{len(items)} queries ({material.sum()} supply material): top-1 capability {now:.1%} as deployed, "
        f"{alone:.1%} by the mean of the {args.nearest} nearest exemplars, "
        f"{(scores.argmax(axis=1) == truth).mean():.1%} with the material bonus {args.material_bonus}"
    )


if __name__ == "__main__":
    main()
