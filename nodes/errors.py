"""Errors raised by selfmoa. Each message is one line that says how to fix the input."""

from __future__ import annotations


class SelfMoAError(Exception):
    """Base class of every error selfmoa raises on purpose."""


class SpecError(SelfMoAError, ValueError):
    """An ensemble was declared wrongly (bad option, bad spec file); raised at build time."""


class InputError(SelfMoAError, ValueError):
    """The graph was invoked with unusable input (for example no messages)."""


class ModelResolutionError(SelfMoAError, ValueError):
    """A model string could not be turned into a chat model."""


class ProposalsFailedError(SelfMoAError, RuntimeError):
    """Fewer proposals than `min_proposals` succeeded, so there is nothing to aggregate."""


class AggregationError(SelfMoAError, RuntimeError):
    """The aggregator failed after its retries; the proposals stay in the checkpoint."""
