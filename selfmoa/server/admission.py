"""Admission: bounded concurrency with a bounded queue, and the lease a running request holds."""

from __future__ import annotations

import asyncio
import bisect
import math
import time

from selfmoa.server.errors import _ApiError


class _Admission:
    """At most `running` ensembles at once and `queue` waiting; past that, 429."""

    def __init__(self, running: int, queue: int):
        self.limit, self.queue = running, queue
        self.admitted = 0  # running + waiting
        self.running = 0
        self._semaphore = asyncio.Semaphore(running)
        self._average: float | None = None  # seconds per run, moving average of observed runs
        self._leases: set[_Lease] = set()  # the running ones, whose elapsed time bounds the average from below
        self._returning: list[float] = []  # when the clients turned away are due back (sorted)

    async def enter(self) -> _Lease:
        if self.admitted >= self.limit + self.queue:
            raise _ApiError(
                429,
                f"server busy: {self.running} ensembles running and {self.admitted - self.running} waiting; "
                "retry after the time in the Retry-After header",
                code="server_busy",
                headers={"Retry-After": str(self.retry_after())},
            )
        self.admitted += 1
        try:
            await self._semaphore.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        self.running += 1
        lease = _Lease(self)
        self._leases.add(lease)
        return lease

    def retry_after(self) -> int:
        """Whole seconds a turned-away request should wait: what it would have waited in the queue.

        Its position is the requests waiting, plus those turned away before it and not yet
        due back (they retry first), plus itself; `max_concurrency` of them start per run
        duration, the moving average of observed runs (or the longest still running, if
        longer). Each answer moves the next one back, so a burst spreads its retries.
        """
        now = time.monotonic()
        self._returning = [t for t in self._returning if t > now]
        position = (self.admitted - self.running) + len(self._returning) + 1
        longest = max((now - lease.started for lease in self._leases), default=0.0)
        run = max(self._average if self._average is not None else 1.0, longest)
        seconds = min(3600, max(1, math.ceil(run * position / self.limit)))
        bisect.insort(self._returning, now + seconds)
        return seconds

    def _leave(self, lease: _Lease, seconds: float) -> None:
        self._leases.discard(lease)
        self.running -= 1
        self.admitted -= 1
        self._average = seconds if self._average is None else 0.8 * self._average + 0.2 * seconds
        self._semaphore.release()


class _Lease:
    def __init__(self, admission: _Admission):
        self._admission, self.started, self._open = admission, time.monotonic(), True

    def release(self) -> None:
        if self._open:  # idempotent: both the stream and its response may release it
            self._open = False
            self._admission._leave(self, time.monotonic() - self.started)
