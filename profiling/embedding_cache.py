"""A disk cache of embeddings keyed by text hash, so re-imports and re-evaluations never re-embed."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from profiling.embedder import TextEmbedder, Vectors, text_hash


class CachedEmbedder:
    """Wraps an embedder; vectors live in memory and in one .npz file per embedding model."""

    def __init__(self, inner: TextEmbedder, cache_dir: Path | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self._path = cache_dir / f"{inner.name}.npz" if cache_dir else None
        self._index: dict[str, int] = {}
        self._rows: list[Vectors] = []
        self._unsaved = 0
        self._lock = threading.Lock()
        if self._path and self._path.exists():
            with np.load(self._path) as stored:
                keys, vectors = stored["keys"], stored["vectors"]
            self._rows = [vectors.astype(np.float32)]
            self._index = {str(key): i for i, key in enumerate(keys)}

    def __len__(self) -> int:
        return len(self._index)

    def count_missing(self, texts: Sequence[str]) -> int:
        """How many distinct texts an `embed` call would have to embed (for progress bars)."""
        with self._lock:
            return len({h for h in map(text_hash, texts) if h not in self._index})

    def _all_vectors(self) -> Vectors:
        if len(self._rows) > 1:
            self._rows = [np.concatenate(self._rows)]
        return self._rows[0] if self._rows else np.zeros((0, self.dimension), np.float32)

    def embed(self, texts: Sequence[str], progress: Callable[[int], None] | None = None, chunk: int = 256) -> Vectors:
        """Vectors for texts, embedding only the ones never seen (in chunks, reporting progress)."""
        hashes = [text_hash(t) for t in texts]
        with self._lock:
            missing = list({h: t for h, t in zip(hashes, texts, strict=True) if h not in self._index}.items())
        missing.sort(key=lambda item: len(item[1]))  # similar lengths per batch: less padding
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            vectors = self.inner.embed([t for _, t in part])
            with self._lock:
                base = sum(len(r) for r in self._rows)
                self._rows.append(vectors)
                for offset, (h, _) in enumerate(part):
                    self._index[h] = base + offset
                self._unsaved += len(part)
            if progress:
                progress(len(part))
        with self._lock:
            stored = self._all_vectors()
            return stored[[self._index[h] for h in hashes]] if hashes else stored[:0]

    def embed_uncached(self, texts: Sequence[str]) -> Vectors:
        """Live request traffic: embed directly, without growing the cache with user text."""
        return self.inner.embed(texts)

    def save(self) -> None:
        """Write the cache atomically; a crash mid-write leaves the previous file intact."""
        if not self._path or not self._unsaved:
            return
        with self._lock:
            keys = np.array(sorted(self._index, key=self._index.__getitem__))
            vectors = self._all_vectors()
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._path.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, keys=keys, vectors=vectors)
            os.replace(tmp, self._path)
            self._unsaved = 0
