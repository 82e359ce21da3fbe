"""The deadlines of one upstream exchange on one lazily re-armed timer.

``asyncio.timeout`` arms and cancels a timer per phase (~10 µs each on the benchmark VM;
a stream has a phase per chunk). :class:`Deadline` only records when the running phase
is due; the timer, armed for the earliest one, re-arms itself when it fires before the
running phase is due. Written here because asyncio has no such primitive.
"""

from __future__ import annotations

import asyncio


class Deadline:
    """The phases of one exchange (headers, body, each stream chunk) plus its ``total``.

    ``with deadline.phase(when): ...`` raises ``TimeoutError`` once ``when`` passes: a
    late phase cancels its task, and ``__exit__`` turns that cancellation into
    ``TimeoutError``, with ``asyncio.timeout``'s rules for other cancellations.
    """

    __slots__ = (
        "loop",
        "total",
        "_handle",
        "_when",
        "_at",
        "_task",
        "_cancelling",
        "_expired",
        "_total_bound",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, total: float) -> None:
        self.loop = loop
        self.total = total  # loop time at which the whole exchange must be over
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0  # when the armed timer fires
        self._at = 0.0  # when the running phase is due
        self._task: asyncio.Task | None = None
        self._cancelling = 0
        self._expired = False
        self._total_bound = False  # the running phase ends at ``total``, not at its own time

    def phase(self, at: float) -> Deadline:
        """The next ``with`` block must end by loop time ``at`` (and by ``total``)."""
        self._total_bound = self.total <= at
        at = min(at, self.total)
        task = self._task = asyncio.current_task()
        self._cancelling = task.cancelling()  # type: ignore[union-attr]
        self._at = at
        self._expired = False
        if self._handle is None or at < self._when:
            if self._handle is not None:
                self._handle.cancel()
            self._when = at
            self._handle = self.loop.call_at(at, self._fire)
        return self

    def after(self, seconds: float) -> Deadline:
        """A phase due ``seconds`` from now."""
        return self.phase(self.loop.time() + seconds)

    @property
    def passed(self) -> bool:
        """Whether the total deadline is what ended (or ends) the running phase. Decided by
        which bound was the earlier one, not by the clock: a loop may run a timer a
        little before its time."""
        return self._total_bound or self.loop.time() >= self.total

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type | None, exc: BaseException | None, tb: object) -> None:
        task, self._task = self._task, None
        if self._expired:
            self._expired = False
            if task.uncancel() <= self._cancelling and et is asyncio.CancelledError:  # type: ignore[union-attr]
                raise TimeoutError from exc

    def _fire(self) -> None:
        self._handle = None
        if self._task is None:  # between phases: the next one arms again
            return
        if self._at <= self._when:
            self._expired = True
            self._task.cancel()
        else:
            self._when = self._at
            self._handle = self.loop.call_at(self._at, self._fire)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
