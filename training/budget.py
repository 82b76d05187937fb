"""A run bounded by a step count and, optionally, wall-clock minutes."""

from __future__ import annotations

import time


class Budget:
    """Progress in [0, 1] by whichever runs out first, steps or time, so a learning-rate schedule
    still anneals when a CPU run is stopped by the clock rather than by the step count."""

    def __init__(self, steps: int, max_minutes: float | None = None):
        self.steps, self.seconds, self.start = steps, (max_minutes * 60 if max_minutes else None), time.time()

    def progress(self, step: int) -> float | None:
        """``None`` once the time is up (stop now), else the fraction of the budget spent."""
        elapsed = time.time() - self.start
        if self.seconds is not None and elapsed > self.seconds:
            return None
        return max(step / self.steps, elapsed / self.seconds if self.seconds else 0.0)
