"""Model-SAT's aptitude test: 50 tasks x 20 items chosen from evaluation data to separate models.

Tasks come from the data's subject labels: small subjects are merged into their nearest neighbour (by
centroid), and where there are too few subjects they are split into balanced clusters of query embeddings.
Items are the task's queries spread over the share of models right on them (never all or none), so the test
measures strong models against each other as well as against weak ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import TfidfVectorizer


@dataclass(frozen=True)
class AptitudeTask:
    position: int
    description: str
    keywords: tuple[str, ...]
    item_rows: tuple[int, ...]  # rows into the caller's query list


@dataclass(frozen=True)
class AptitudeTest:
    tasks: tuple[AptitudeTask, ...]

    @property
    def item_rows(self) -> list[int]:
        return [row for task in self.tasks for row in task.item_rows]


def _order_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _merge_small(
    groups: dict[str, list[int]], vectors: npt.NDArray[np.float32], min_size: int, n_tasks: int
) -> dict[str, list[int]]:
    """Merge the smallest group into its nearest group until every group is big enough and few enough remain."""
    groups = {k: list(v) for k, v in groups.items()}
    while len(groups) > 1:
        smallest = min(groups, key=lambda k: (len(groups[k]), k))
        if len(groups[smallest]) >= min_size and len(groups) <= n_tasks:
            break
        centroid = vectors[groups[smallest]].mean(axis=0)
        nearest = max(
            (k for k in groups if k != smallest),
            key=lambda k: (float(vectors[groups[k]].mean(axis=0) @ centroid), k),
        )
        groups[f"{nearest} + {smallest}" if len(nearest) < 60 else nearest] = groups.pop(nearest) + groups.pop(smallest)
    return groups


def _bisect(rows: list[int], vectors: npt.NDArray[np.float32], parts: int) -> list[list[int]]:
    """Balanced divisive clustering: cut along the principal direction of the group's embeddings, recursively.

    Floor cuts keep every leaf at least len(rows) // parts long, so no task ends up short of items.
    """
    if parts == 1:
        return [rows]
    left_parts = parts // 2
    centred = vectors[rows] - vectors[rows].mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    ordered = [rows[i] for i in np.argsort(centred @ direction, kind="stable")]
    cut = len(rows) * left_parts // parts
    return _bisect(ordered[:cut], vectors, left_parts) + _bisect(ordered[cut:], vectors, parts - left_parts)


def _split_large(
    groups: dict[str, list[int]], vectors: npt.NDArray[np.float32], n_tasks: int, min_size: int
) -> dict[str, list[int]]:
    """Give each group a share of the tasks (by size, never more than it can fill) and split it that many ways."""
    capacity = {k: max(1, len(v) // min_size) for k, v in groups.items()}
    budget = dict.fromkeys(groups, 1)
    while sum(budget.values()) < n_tasks:
        open_groups = [k for k in groups if budget[k] < capacity[k]]
        if not open_groups:
            break
        budget[max(open_groups, key=lambda k: (len(groups[k]) / (budget[k] + 1), k))] += 1
    split: dict[str, list[int]] = {}
    for name, rows in groups.items():
        parts = _bisect(rows, vectors, budget[name])
        for number, part in enumerate(parts, start=1):
            split[name if len(parts) == 1 else f"{name} #{number}"] = part
    return split


def _keywords(texts: Sequence[str], groups: dict[str, list[int]], top: int = 4) -> dict[str, tuple[str, ...]]:
    tfidf = TfidfVectorizer(stop_words="english", max_features=20_000, token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]{2,}\b")
    matrix = tfidf.fit_transform(texts)
    vocabulary = np.array(tfidf.get_feature_names_out())
    keywords = {}
    for name, rows in groups.items():
        weights = np.asarray(matrix[rows].mean(axis=0)).ravel()
        keywords[name] = tuple(vocabulary[np.argsort(-weights)[:top]])
    return keywords


def _pick_items(
    rows: list[int], share_right: npt.NDArray[np.float64], texts: Sequence[str], count: int, spread: bool
) -> list[int]:
    """`count` distinct items of a task. Spread: one per evenly spaced share of right models (1/2k, 3/2k, ...), so
    the test measures strong models against each other as well as against weak ones; otherwise the items nearest
    a half share, which nearly every strong model gets right."""
    distinct: dict[str, int] = {}
    for row in sorted(rows, key=lambda r: (abs(share_right[r] - 0.5), _order_key(texts[r]))):
        distinct.setdefault(texts[row], row)
    pool = list(distinct.values())
    if not spread:
        return pool[:count]
    chosen: list[int] = []
    wanted = min(count, len(pool))
    for target in (np.arange(wanted) + 0.5) / wanted:
        best = min(pool, key=lambda r: abs(share_right[r] - target))
        pool.remove(best)
        chosen.append(best)
    return chosen


def build_aptitude_test(
    texts: Sequence[str],
    subjects: Sequence[str],
    vectors: npt.NDArray[np.float32],
    outcomes: npt.NDArray[np.float64],
    n_tasks: int = 50,
    items_per_task: int = 20,
    spread: bool = True,
) -> AptitudeTest:
    """outcomes: (queries x models), NaN where a model was not evaluated; one row per text."""
    known = ~np.isnan(outcomes)
    share_right = np.divide(
        np.nansum(outcomes >= 0.5, axis=1),
        known.sum(axis=1),
        where=known.sum(axis=1) > 0,
        out=np.full(len(texts), np.nan),
    )
    separating = (known.sum(axis=1) >= 2) & (share_right > 0) & (share_right < 1)

    groups: dict[str, list[int]] = {}
    for row, subject in enumerate(subjects):
        if separating[row]:
            groups.setdefault(subject or "general", []).append(row)
    if not groups:
        raise ValueError("no query separates the models (every query was answered by all or by none)")
    groups = _merge_small(groups, vectors, items_per_task, n_tasks)
    if len(groups) < n_tasks:
        groups = _split_large(groups, vectors, n_tasks, items_per_task)
    keywords = _keywords(texts, groups)

    tasks = []
    for position, name in enumerate(sorted(groups, key=lambda k: (-len(groups[k]), k))):
        chosen = _pick_items(groups[name], share_right, texts, items_per_task, spread)
        description = f"{name}: {', '.join(keywords[name])}"
        tasks.append(AptitudeTask(position, description, keywords[name], tuple(chosen)))
    return AptitudeTest(tuple(tasks))
