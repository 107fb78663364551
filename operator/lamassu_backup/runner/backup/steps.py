"""Each component's backup step, found by the component's package (``<package>.backup``).

Loaded by name so that the pure registry (imported by the operator's Job builders) never
imports runner code; each step module declares ``STEP: BackupStep``, so mypy checks it there.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from ...components import registry
from ...errors import ConfigurationError

if TYPE_CHECKING:
    from ...models.runner import ComponentOutcome
    from .run import BackupRun


class BackupStep(Protocol):
    """Back up one component of the run's set: store its artifacts, return its outcome."""

    def __call__(self, run: BackupRun) -> ComponentOutcome: ...


def step_of(name: str) -> BackupStep:
    """The backup step of the component called ``name``."""
    try:
        component = registry.get(name)
    except KeyError:
        raise ConfigurationError(f"unknown component {name!r}") from None
    step: BackupStep = importlib.import_module(f"{component.package}.backup").STEP
    return step
