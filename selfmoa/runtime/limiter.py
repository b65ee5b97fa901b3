"""`CallLimiter`: a cap on model calls in flight, shared by any number of graphs and runs."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any


class CallLimiter:
    """At most `limit` model calls in flight at once, across every graph and run that shares it.

    LangGraph's `max_concurrency` caps the tasks of one run; a batch of many runs (or a
    server answering many requests) needs one cap for all of them, e.g. an endpoint's rate
    limit. Pass the same limiter to every graph: `create_self_moa(model, limiter=limiter)`
    or `MoASpec(..., limiter=limiter)`. It is held around each call attempt only (not
    while waiting to retry), works from threads (`invoke`, `batch`) and from any event
    loop (`ainvoke`, `abatch`) alike, and hands free slots out first come, first served.
    It never enters graph state or checkpoints.

    Example:
        >>> from selfmoa import CallLimiter, create_self_moa
        >>> from selfmoa.testing import FakeChatModel
        >>> limiter = CallLimiter(4)
        >>> graph = create_self_moa(FakeChatModel(), samples=6, limiter=limiter).compile()
        >>> len(graph.batch([{"messages": "Hi"}, {"messages": "Ho"}]))
        2
    """

    def __init__(self, limit: int):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"CallLimiter limit must be an integer of at least 1, got {limit!r}")
        self.limit = limit
        self._lock = threading.Lock()
        self._free = limit
        self._waiters: deque[Any] = deque()  # threading.Event or (loop, asyncio.Future)

    @property
    def in_flight(self) -> int:
        """Calls holding a slot now."""
        return self.limit - self._free

    def acquire(self) -> None:
        """Take a slot, blocking the calling thread until one is free."""
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            event = threading.Event()
            self._waiters.append(event)
        event.wait()  # the releaser handed its slot over to us

    async def aacquire(self) -> None:
        """Take a slot, waiting without blocking the event loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter = (loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove(waiter)
                    granted = False
                except ValueError:  # a releaser picked us as we were cancelled
                    granted = True
            # If the future was cancelled before the hand-over ran, `_grant` passes the
            # slot on; if the hand-over came first, the slot is ours to give back.
            if granted and not waiter[1].cancelled():
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back, handing it straight to the longest waiter if any."""
        with self._lock:
            if not self._waiters:
                if self._free >= self.limit:
                    raise RuntimeError("CallLimiter released more often than acquired")
                self._free += 1
                return
            waiter = self._waiters.popleft()
        if isinstance(waiter, threading.Event):
            waiter.set()
        else:
            loop, future = waiter
            if _running_loop() is loop:
                # Same loop: hand the slot over now. A round trip through the loop's queue
                # would start the next call only after every other callback queued before
                # it, and under load that delay adds up to lost throughput (P3).
                _grant(future, self)
            else:
                loop.call_soon_threadsafe(_grant, future, self)

    def __enter__(self) -> CallLimiter:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    async def __aenter__(self) -> CallLimiter:
        await self.aacquire()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


def _grant(future: asyncio.Future, limiter: CallLimiter) -> None:
    # Runs on the waiter's loop. If the waiter was cancelled after being picked, pass the
    # slot on rather than lose it.
    if future.done():
        limiter.release()
    else:
        future.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a thread with no loop (`invoke`, `batch`)
        return None
