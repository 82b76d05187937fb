"""A run bounded by a step count and, optionally, wall-clock minutes, and the one learning-rate
schedule every training loop follows (codec, token head, semantic layer)."""

from __future__ import annotations

import math
import time


def scheduled_lr(
    base: float, progress: float, run_step: int, warmup_steps: int, decay_from: float = 0.0, floor: float = 0.0
) -> float:
    """``base`` after a linear warm-up of ``warmup_steps`` (also after a resume: Adam restarts), flat
    until ``decay_from`` of the budget, then a cosine down to ``floor`` times ``base`` at its end."""
    warm = min(1.0, (run_step + 1) / warmup_steps)
    if progress < decay_from:
        return base * warm
    t = min(1.0, (progress - decay_from) / max(1e-9, 1.0 - decay_from))
    return base * warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


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
