"""Each component's part in a restore, found by the component's package (``<package>.restore``).

The skeleton (:mod:`.run`) never names a component: it builds every component's
:class:`RestoreHooks` for the run (``HOOKS(run)``, declared by ``<package>.restore``, so mypy
checks it there), sorts them by ``order`` (the order a restore changes live things in: Vault,
the databases, config, volumes) and calls the same hook of each in turn. The hooks hold the
run's state of their component (what was fetched, staged, restored beside, applied).

A component without a ``restore`` module has nothing to do in a restore: its artifacts are
verified, both checksums, and it is reported Verified (:class:`VerifyOnly`). (AWS KMS writes
nothing back either, but has hooks: its metadata is the AWS KMS engine's key store.)
Loaded by name, as the backup steps are, so that the pure registry never imports runner code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

from ...components import registry
from ...errors import ConfigurationError

if TYPE_CHECKING:
    from ...models.runner import ArtifactRecord, RestoreRunConfig
    from .keys import KeyIds, KeyInventory, KeyStore
    from .run import RestoreRun

Purpose = Literal["plan", "drill", "restore"]
"""Why the artifacts are verified: a plan (nothing is written), a drill, an in-place restore."""


class PlanItem(Protocol):
    """Adds one line to the plan (``evidence.plan``) for the component it was given to."""

    def __call__(self, target: str, action: str, detail: str = "") -> None: ...


class RestoreHooks(Protocol):
    """One component's part in one restore run.

    The skeleton calls each hook of every component, in ``order``. Those about the set
    (``plan`` to ``apply``, ``drill``) only for the components the run restores something of
    (non-empty ``artifacts``); those about targets that exist whatever the set holds
    (``key_*``, ``discard``, ``close``, ``teardown``, ``finalize``, ``rollback``) for every one.
    Nothing before ``apply`` changes anything live.
    """

    name: str
    """The component's name (manifest and status key)."""
    order: int
    """Where it comes in a restore: lower first (Vault 10, postgres 20, config 30, volumes 40)."""
    artifacts: list[ArtifactRecord]
    """What this run restores of it (set by :meth:`select`; empty: nothing)."""

    def select(self, artifacts: list[ArtifactRecord]) -> None:
        """Keep what the run restores of the set's artifacts of this component (it was asked
        for); raise ConfigurationError when the request names something the set lacks."""

    def load_source(self, requested: bool) -> bool:
        """Before the set is read: take what this run restores of the component from elsewhere
        than the set (postgres from a WAL archive, to a point in time), checking it is there.
        True when it did: the set is then not asked for it. ``requested``: the run restores
        this component."""

    # -- before anything live changes --------------------------------------------------------

    def plan(self, item: PlanItem, drill: bool) -> None:
        """Say what a restore (``drill``: a drill) would do, in the order it would."""

    def require(self) -> None:
        """In place, before the long restores: fail fast on a missing or unready target."""

    def verify(self, purpose: Purpose) -> None:
        """Verify what is cheap to verify (inside the skeleton's ``verify`` phase); in place,
        also stage beside the live data what is small (nothing live changes)."""

    def drill(self) -> None:
        """In a drill: restore what is small into scratch targets and validate it."""

    def prepare(self, suffix: str | None) -> None:
        """The long restore beside the live data, verified (``suffix``: the swap's, None in a
        drill, whose scratch targets are torn down instead of swapped in)."""

    # -- key consistency (the check is :meth:`.run.RestoreRun.check_keys`) ---------------------

    def key_inventory(self) -> KeyInventory | None:
        """How to read the ca and kms tables this run's databases will hold (the restored
        copies, else the live ones); None when the component does not hold them."""

    def key_stores(self) -> list[KeyStore]:
        """The key stores of the engines this component holds the keys of (one per engine)."""

    def key_ids(self) -> KeyIds | None:
        """The key ids of the shared store (for every engine without a store of its own), as
        this step meets them; None when the component does not hold that store."""

    def needs_key_check(self) -> bool:
        """Whether what this run restored of it must be checked against the keys."""

    # -- in place: the live side, in order ---------------------------------------------------

    def apply(self, suffix: str) -> None:
        """Change the live side (record each live change in ``run.changed``)."""

    def undo(self, suffix: str) -> str | None:
        """A later component failed: put back what :meth:`apply` changed. Returns how the
        failure says so (None: nothing undone); raises when putting it back failed."""

    def discard(self) -> None:
        """The run failed: drop what was staged or restored beside (never the live side)."""

    def close(self) -> None:
        """End its sessions (in place, whatever happened)."""

    # -- drill ---------------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Drop every scratch target of a drill (also after a failure); returns those left."""

    # -- finalize / rollback (no set: what a restore kept aside under ``suffix``) ---------------

    def finalize(self, suffix: str) -> list[str]:
        """Drop what the restore kept aside (unless keepPrevious); returns what was dropped."""

    def rollback(self, suffix: str) -> list[str]:
        """Put back what the restore kept aside; returns what was rolled back."""


HooksFactory = Callable[["RestoreRun"], RestoreHooks]
"""A component's ``HOOKS``: its hooks for one run."""


class BaseHooks:
    """Defaults for a component's hooks: its artifacts are verified, nothing else happens."""

    name: str = ""
    order: int = 100

    def __init__(self, run: RestoreRun) -> None:
        self.run = run
        self.artifacts: list[ArtifactRecord] = []

    def select(self, artifacts: list[ArtifactRecord]) -> None:
        self.artifacts = artifacts

    def load_source(self, requested: bool) -> bool:
        return False

    def plan(self, item: PlanItem, drill: bool) -> None:
        return None

    def require(self) -> None:
        return None

    def verify(self, purpose: Purpose) -> None:
        """Stream every artifact through both checksums; outside a plan, report Verified."""
        for artifact in self.artifacts:
            with self.run.phase("verify", artifact.component):
                self.run.set.verify_only(artifact)
            if purpose != "plan":
                self.run.result.components[artifact.component] = "Verified"

    def drill(self) -> None:
        return None

    def prepare(self, suffix: str | None) -> None:
        return None

    def key_inventory(self) -> KeyInventory | None:
        return None

    def key_stores(self) -> list[KeyStore]:
        return []

    def key_ids(self) -> KeyIds | None:
        return None

    def needs_key_check(self) -> bool:
        return False

    def apply(self, suffix: str) -> None:
        return None

    def undo(self, suffix: str) -> str | None:
        return None

    def discard(self) -> None:
        return None

    def close(self) -> None:
        return None

    def teardown(self) -> list[str]:
        return []

    def finalize(self, suffix: str) -> list[str]:
        return []

    def rollback(self, suffix: str) -> list[str]:
        return []


class VerifyOnly(BaseHooks):
    """A component with nothing to restore: its artifacts are verified only."""

    def __init__(self, run: RestoreRun, name: str) -> None:
        super().__init__(run)
        self.name = name


def hooks_of(name: str, config: RestoreRunConfig | None = None) -> HooksFactory:
    """The restore hooks of the component called ``name`` for ``config`` (:class:`VerifyOnly`
    when its package has no ``restore`` module)."""
    try:
        component = registry.get(name)
    except KeyError:
        raise ConfigurationError(f"unknown component {name!r}") from None
    module_name = component.restore_module(config)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return lambda run: VerifyOnly(run, name)
    factory: HooksFactory = module.HOOKS
    return factory


def ordered(run: RestoreRun) -> list[RestoreHooks]:
    """Every component's hooks for ``run``, in restore order."""
    return sorted(
        (hooks_of(name, run.cfg)(run) for name in registry.names()), key=lambda h: h.order
    )
