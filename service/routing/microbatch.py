"""Coalesces concurrent requests' texts into one embedding call (a short window, a size cap)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import numpy as np

from profiling.embedder import Vectors

EmbedFn = Callable[[Sequence[str]], Vectors]


class MicroBatcher:
    """Requests that arrive while an embedding runs share the next call; `window_ms` can wait for more."""

    def __init__(self, embed: EmbedFn, window_ms: float, max_texts: int) -> None:
        self._embed = embed
        self._window = window_ms / 1000.0
        self._max_texts = max_texts
        self._queue: asyncio.Queue[tuple[list[str], asyncio.Future[Vectors]]] | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0
        self.texts = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def embed(self, texts: list[str]) -> Vectors:
        if self._queue is None:
            return await asyncio.to_thread(self._embed, texts)
        future: asyncio.Future[Vectors] = asyncio.get_running_loop().create_future()
        await self._queue.put((texts, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            # Natural batching: whatever queued up while the last batch was embedding joins this one ...
            while size < self._max_texts and not self._queue.empty():
                batch.append(self._queue.get_nowait())
                size += len(batch[-1][0])
            # ... and an optional window waits a little longer for company.
            deadline = loop.time() + self._window
            while size < self._max_texts:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    waiting = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                batch.append(waiting)
                size += len(waiting[0])
            texts = [t for item, _ in batch for t in item]
            try:
                vectors = await asyncio.to_thread(self._embed, texts)
            except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.texts += len(texts)
            offset = 0
            for item, future in batch:
                if not future.done():
                    future.set_result(np.asarray(vectors[offset : offset + len(item)]))
                offset += len(item)
