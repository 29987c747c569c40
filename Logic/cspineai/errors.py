"""The project's error types: every failure a user can act on is raised as one of these."""

from __future__ import annotations


class CSpineError(Exception):
    """Base of all CSpineAI errors."""


class CSpineInputError(CSpineError, ValueError):
    """An input (file, volume, manifest, configuration) that cannot be used.

    The message names the offending file or series and states the problem in words a radiologist can act on.
    """

    def __init__(self, source: object, problem: str):
        self.source = str(source) if source is not None else ""
        self.problem = problem
        super().__init__(f"{self.source}: {problem}" if self.source else problem)


class CSpineModelError(CSpineError):
    """A model file that is missing, altered (hash mismatch) or incompatible with the registry entry."""


class CSpineCancelled(CSpineError):
    """The user cancelled a running job."""
