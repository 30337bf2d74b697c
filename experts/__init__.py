"""Time-decoupled experts (EDG stage 3): one MODEL that samples each range of noise levels with another
expert's weights, switched in place during sampling. Not a merge: the experts come from ``merging`` (or any
weight patches over one base), the switching is here."""
from __future__ import annotations

from .schedule import CLOCKS, MODES, UNITS, ExpertSchedule, ScheduleRun, expert_schedule, get_schedule, parse_points

__all__ = ["CLOCKS", "MODES", "UNITS", "ExpertSchedule", "ScheduleRun", "expert_schedule", "get_schedule",
           "parse_points"]
