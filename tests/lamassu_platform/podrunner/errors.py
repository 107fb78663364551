"""How a Pod fails from the runner's side: the errors the worker reports in the Pod's status.

Why apart: both the worker (starting containers) and the projection (env, volumes, tokens)
raise them, and the worker's loop turns them into the Pod's final status.
"""

from __future__ import annotations


class PodFailedError(Exception):
    """The Pod fails as a whole, with a reason and message shown in its status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ConfigError(PodFailedError):
    """The Pod refers to something that is missing (Secret, key, PVC) or that the runner cannot do.

    ``reason`` is what the container status shows while waiting (``CreateContainerConfigError``)
    and what the Pod fails with when it does not resolve in time.
    """
