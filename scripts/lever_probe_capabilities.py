"""A capability-scoring lever measured on a labelled probe, against the deployment's own profile.

    CAPPROF_DATA_DIR=.capprof .venv/bin/python scripts/lever_probe_capabilities.py data/probe/dev_queries.jsonl

Each capability scores the mean cosine similarity of its `--nearest` closest exemplars (instead of the summed
similarity of the 16 nearest exemplars of any capability), and comprehension gains `--material-bonus` when the query
supplies material to read: a quoted passage of 6+ words, or a block of 6+ words after a colon and a line break.
Prints top-1 capability agreement: the deployment's profile, the scoring alone, and with the bonus
(docs/evaluation.md, "Query profiles against a person's labels"). Measured, not built in.

With `--classifier-cv` it prints instead how the capability classifier (`profiling.query_profile.ExemplarClassifier`)
was chosen: 5-fold cross-validation on the probe, every way of ranking capabilities fitted on the deployment's
capability exemplars less the probe's own queries (they are seeded as exemplars now), with and without the other
folds' probe queries added as exemplars: summed votes of the 16 nearest, the mean of the 6 nearest, and the
classifier at C = 1, 10 and 100.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from profiling.query_profile import CAPABILITY, ExemplarClassifier  # noqa: E402
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


Ranker = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (queries, exemplars, labels) -> scores


def summed_votes(
    queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, n_labels: int, k: int = 16
) -> np.ndarray:
    sims = queries @ vectors.T
    nearest = np.argsort(-sims, axis=1)[:, :k]
    votes = np.zeros((len(queries), n_labels))
    for row, columns in enumerate(nearest):
        np.add.at(votes[row], labels[columns], np.clip(sims[row, columns], 0.0, None))
    return votes


def mean_nearest(queries: np.ndarray, vectors: np.ndarray, labels: np.ndarray, n_labels: int, n: int = 6) -> np.ndarray:
    sims = queries @ vectors.T
    return np.stack([-np.sort(-sims[:, labels == c], axis=1)[:, :n].mean(axis=1) for c in range(n_labels)], axis=1)


def classifier_cv(
    queries: np.ndarray, truth: np.ndarray, vectors: np.ndarray, labels: np.ndarray, n_labels: int
) -> None:
    """Top-1 capability by 5-fold cross-validation on the probe, per ranking and training set."""
    folds = np.random.default_rng(0).permutation(np.arange(len(queries)) % 5)

    def classified(c: float) -> Ranker:
        def rank(q: np.ndarray, v: np.ndarray, y: np.ndarray) -> np.ndarray:
            classifier = ExemplarClassifier.fit(v, y, c)
            assert classifier is not None  # every capability has exemplars
            return classifier.probabilities(q)

        return rank

    rankers: dict[str, Ranker] = {
        "summed votes of the 16 nearest": lambda q, v, y: summed_votes(q, v, y, n_labels),
        "mean of the 6 nearest": lambda q, v, y: mean_nearest(q, v, y, n_labels),
        **{f"classifier, C = {c:g}": classified(c) for c in (1.0, 10.0, 100.0)},
    }
    for with_probe in (False, True):
        print("exemplars and the other folds' probe queries" if with_probe else "exemplars only")
        for name, rank in rankers.items():
            predicted = np.zeros(len(queries), np.int64)
            for fold in range(5):
                train, test = folds != fold, folds == fold
                v = np.vstack([vectors, queries[train]]) if with_probe else vectors
                y = np.concatenate([labels, truth[train]]) if with_probe else labels
                predicted[test] = rank(queries[test], v, y).argmax(axis=1)
            print(f"  {name:32s} {(predicted == truth).mean():.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", type=Path)
    parser.add_argument("--nearest", type=int, default=6)
    parser.add_argument("--material-bonus", type=float, default=0.1)
    parser.add_argument("--classifier-cv", action="store_true")
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
    if args.classifier_cv:
        own = (exemplars.index.vectors @ vectors.T).max(axis=1) > 0.9999  # the probe's queries seeded as exemplars
        labels = np.searchsorted(columns, exemplars.columns)
        classifier_cv(vectors, truth, exemplars.index.vectors[~own], labels[~own], len(columns))
        return
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
