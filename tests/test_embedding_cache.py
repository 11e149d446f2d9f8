"""The embedding cache: seen texts are never embedded again, across processes too."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from profiling.embedder import Vectors
from profiling.embedding_cache import CachedEmbedder


class CountingEmbedder:
    name = "counting"
    dimension = 4

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        rows = np.array([[len(t), t.count("a"), 1.0, i] for i, t in enumerate(texts)], np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_only_unseen_texts_are_embedded_and_the_cache_survives_a_restart(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, tmp_path)
    first = cache.embed(["alpha", "beta", "alpha"])
    assert inner.calls == [["beta", "alpha"]]  # deduplicated, shortest first
    np.testing.assert_array_equal(first[0], first[2])
    cache.embed(["beta", "gamma"])
    assert inner.calls[-1] == ["gamma"]
    cache.save()

    reopened_inner = CountingEmbedder()
    reopened = CachedEmbedder(reopened_inner, tmp_path)
    np.testing.assert_array_equal(reopened.embed(["alpha"])[0], first[0])
    assert reopened_inner.calls == []
    assert len(reopened) == 3
