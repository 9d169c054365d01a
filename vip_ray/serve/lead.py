"""How early a live request that waits for its deadline stops waiting (the *answer lead*).

The simulator's master answers at the deadline itself. The live master cannot: once a device
group stops waiting, its message still crosses Ray (a Serve handle reply), the master
aggregates, and on a busy host the group's own timer fires late. An answer that leaves at the
deadline reaches the measured clock after it, and ``deadline_met`` is judged on that clock.
So each group stops waiting ``lead`` wall seconds before the deadline, and the lead is taken
from the run's own answer paths: every request tells the master how long its answer took from
the instant its last group meant to stop (or sent its replies) to the answer being ready.

:class:`AnswerLead` keeps the last ``window`` such paths and answers a high quantile of them,
times a margin, never below the configured floor (``ServeOptions.answer_lead_ms``). Before the
first ``min_samples`` paths it answers the larger of the floor and a start-up estimate (the
master's round trips to its groups when the replication starts).

The cost of a lead is fidelity of the responder sets, not of the deadline: replies whose job
ends within the lead (emulated: lead ÷ X) before the deadline are not used. A larger time
dilation shrinks that window.
"""
from __future__ import annotations

from collections import deque

import numpy as np


class AnswerLead:
    """A trailing high quantile of the answer paths (wall seconds)."""

    def __init__(self, floor_s: float, *, quantile: float = 0.99, margin: float = 1.25, window: int = 256,
                 min_samples: int = 4, start_s: float = 0.0, cap_s: float | None = None):
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
        if margin < 1.0:
            raise ValueError(f"margin must be >= 1, got {margin!r}")
        self.floor_s = float(floor_s)
        self.quantile = float(quantile)
        self.margin = float(margin)
        self.min_samples = int(min_samples)
        self.start_s = float(start_s)
        self.cap_s = cap_s
        self.paths: deque[float] = deque(maxlen=int(window))
        self._value: float | None = None

    def observe(self, path_s: float) -> None:
        """One answer's path: from its last group's stop (or send) to the answer being ready."""
        if path_s == path_s and path_s >= 0.0:   # not NaN; a negative path is a clock step: ignore
            self.paths.append(float(path_s))
            self._value = None

    def value(self) -> float:
        """The lead (wall s) for the next request."""
        if self._value is None:
            if len(self.paths) < self.min_samples:
                v = max(self.floor_s, self.start_s)
            else:
                v = max(self.floor_s, self.margin * float(np.quantile(np.fromiter(self.paths, float),
                                                                       self.quantile)))
            self._value = v if self.cap_s is None else min(v, self.cap_s)
        return self._value
