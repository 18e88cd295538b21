"""Exponential reconnect backoff with jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delays for successive reconnect attempts: ``min_s, 2·min_s, 4·min_s ... max_s``, jittered.

    Each delay is multiplied by a uniform factor in ``[1 - jitter, 1 + jitter]`` and then
    clamped to ``[min_s, max_s]``, so the bound promised to operators (and tested) holds: no
    wait is ever longer than ``max_s``. Jitter spreads the reconnects of many cameras that lost
    the same switch or NVR at the same moment. :meth:`reset` returns to ``min_s`` after a
    connection proved healthy.
    """

    def __init__(
        self, min_s: float, max_s: float, jitter: float = 0.2, rng: random.Random | None = None
    ) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds); advances the attempt count."""
        base = min(self.max_s, self.min_s * (2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        factor = 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return min(self.max_s, max(self.min_s, base * factor))

    def reset(self) -> None:
        self.attempt = 0
