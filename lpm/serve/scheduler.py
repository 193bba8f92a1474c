"""`FairScheduler`: which session's next chunk may start computing, earliest deadline first.

Every session asks for a slot before its backbone starts a chunk and gives it back when the
chunk's frames leave the decoder. At most ``slots`` chunks compute at once across the process;
among waiting chunks the one whose playback deadline comes first goes next, so a session that
fell behind catches up before one that is ahead, and no session can starve the others.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable


class SessionClosed(Exception):
    """Raised inside a waiting generator thread when its session ends."""


class FairScheduler:
    """Earliest-deadline-first admission of chunk computations (thread-safe)."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots, self.clock = slots, clock
        self.running = 0
        self._cond = threading.Condition()
        self._waiting: dict[int, tuple[float, int]] = {}
        self._tickets = itertools.count()

    def acquire(self, start_at: float, deadline: float, closed: threading.Event) -> float:
        """Block until ``start_at`` (clock seconds) has passed and this chunk's turn has come.

        Returns the seconds spent waiting for a slot after ``start_at`` (queueing delay).
        Raises:
            SessionClosed: ``closed`` was set while waiting.
        """
        ticket = next(self._tickets)
        eligible_at: float | None = None
        with self._cond:
            try:
                while True:
                    if closed.is_set():
                        raise SessionClosed
                    now = self.clock()
                    if now >= start_at:
                        if eligible_at is None:
                            eligible_at = now
                            self._waiting[ticket] = (deadline, ticket)
                        if self.running < self.slots and self._waiting[ticket] == min(
                            self._waiting.values()
                        ):
                            self.running += 1
                            return now - eligible_at
                        self._cond.wait(timeout=0.05)
                    else:
                        self._cond.wait(timeout=min(0.05, start_at - now))
            finally:
                self._waiting.pop(ticket, None)
                self._cond.notify_all()

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots."""
        with self._cond:
            self.running = max(0, self.running - count)
            self._cond.notify_all()

    def wake(self) -> None:
        """Make waiters re-check their ``closed`` events now."""
        with self._cond:
            self._cond.notify_all()
