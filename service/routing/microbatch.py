"""Shares embedding calls between concurrent requests, short ones first, each call capped by padded tokens.

Two lanes: interactive requests (`/v1/route`) and bulk work (`/v1/route/batch`). Every request is cut into
length-sorted pieces whose padded size (texts x longest text) stays within a token cap, so no single call holds the
model for long; between calls the worker always serves waiting interactive pieces before the next bulk piece. A
short query therefore waits at most one bulk piece (`bulk_max_tokens`, small), however large a batch is running,
while interactive calls may be larger (`max_tokens`) for throughput under many clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from profiling.embedder import Vectors, estimate_tokens, plan_batches

EmbedFn = Callable[[Sequence[str]], Vectors]


@dataclass
class _Piece:
    texts: list[str]
    future: asyncio.Future[Vectors]

    @property
    def padded_tokens(self) -> int:
        return len(self.texts) * max(estimate_tokens(t) for t in self.texts)


class MicroBatcher:
    """Requests that arrive while an embedding runs share the next call; `window_ms` can wait for more."""

    def __init__(
        self, embed: EmbedFn, window_ms: float, max_texts: int, max_tokens: int = 4096, bulk_max_tokens: int = 1024
    ) -> None:
        self._embed = embed
        self._window = window_ms / 1000.0
        self._max_texts = max_texts
        self._max_tokens = max_tokens
        self._bulk_max_tokens = min(bulk_max_tokens, max_tokens)
        self._interactive: deque[_Piece] = deque()
        self._bulk: deque[_Piece] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.texts = 0

    async def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._wakeup = None  # later calls embed directly

    async def embed(self, texts: list[str], bulk: bool = False) -> Vectors:
        """Vectors for `texts` in order; `bulk` work yields to interactive requests between capped calls."""
        if self._wakeup is None or not texts:
            return await asyncio.to_thread(self._embed, texts)
        loop = asyncio.get_running_loop()
        plan = plan_batches(texts, self._bulk_max_tokens if bulk else self._max_tokens, self._max_texts)
        pieces = [_Piece([texts[i] for i in group], loop.create_future()) for group in plan]
        (self._bulk if bulk else self._interactive).extend(pieces)
        self._wakeup.set()
        results = await asyncio.gather(*(p.future for p in pieces))
        if len(pieces) == 1 and plan[0] == list(range(len(texts))):
            return results[0]
        out = np.empty((len(texts), results[0].shape[1]), dtype=np.float32)
        for group, vectors in zip(plan, results, strict=True):
            out[group] = vectors
        return out

    def _fits(self, batch: list[_Piece], piece: _Piece) -> bool:
        texts = [t for p in batch for t in p.texts] + piece.texts
        padded = len(texts) * max(estimate_tokens(t) for t in texts)
        return len(texts) <= self._max_texts and padded <= self._max_tokens

    def _take_interactive(self, batch: list[_Piece]) -> None:
        while self._interactive and (not batch or self._fits(batch, self._interactive[0])):
            batch.append(self._interactive.popleft())

    async def _next_batch(self) -> list[_Piece]:
        assert self._wakeup is not None
        while not self._interactive and not self._bulk:
            self._wakeup.clear()
            await self._wakeup.wait()
        batch: list[_Piece] = []
        self._take_interactive(batch)
        if not batch:
            return [self._bulk.popleft()]
        # An optional window waits a little longer for interactive company.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window
        while self._window > 0 and (not self._interactive or self._fits(batch, self._interactive[0])):
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            before = len(batch)
            self._take_interactive(batch)
            if len(batch) == before and self._interactive:
                break  # the next one does not fit: send what we have
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            texts = [t for piece in batch for t in piece.texts]
            try:
                vectors = await asyncio.to_thread(self._embed, texts)
            except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                for piece in batch:
                    if not piece.future.done():
                        piece.future.set_exception(exc)
                continue
            self.batches += 1
            self.texts += len(texts)
            offset = 0
            for piece in batch:
                if not piece.future.done():
                    piece.future.set_result(np.asarray(vectors[offset : offset + len(piece.texts)]))
                offset += len(piece.texts)
