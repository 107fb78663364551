"""The backup runner: every component of a Lamassu deployment into one encrypted, checksummed set.

Each component streams its artifacts through :func:`encrypt_to_store`, checks what the store
holds, writes the ``sha256sum -c`` sidecar, and records its outcome in a part file. The commit
step turns the part files into ``manifest.json``, signs it, and writes it last: until then the
set is incomplete by definition, whatever objects exist.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

from .. import __version__
from ..builders import layout
from ..builders.manifest import Manifest, build_manifest, render
from ..builders.manifest import parse as parse_manifest
from ..clients import postgres as pg
from ..clients.gpg import Keyring
from ..clients.s3 import S3Store
from ..errors import ConfigurationError, IntegrityError, LamassuBackupError
from ..models.policy import CompressionAlgorithm, DatabaseLayout

if TYPE_CHECKING:
    from ..clients.vault import VaultClient

from ..models.runner import (
    ArtifactRecord,
    ComponentOutcome,
    PostgresSettings,
    RunnerConfig,
    RunnerResult,
)
from .context import RunnerContext
from .pipeline import IterSource, ProcessSource, Source, WriterSource, encrypt_to_store
from .raft import SnapshotVerifier

_SERVER_FIELDS = (
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "ownerReferences",
)


def compressor_argv(algorithm: CompressionAlgorithm, level: int) -> list[str] | None:
    """The external compression stage, or None (pg_dump's own gzip, or none at all)."""
    if algorithm == CompressionAlgorithm.ZSTD:
        return ["zstd", "-q", f"-{max(level, 1)}", "-T1", "-c"]
    if algorithm == CompressionAlgorithm.LZ4:
        return ["lz4", "-q", f"-{max(level, 1)}", "-c"]
    return None


def compression_label(algorithm: CompressionAlgorithm, level: int) -> str:
    """How an artifact is compressed, for the manifest (and a person restoring by hand)."""
    if algorithm == CompressionAlgorithm.NONE:
        return "none"
    if algorithm == CompressionAlgorithm.GZIP:
        return f"pg_dump-gzip-{level}"
    return f"{algorithm.value}-{max(level, 1)}"


class BackupRun:
    """One runner invocation: some components of one set, and possibly its commit."""

    def __init__(self, cfg: RunnerConfig, ctx: RunnerContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.store: S3Store = ctx.store(cfg.destination)
        self._keyring: Keyring | None = None
        self._recipients: list[str] = []
        self._stored: list[str] = []

    # -- shared machinery --------------------------------------------------------------------

    @property
    def keyring(self) -> Keyring:
        """The keyring with the recipients imported (lazily: commit needs no recipients)."""
        if self._keyring is None:
            self._keyring = self.ctx.keyring()
            armored = self.ctx.required(
                self.cfg.gpg.recipients_file,
                "encryption recipients (spec.encryption.gpg.recipientsSecret)",
            )
            keys = self._keyring.import_recipients(
                armored, source="spec.encryption.gpg.recipientsSecret"
            )
            self._recipients = [k.fingerprint for k in keys]
        return self._keyring

    def close(self) -> None:
        """Release the keyring."""
        if self._keyring is not None:
            self._keyring.close()

    def encryption_label(self) -> str:
        """e.g. gpg+aws:kms."""
        sse = self.cfg.destination.sse
        return "gpg" if sse == "none" else f"gpg+{sse}"

    def key(self, relative: str) -> str:
        """Absolute key of a path inside the set."""
        return self.cfg.set_prefix + relative

    def store_artifact(
        self,
        source: Source,
        keys: layout.ArtifactKeys,
        *,
        component: str,
        name: str,
        kind: str,
        compression: str,
        compressor: list[str] | None = None,
        taps: Iterable[Callable[[bytes], None]] = (),
        details: dict[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Stream one artifact, check what the store holds, write its sidecar, return its record.

        ``details`` is read after the stream ends, so a source may fill it in while streaming
        (the snapshot verifier's facts, a volume's file count).
        """
        keyring = self.keyring
        upload = self.store.multipart(self.key(keys.key))
        stats = encrypt_to_store(
            source,
            keyring=keyring,
            recipients=self._recipients,
            upload=upload,
            compressor=compressor,
            taps=taps,
        )
        info = self.store.head(self.key(keys.key))
        if info is None or info.size != stats.stored_bytes:
            found = "nothing" if info is None else f"{info.size} bytes"
            raise IntegrityError(
                f"{self.store.url(self.key(keys.key))}: stored {stats.stored_bytes} bytes "
                f"but the store holds {found}"
            )
        if self.cfg.destination.sse != "none" and info.sse not in (None, self.cfg.destination.sse):
            raise IntegrityError(
                f"{self.store.url(self.key(keys.key))}: asked for server-side encryption "
                f"{self.cfg.destination.sse}, the store applied {info.sse}"
            )
        self._stored += [self.key(keys.key), self.key(keys.sidecar)]
        self.store.put_bytes(
            self.key(keys.sidecar),
            layout.sidecar_text(stats.plain_sha256, keys.plain_name).encode(),
            "text/plain",
        )
        return ArtifactRecord(
            component=component,
            name=name,
            kind=kind,
            key=keys.key,
            sidecar_key=keys.sidecar,
            size_bytes=stats.stored_bytes,
            plaintext_size_bytes=stats.plain_bytes,
            sha256=stats.stored_sha256,
            plaintext_sha256=stats.plain_sha256,
            compression=compression,
            encryption=self.encryption_label(),
            details={**(details or {}), "seconds": round(stats.seconds, 3)},
        )

    def run_component(self, component: str) -> ComponentOutcome:
        """Back up one component; failures become an outcome, never an exception."""
        started = time.monotonic()
        handlers: dict[str, Callable[[], ComponentOutcome]] = {
            "postgres": self.postgres,
            "vault": self.vault,
            "config": self.config,
            "volumes": self.volumes,
            "awsKms": self.aws_kms,
        }
        self._stored = []
        try:
            if component not in handlers:
                raise ConfigurationError(f"unknown component {component!r}")
            self._refuse_committed_set()
            outcome = handlers[component]()
        except LamassuBackupError as exc:
            outcome = ComponentOutcome(
                component=component,
                ok=False,
                reason=exc.reason,
                message=self.ctx.redactor.redact(exc.message),
            )
        except Exception as exc:  # noqa: BLE001 - one component's bug must not hide the others' results
            outcome = ComponentOutcome(
                component=component,
                ok=False,
                reason="InternalError",
                message=self.ctx.redactor.redact(f"{type(exc).__name__}: {exc}"),
            )
        if not outcome.ok and self._stored:
            self._discard_stored(outcome)
        outcome.seconds = round(time.monotonic() - started, 3)
        return outcome

    def _discard_stored(self, outcome: ComponentOutcome) -> None:
        """Remove what a failed component stored: a component is in a set whole or not at all."""
        try:
            self.store.delete_keys(self._stored)
        except LamassuBackupError as exc:
            outcome.warnings.append(
                f"could not remove the partial artifacts of {outcome.component}: {exc.message}"
            )

    def write_part(self, outcome: ComponentOutcome) -> None:
        """Record a component's outcome for the commit step."""
        data = outcome.model_dump_json(by_alias=True, exclude_none=True).encode()
        self.store.put_bytes(
            self.key(layout.part_key(outcome.component)),
            self.ctx.redactor.redact(data.decode()).encode(),
            "application/json",
        )

    # -- components --------------------------------------------------------------------------

    def postgres(self) -> ComponentOutcome:
        """One pg_dump per database (or schema), each from an exported snapshot."""
        settings = self.cfg.postgres
        if settings is None:
            raise ConfigurationError("component postgres is not configured")
        conn = self.ctx.pg_connection(settings)
        version = pg.server_version_num(conn)
        pg_dump = pg.pick_tool("pg_dump", version // 10000)
        pg_dump_major = pg.tool_major(pg_dump)
        if settings.layout == DatabaseLayout.DATABASES:
            targets: list[tuple[str, str | None]] = [(db, None) for db in settings.databases]
        else:
            targets = [(settings.database, s) for s in settings.schemas] or [
                (settings.database, None)
            ]
        dump = functools.partial(
            self._dump_database,
            conn,
            settings,
            version=version,
            pg_dump=pg_dump,
            pg_dump_major=pg_dump_major,
        )
        _ = self.keyring  # import the recipients once, before the workers share the keyring
        # A few databases at a time: the small ones finish while the big one streams, and each
        # pipeline is already several processes, so more than two buys nothing on small nodes.
        with ThreadPoolExecutor(
            max_workers=max(1, settings.parallel), thread_name_prefix="pg"
        ) as pool:
            futures = [pool.submit(dump, database, schema) for database, schema in targets]
        artifacts = [f.result() for f in futures]  # raises the first database's failure
        return ComponentOutcome(
            component="postgres",
            ok=True,
            artifacts=artifacts,
            details={"serverVersionNum": version},
        )

    def _dump_database(
        self,
        conn: pg.PgConnection,
        settings: PostgresSettings,
        database: str,
        schema: str | None,
        *,
        version: int,
        pg_dump: str,
        pg_dump_major: int | None,
    ) -> ArtifactRecord:
        """Dump one database (or schema) from its own exported snapshot into the set."""
        algorithm = settings.compression.algorithm
        level = settings.compression.level
        artifact_name = database if schema is None else f"{database}.{schema}"
        with pg.SnapshotSession(conn, database) as session:
            facts = pg.table_facts(session, schema)
            argv = pg.dump_command(
                pg_dump,
                database,
                snapshot=session.snapshot,
                compress_level=level if algorithm == CompressionAlgorithm.GZIP else 0,
                schema=schema,
            )
            source = ProcessSource(
                argv,
                env=conn.env(database),
                label=f"pg_dump of {artifact_name}",
                describe_error=functools.partial(pg_dump_error, artifact_name),
            )
            return self.store_artifact(
                source,
                layout.postgres_keys(artifact_name, algorithm.value),
                component="postgres",
                name=artifact_name,
                kind="pg-dump",
                compression=compression_label(algorithm, level),
                compressor=compressor_argv(algorithm, level),
                details={
                    "database": database,
                    **({"schema": schema} if schema else {}),
                    "serverVersionNum": version,
                    "pgDumpMajor": pg_dump_major,
                    **facts,
                },
            )

    def vault(self) -> ComponentOutcome:
        """A verified raft snapshot and/or a logical export of each KV v2 mount."""
        settings = self.cfg.vault
        if settings is None:
            raise ConfigurationError("component vault is not configured")
        client, _ = self.ctx.vault_client(settings)
        client.check_ready()
        artifacts = []
        if settings.raft_snapshot:
            verifier = SnapshotVerifier()
            facts: dict[str, Any] = {}

            chunks = client.snapshot_chunks()
            try:
                record = self.store_artifact(
                    _VerifiedSource(
                        IterSource(chunks, label="Vault raft snapshot"), verifier, facts
                    ),
                    layout.raft_keys(),
                    component="vault",
                    name="raft",
                    kind="raft-snapshot",
                    compression="none",
                    taps=[verifier.tap],
                    details=facts,
                )
            finally:
                chunks.close()
            artifacts.append(record)
        for mount in settings.kv_mounts:
            document = kv_export(client, mount)
            body = json.dumps(document, sort_keys=True, indent=1).encode()
            artifacts.append(
                self.store_artifact(
                    IterSource([body], label=f"KV export of {mount}"),
                    layout.kv_keys(mount),
                    component="vault",
                    name=mount,
                    kind="kv-export",
                    compression="none",
                    details={"mount": mount, "secrets": len(document["secrets"])},
                )
            )
        return ComponentOutcome(component="vault", ok=True, artifacts=artifacts)

    def config(self) -> ComponentOutcome:
        """ConfigMaps and Secrets as YAML files in a tar.gz."""
        settings = self.cfg.config
        if settings is None:
            raise ConfigurationError("component config is not configured")
        from ..clients.kube import ConfigReader, load_config, not_found

        reader = ConfigReader(load_config(os.environ.get("LAMASSU_KUBECONFIG")))
        objects: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, names, read in (
            ("ConfigMap", settings.config_maps, reader.config_map),
            ("Secret", settings.secrets, reader.secret),
        ):
            for name in names:
                try:
                    obj = read(settings.namespace, name)
                except LamassuBackupError as exc:
                    if not_found(exc):
                        field = "configMaps" if kind == "ConfigMap" else "secrets"
                        raise ConfigurationError(
                            f"{kind} {settings.namespace}/{name} does not exist: "
                            "create it or remove it "
                            f"from spec.components.config.{field}"
                        ) from None
                    raise
                obj.setdefault("kind", kind)
                objects[(kind, name)] = obj
        if settings.selector:
            for obj in reader.select(settings.namespace, settings.selector):
                objects[(obj["kind"], obj["metadata"]["name"])] = obj
        if not objects:
            raise ConfigurationError("the config component selected no ConfigMap or Secret")
        archive = config_archive(objects, self.cfg.set_time)
        index = sorted(f"{k}/{n}" for k, n in objects)
        return ComponentOutcome(
            component="config",
            ok=True,
            artifacts=[
                self.store_artifact(
                    IterSource([archive], label="config archive"),
                    layout.config_keys(),
                    component="config",
                    name="config",
                    kind="config-archive",
                    compression="gzip",
                    details={"objects": index},
                )
            ],
        )

    def volumes(self) -> ComponentOutcome:
        """Each mounted volume as a tar.gz (file crypto engine keys, SoftHSM tokens, CRLs)."""
        artifacts = []
        for volume in self.cfg.volumes:
            root = Path(volume.path)
            if not root.is_dir():
                raise ConfigurationError(
                    f"volume {volume.name}: {volume.path} is not a mounted directory"
                )
            counter: dict[str, Any] = {"files": 0}
            artifacts.append(
                self.store_artifact(
                    WriterSource(
                        functools.partial(tar_directory, root, counter=counter),
                        label=f"volume {volume.name}",
                    ),
                    layout.volume_keys(volume.name),
                    component="volumes",
                    name=volume.name,
                    kind="volume-archive",
                    compression="gzip",
                    details=counter,
                )
            )
        if not artifacts:
            raise ConfigurationError("component volumes has no volume")
        return ComponentOutcome(component="volumes", ok=True, artifacts=artifacts)

    def aws_kms(self) -> ComponentOutcome:
        """AWS KMS key metadata, with a loud warning for keys scheduled for deletion."""
        settings = self.cfg.aws_kms
        if settings is None:
            raise ConfigurationError("component awsKms is not configured")
        from ..clients.kms import KmsConnection, export_metadata

        document, warnings = export_metadata(
            KmsConnection(
                region=settings.region,
                endpoint=settings.endpoint,
                access_key_id=self.ctx.secret(settings.access_key_id_file, "AWS access key id"),
                secret_access_key=self.ctx.secret(
                    settings.secret_access_key_file, "AWS secret access key"
                ),
                session_token=self.ctx.secret(settings.session_token_file, "AWS session token"),
            ),
            settings.key_ids,
        )
        body = json.dumps(document, sort_keys=True, indent=1, default=str).encode()
        record = self.store_artifact(
            IterSource([body], label="AWS KMS metadata"),
            layout.aws_kms_keys(),
            component="awsKms",
            name="kms",
            kind="kms-metadata",
            compression="none",
            details={"keys": len(document["keys"]), "pendingDeletion": len(warnings)},
        )
        return ComponentOutcome(component="awsKms", ok=True, artifacts=[record], warnings=warnings)

    # -- commit ------------------------------------------------------------------------------

    def read_parts(self, requested: list[str]) -> list[ComponentOutcome]:
        """The outcomes the component runs recorded (a missing record counts as a failure later)."""
        outcomes = []
        for component in requested:
            key = self.key(layout.part_key(component))
            if self.store.head(key) is None:
                continue
            outcomes.append(ComponentOutcome.model_validate_json(self.store.get_bytes(key)))
        return outcomes

    def _refuse_committed_set(self) -> None:
        """A set with a manifest is sealed: nothing may be written into it any more."""
        if self.store.head(self.key(layout.MANIFEST)) is not None:
            raise IntegrityError(
                f"{self.store.url(self.key(layout.MANIFEST))} already exists: the set is committed "
                "and a run never writes into a committed set",
                reason="SetAlreadyCommitted",
            )

    def _committed(self) -> tuple[Manifest, str] | None:
        """This run's own manifest when a retried commit finds it written; another run's is an error."""
        if self.store.head(self.key(layout.MANIFEST)) is None:
            return None
        body = self.store.get_bytes(self.key(layout.MANIFEST))
        try:
            manifest = parse_manifest(body)
        except ValueError as exc:
            raise IntegrityError(
                f"{self.store.url(self.key(layout.MANIFEST))} exists and is unreadable ({exc}); "
                "refusing to replace it",
                reason="SetAlreadyCommitted",
            ) from exc
        if (manifest.namespace, manifest.policy, manifest.backup) != (
            self.cfg.namespace,
            self.cfg.policy,
            self.cfg.backup,
        ):
            raise IntegrityError(
                f"{self.store.url(self.key(layout.MANIFEST))} already holds the set of backup "
                f"{manifest.namespace}/{manifest.backup}; refusing to overwrite another run's set",
                reason="SetAlreadyCommitted",
            )
        return manifest, hashlib.sha256(body).hexdigest()

    def commit(self, requested: list[str]) -> tuple[Manifest, str]:
        """Check every artifact is stored, then write the signature and manifest.json, last.

        No manifest is written when no component stored anything: it would describe nothing.
        A manifest already there is never replaced: a retried commit of the same run returns it,
        any other is refused.
        """
        existing = self._committed()
        if existing is not None:
            return existing
        outcomes = self.read_parts(requested)
        for outcome in outcomes:
            if not outcome.ok:
                continue
            for artifact in outcome.artifacts:
                info = self.store.head(self.key(artifact.key))
                if info is None or info.size != artifact.size_bytes:
                    outcome.ok = False
                    outcome.reason = "ArtifactMissing"
                    outcome.message = (
                        f"{artifact.key} is missing or has the wrong size in the store"
                    )
                    break
        if not any(o.ok for o in outcomes):
            reasons = (
                "; ".join(f"{o.component}: {o.message}" for o in outcomes) or "no component ran"
            )
            raise LamassuBackupError(
                f"nothing was stored, no manifest written ({reasons})", reason="NothingStored"
            )
        signing_fpr: str | None = None
        signer: Keyring | None = None
        signing_key = self.ctx.secret(
            self.cfg.gpg.signing_key_file, "manifest signing key (signingKeySecret)"
        )
        passphrase = self.ctx.secret(self.cfg.gpg.signing_passphrase_file, "signing key passphrase")
        if signing_key:
            signer = self.ctx.keyring()
            keys = signer.import_secret(
                signing_key, source="spec.encryption.gpg.signingKeySecret", passphrase=passphrase
            )
            usable = [k for k in keys if k.can_sign]
            if not usable:
                signer.close()
                raise ConfigurationError(
                    "spec.encryption.gpg.signingKeySecret holds no key that can sign"
                )
            signing_fpr = usable[0].fingerprint
        try:
            manifest = build_manifest(
                namespace=self.cfg.namespace,
                policy=self.cfg.policy,
                backup=self.cfg.backup,
                set_time=self.cfg.set_time,
                created_at=datetime.now(UTC),
                tool_version=__version__,
                requested=requested,
                outcomes=outcomes,
                encryption={
                    "client": "gpg",
                    "serverSide": self.cfg.destination.sse,
                    **(
                        {"kmsKeyId": self.cfg.destination.kms_key_id}
                        if self.cfg.destination.kms_key_id
                        else {}
                    ),
                },
                signed_by=signing_fpr,
            )
            body = render(manifest)
            if signer is not None and signing_fpr is not None:
                signature = signer.sign_detached(body, signing_fpr, passphrase)
                self.store.put_bytes(
                    self.key(layout.SIGNATURE), signature, "application/pgp-signature"
                )
            self.store.put_bytes(self.key(layout.MANIFEST), body, "application/json")
        finally:
            if signer is not None:
                signer.close()
        return manifest, hashlib.sha256(body).hexdigest()


class _VerifiedSource:
    """Wraps the snapshot source: after the stream ends, the verifier must accept it."""

    def __init__(
        self, inner: IterSource, verifier: SnapshotVerifier, facts: dict[str, Any]
    ) -> None:
        self.label = inner.label
        self._inner = inner
        self._verifier = verifier
        self._facts = facts

    def chunks(self) -> Iterator[bytes]:
        return self._inner.chunks()

    def finish(self) -> None:
        self._inner.finish()
        self._facts.update(self._verifier.result())

    def kill(self) -> None:
        self._inner.kill()


def pg_dump_error(name: str, code: int, stderr: str) -> str:
    """A pg_dump failure for a person."""
    return f"pg_dump of {name} failed (exit {code}): {pg_error(stderr)}"


def pg_error(stderr: str) -> str:
    """The informative line of a pg_dump error."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    useful = [ln for ln in lines if "error" in ln.lower() or "fatal" in ln.lower()] or lines
    return "; ".join(useful[-2:])[:500] or "no error output"


def kv_export(client: VaultClient, mount: str) -> dict[str, Any]:
    """Every secret under a KV v2 mount, all fields of the latest version, with metadata."""
    secrets: dict[str, Any] = {}
    for path in client.kv_paths(mount):
        entry = client.kv_read(mount, path)
        meta = entry.get("metadata") or {}
        secrets[path] = {
            "data": entry.get("data") or {},
            "version": meta.get("version"),
            "createdTime": meta.get("created_time"),
            "customMetadata": meta.get("custom_metadata"),
        }
    return {"format": "lamassu-backup/kv-export/v1", "mount": mount, "secrets": secrets}


def config_archive(objects: dict[tuple[str, str], dict[str, Any]], set_time: str) -> bytes:
    """A deterministic tar.gz of the objects (server-set fields removed), one YAML file each."""
    mtime = layout.parse_set_time(set_time).timestamp()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for (kind, name), obj in sorted(objects.items()):
            clean = dict(obj)
            clean.pop("status", None)
            meta = {
                k: v for k, v in (clean.get("metadata") or {}).items() if k not in _SERVER_FIELDS
            }
            annotations = {
                k: v
                for k, v in (meta.get("annotations") or {}).items()
                if k != "kubectl.kubernetes.io/last-applied-configuration"
            }
            if annotations:
                meta["annotations"] = annotations
            else:
                meta.pop("annotations", None)
            clean["metadata"] = meta
            clean.setdefault("apiVersion", "v1")
            data = yaml.safe_dump(clean, sort_keys=True).encode()
            info = tarfile.TarInfo(
                f"{'configmaps' if kind == 'ConfigMap' else 'secrets'}/{name}.yaml"
            )
            info.size = len(data)
            info.mtime = int(mtime)
            info.mode = 0o600
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tar_directory(root: Path, out: IO[bytes], *, counter: dict[str, Any]) -> None:
    """Stream a directory as tar.gz, keeping modes and owners (key files are 0600)."""
    with tarfile.open(fileobj=out, mode="w|gz", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
            if path.is_file():
                counter["files"] += 1


def _summarise(result: RunnerResult, outcome: ComponentOutcome) -> None:
    result.components[outcome.component] = (
        "Completed" if outcome.ok else f"Failed: {outcome.reason}"
    )
    result.warnings.extend(outcome.warnings)
    for artifact in outcome.artifacts:
        result.artifacts.append(
            {
                "k": artifact.key,
                "s": artifact.size_bytes,
                "h": artifact.sha256,
                "p": artifact.plaintext_sha256,
            }
        )
        result.size_bytes += artifact.size_bytes


def run(
    cfg: RunnerConfig,
    ctx: RunnerContext,
    *,
    components: list[str] | None,
    commit: bool,
    allow_partial: bool,
) -> tuple[RunnerResult, int]:
    """Back up ``components`` (default: the config's), optionally commit; result and exit code.

    Exit 0: everything requested is stored (and committed). With ``allow_partial``, also 0 when
    a partial set was committed (the operator reads which components failed from the result).
    """
    started = time.monotonic()
    run_ = BackupRun(cfg, ctx)
    todo = components if components is not None else cfg.components
    result = RunnerResult(ok=False, action="backup" if todo else "commit")
    code = 1
    try:
        run_.store.check_bucket()
        outcomes = []
        for component in todo:
            outcome = run_.run_component(component)
            run_.write_part(outcome)
            outcomes.append(outcome)
            _summarise(result, outcome)
        failed = [o for o in outcomes if not o.ok]
        result.ok = not failed
        if failed:
            result.error = "; ".join(f"{o.component}: {o.message}" for o in failed)
            result.reason = failed[0].reason
        if commit:
            manifest, digest = run_.commit(cfg.components)
            result.manifest_key = run_.key(layout.MANIFEST)
            result.manifest_sha256 = digest
            for name, entry in manifest.components.items():
                result.components[name] = (
                    "Completed" if entry.status == "Completed" else f"Failed: {entry.reason}"
                )
            result.size_bytes = manifest.total_size()
            result.ok = manifest.complete
            if not manifest.complete:
                bad = [
                    f"{n} ({e.reason}: {e.message})"
                    for n, e in manifest.components.items()
                    if e.status != "Completed"
                ]
                result.error = "incomplete set: " + "; ".join(bad)
        code = 0 if result.ok or (allow_partial and result.manifest_key) else 1
    except LamassuBackupError as exc:
        result.error = exc.message
        result.reason = exc.reason
    finally:
        run_.close()
    result.seconds = round(time.monotonic() - started, 3)
    if result.error:
        result.error = ctx.redactor.redact(result.error)
    return result, code
