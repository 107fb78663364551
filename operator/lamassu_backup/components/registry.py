"""Every component, in the order a backup lists them: the one place a new component registers.

The shared machinery (Job builders, Secret checks, staleness, the runner's step and hook lookup)
iterates these instead of naming components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .aws_kms.plan import COMPONENT as AWS_KMS
from .base import Component
from .config.plan import COMPONENT as CONFIG
from .postgres.plan import COMPONENT as POSTGRES
from .vault.plan import COMPONENT as VAULT
from .volumes.plan import COMPONENT as VOLUMES

if TYPE_CHECKING:
    from ..models.policy import Components

COMPONENTS: tuple[Component, ...] = (POSTGRES, VAULT, VOLUMES, CONFIG, AWS_KMS)


def get(name: str) -> Component:
    """The component called ``name`` (KeyError names the known ones)."""
    for component in COMPONENTS:
        if component.name == name:
            return component
    raise KeyError(f"unknown component {name!r}; known: {', '.join(names())}")


def names() -> list[str]:
    """Every component's name."""
    return [c.name for c in COMPONENTS]


def configured(comps: Components, only: list[str] | None = None) -> list[Component]:
    """The components a policy holds (restricted to ``only`` when given), in registry order."""
    return [c for c in COMPONENTS if c.configured(comps) and (only is None or c.name in only)]
