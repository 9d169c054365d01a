"""COACH (end–cloud collaborative inference): offline partition and quantization search, online
bit and early-exit control, and the end–cloud baselines (Neurosurgeon, DADS, SPINN, JPS).

Light on purpose (no torch): what a command needs before it parses its arguments."""
from typing import Literal, get_args

#: readings of the bandwidth COACH's offline plan is made for (``CoachOptions.plan_bandwidth``):
#: the link's at t = 0 (COACH's Algorithm 1) or the lowest of its declared trace
PlanReading = Literal["initial", "lowest"]
PLAN_READINGS: tuple[str, ...] = get_args(PlanReading)
