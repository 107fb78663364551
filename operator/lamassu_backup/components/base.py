"""What every component provides to the shared machinery, and the helpers they share.

Pure: no I/O. The operator's Job builders, Secret checks and staleness ask a :class:`Component`
(found in :mod:`.registry`) instead of branching on component names; the runner finds a
component's runtime half (``<package>.backup`` / ``<package>.restore``) by its ``package``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..builders import layout
from ..models.common import AwsCredentialsSecretRef, BasicAuthSecretRef, SecretKeyRef
from ..models.runner import SECRETS_ROOT

if TYPE_CHECKING:
    from ..models.policy import BackupPolicySpec, Components
    from ..models.restore import RestoreSpec
    from ..models.runner import RestoreRunConfig

PodVolumes = tuple[list[dict[str, Any]], list[dict[str, Any]]]
"""Extra (Pod volumes, container mounts) a component's Job needs beside the Secret files."""

VOLUMES_ROOT = "/var/run/lamassu-backup/volumes"
"""Where a Job mounts the policy's volumes (``VOLUMES_ROOT/<name>``)."""


@dataclass
class SecretMounts:
    """Secret keys to mount, collected while building a runner config: the config holds only
    the paths, the Job's Secret volumes put the values there."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    _by_secret: dict[str, dict[str, Any]] = field(default_factory=dict)

    def file(self, secret: str, key: str, filename: str) -> str:
        """Mount ``key`` of ``secret`` as ``filename``; returns the path the runner reads."""
        volume = self._by_secret.get(secret)
        if volume is None:
            name = layout.bounded_name("secret", secret)
            volume = {
                "name": name,
                "secret": {"secretName": secret, "items": [], "defaultMode": 0o440},
            }
            self._by_secret[secret] = volume
            self.volumes.append(volume)
            self.mounts.append(
                {"name": name, "mountPath": f"{SECRETS_ROOT}/{secret}", "readOnly": True}
            )
        items = volume["secret"]["items"]
        target = filename
        existing = next((i for i in items if i["key"] == key), None)
        if existing is not None:
            target = existing["path"]
        else:
            items.append({"key": key, "path": target})
        return f"{SECRETS_ROOT}/{secret}/{target}"

    def ref(self, ref: SecretKeyRef | None, filename: str) -> str | None:
        """Mount one SecretKeyRef (None passes through)."""
        return self.file(ref.name, ref.key, filename) if ref else None

    def aws(self, ref: AwsCredentialsSecretRef | None, prefix: str) -> dict[str, Any]:
        """Mount an AWS key pair; no files at all means the Pod's ambient credentials (IRSA)."""
        if ref is None:
            return {}
        files: dict[str, Any] = {
            "access_key_id_file": self.file(
                ref.name, ref.access_key_id_key, f"{prefix}-access-key-id"
            ),
            "secret_access_key_file": self.file(
                ref.name, ref.secret_access_key_key, f"{prefix}-secret-access-key"
            ),
        }
        if ref.session_token_key:
            files["session_token_file"] = self.file(
                ref.name, ref.session_token_key, f"{prefix}-session-token"
            )
        return files

    def basic(self, ref: BasicAuthSecretRef, prefix: str) -> tuple[str, str]:
        """Mount a username/password pair; returns (username file, password file)."""
        return (
            self.file(ref.name, ref.username_key, f"{prefix}-username"),
            self.file(ref.name, ref.password_key, f"{prefix}-password"),
        )


@dataclass(frozen=True)
class Reference:
    """One Secret key the spec refers to, with the field that names it (for the error)."""

    field: str
    secret: str
    key: str


def key_refs(field: str, ref: SecretKeyRef | None) -> list[Reference]:
    """The reference of one optional SecretKeyRef."""
    return [Reference(field, ref.name, ref.key)] if ref is not None else []


def basic_refs(field: str, ref: BasicAuthSecretRef) -> list[Reference]:
    """The two references of a username/password Secret."""
    return [
        Reference(f"{field}.usernameKey", ref.name, ref.username_key),
        Reference(f"{field}.passwordKey", ref.name, ref.password_key),
    ]


def aws_refs(field: str, ref: AwsCredentialsSecretRef | None) -> list[Reference]:
    """The references of an optional AWS key pair Secret."""
    if ref is None:
        return []
    refs = [
        Reference(f"{field}.accessKeyIdKey", ref.name, ref.access_key_id_key),
        Reference(f"{field}.secretAccessKeyKey", ref.name, ref.secret_access_key_key),
    ]
    if ref.session_token_key:
        refs.append(Reference(f"{field}.sessionTokenKey", ref.name, ref.session_token_key))
    return refs


Step = Literal["plan", "restore", "rollback", "finalize"]


@dataclass(frozen=True)
class RestoreRequest:
    """What a component needs to build its part of a restore runner config: the restore's spec
    (targets, options) or none (a scheduled drill), the policy that made the set, the step."""

    namespace: str
    policy: BackupPolicySpec | None
    components: list[str]
    step: Step = "restore"
    spec: RestoreSpec | None = None
    drill: bool = False


class Component(ABC):
    """One part of a Lamassu deployment a backup set can hold."""

    name: ClassVar[str]
    """The component's name in the API (``ComponentName`` value, status and manifest key)."""

    attr: ClassVar[str]
    """Its attribute on :class:`~lamassu_backup.models.policy.Components`."""

    package: ClassVar[str]
    """The package holding its runtime half (``backup`` and ``restore`` modules)."""

    def spec_of(self, comps: Components) -> Any:
        """The configured spec (None, or an empty list, when not configured)."""
        return getattr(comps, self.attr)

    def configured(self, comps: Components) -> bool:
        """Whether the policy holds this component."""
        return bool(self.spec_of(comps))

    @abstractmethod
    def runner_settings(
        self, mounts: SecretMounts, comps: Components, namespace: str
    ) -> dict[str, Any]:
        """Its part of a backup :class:`~lamassu_backup.models.runner.RunnerConfig` (keyword
        arguments), mounting the Secrets it needs."""

    def references(self, comps: Components) -> list[Reference]:
        """Every Secret key a backup of this component needs (with the spec field naming it)."""
        return []

    @abstractmethod
    def rpo(self, comps: Components) -> timedelta:
        """Its recovery-point objective: the policy is Stale past it."""

    def claims(self, comps: Components) -> list[tuple[str, str]]:
        """The PersistentVolumeClaims its backup Job mounts, as (spec field, claim name): the
        operator pins the Job to the node holding ReadWriteOnce ones (none by default)."""
        return []

    def pod_volumes(self, comps: Components) -> PodVolumes:
        """Volumes its backup Job mounts besides the Secret files (none by default)."""
        return [], []

    def drilled(self, comps: Components) -> bool:
        """Whether the scheduled verification drill restores it into scratch targets."""
        return False

    def restore_settings(self, mounts: SecretMounts, req: RestoreRequest) -> dict[str, Any]:
        """Its part of a :class:`~lamassu_backup.models.runner.RestoreRunConfig`."""
        return {}

    def restore_pod_volumes(self, req: RestoreRequest) -> PodVolumes:
        """Volumes a restore step's Job mounts for it (none by default)."""
        return [], []

    def restore_module(self, config: RestoreRunConfig | None) -> str:
        """The module holding its restore hooks (``HOOKS``) for a run of ``config``; the runner
        loads it by name (default: the package's ``restore``)."""
        return f"{self.package}.restore"
