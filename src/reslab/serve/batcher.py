"""Dynamic batching: requests that arrive within a few milliseconds share one forward pass.

A CPU or GPU runs a batch of 16 small images in far less than 16 times the time of one
(the per-call overhead of PyTorch and the memory traffic for the weights are paid once),
so a server under load answers more images per second by stacking them. The policy is
the one Triton and TorchServe use: the first waiting request opens a batch; the batch
closes when it holds ``max_batch`` images or ``max_delay_ms`` have passed. One refinement:
the server announces each request as it arrives (``incoming``), before its image is decoded,
and the batch waits only while such announced requests are still on their way, so a lone
request runs at once instead of paying the delay for company that is not coming. While a
batch runs, new requests queue up and form the next one. The queue is bounded: when it is full,
``submit`` raises ``QueueFull`` and the server answers 503 instead of growing without
limit (back-pressure).

``max_batch=1, max_delay_ms=0`` is one request per forward pass: the endpoint a user
would write by hand, kept for the benchmark's comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch


class QueueFull(Exception):
    """The request queue is at its bound; the client should retry later (HTTP 503)."""


class DynamicBatcher:
    """Collects single images into batches and runs ``forward`` on one inference thread.

    Args:
        forward: (B, C, H, W) fp32 -> (B, K) logits; called on the inference thread only.
        max_batch: most images per forward pass.
        max_delay_ms: longest wait for more images after the first one arrives.
        queue_size: most requests waiting; beyond it ``submit`` raises ``QueueFull``.
        on_batch: optional ``(batch_size, queue_depth) -> None`` callback (metrics).
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], max_batch: int = 32,
                 max_delay_ms: float = 5.0, queue_size: int = 256,
                 on_batch: Callable[[int, int], None] | None = None):
        if max_batch < 1 or queue_size < 1 or max_delay_ms < 0:
            raise ValueError(f"max_batch={max_batch} and queue_size={queue_size} must be >= 1 "
                             f"and max_delay_ms={max_delay_ms} >= 0.")
        self.forward = forward
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.queue_size = queue_size
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._incoming = 0  # requests announced but not yet submitted (decoding)
        self._worker: asyncio.Task | None = None
        # One thread: PyTorch parallelises inside the forward; two concurrent forwards
        # would only fight over the same cores.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reslab-infer")

    @property
    def depth(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        """Starts the batching loop on the running event loop."""
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self._worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stops the loop; waiting requests get a ``RuntimeError``."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(RuntimeError("the server is shutting down"))
        self._executor.shutdown(wait=False)

    @contextlib.contextmanager
    def incoming(self):
        """Marks a request that will ``submit`` soon (its image is being read and decoded),
        so a forming batch waits for it; leave the block when it has submitted or failed."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    def enqueue(self, image: torch.Tensor) -> asyncio.Future:
        """Queues one preprocessed image (C, H, W); the future resolves to its logits (K,).

        Raises:
            QueueFull: when ``queue_size`` requests are already waiting.
        """
        if self._queue is None:
            raise RuntimeError("DynamicBatcher.start() was not called")
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait((image, fut))
        except asyncio.QueueFull:
            raise QueueFull(f"{self.queue_size} requests are already waiting") from None
        return fut

    async def submit(self, image: torch.Tensor) -> torch.Tensor:
        """Queues one preprocessed image (C, H, W) and waits for its logits (K,).

        Raises:
            QueueFull: when ``queue_size`` requests are already waiting.
        """
        return await self.enqueue(image)

    async def _collect(self) -> list:
        """Waits for the first request, then gathers more until full or the delay is over."""
        loop = asyncio.get_running_loop()
        items = [await self._queue.get()]
        deadline = loop.time() + self.max_delay
        while len(items) < self.max_batch:
            try:
                items.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0 or self._incoming == 0:  # no one else is on the way: run now
                break
            try:
                items.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return items

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            live = [(x, f) for x, f in items if not f.cancelled()]  # clients that hung up
            if not live:
                continue
            batch = torch.stack([x for x, _ in live])  # (B, C, H, W)
            try:
                logits = await loop.run_in_executor(self._executor, self.forward, batch)
            except Exception as e:  # noqa: BLE001 - a failed forward fails its requests, not the server
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(len(live), self.depth)
            for (_, f), row in zip(live, logits):
                if not f.done():
                    f.set_result(row)
