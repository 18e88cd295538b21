"""A lock-free flag shared between the supervisor and one child process.

`multiprocessing.Event` is a condition variable over semaphores: a process SIGKILLed while
waiting on it (or while holding its lock) leaves it in a state where the next ``set()`` blocks
for ever — the supervisor would hang stopping a pipeline whose stage was killed. A one-byte
shared value has no lock to leave behind: ``set`` is a store, ``is_set`` a load, and ``wait``
polls.
"""

from __future__ import annotations

import time
from typing import Any


class SharedFlag:
    """``set() / clear() / is_set() / wait(timeout)`` over a shared byte (pass it to the child
    as a `multiprocessing.Process` argument)."""

    def __init__(self, ctx: Any) -> None:
        self._value = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def clear(self) -> None:
        self._value.value = 0

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout_s: float | None = None, poll_s: float = 0.02) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(
                poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic()))
            )
        return True


class RunFlags:
    """The flags of one pipeline run, shared by the supervisor and every stage process.

    done: set by the sink when every file camera ended and its results were written.
    model_ready: set by detect once its model is loaded and warmed; decode opens its cameras
        only then, so the first seconds of a file are not read before anything can detect them.
    stopping: set by the supervisor when the whole pipeline stops (a stage's own stop flag is
        set only when its turn comes, upstream first); a sink holding the pipeline during an
        outage gives up at once instead of holding the stages before it past their budget.
    """

    def __init__(self, ctx: Any) -> None:
        self.done = SharedFlag(ctx)
        self.model_ready = SharedFlag(ctx)
        self.stopping = SharedFlag(ctx)
