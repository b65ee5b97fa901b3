"""The Self-MoA-Seq sliding-window schedule (kept in `selfmoa.nodes.schedule`, which the run's nodes use)."""

from selfmoa.nodes.schedule import window_calls, window_schedule

__all__ = ["window_calls", "window_schedule"]
