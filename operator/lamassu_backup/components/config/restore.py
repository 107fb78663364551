"""The config component's restore: ConfigMaps and Secrets back from the config archive, by
server-side apply, plan first.

The plan compares each archived object with the live one, key by key (never values: Lamassu's
ConfigMaps carry credentials in plain text), and is the dry run's output. Applying uses
server-side apply with the field manager ``lamassu-backup``, forcing conflicts: the archived
values win for the keys they hold. Keys present live but not in the archive are kept (apply only
claims the fields it sends), and the plan says so.

Undo: before applying, each object it will change is recorded in the run's undo journal as it
was (a Secret of the restore's namespace: the previous object holds Secret data); an undo within
the run, or the ``rollback`` step from the journal, puts each one back exactly (keys the restore
added go too) and deletes those the restore created.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from ...errors import ConfigurationError, IntegrityError, LamassuBackupError
from ...models.runner import ArtifactRecord
from ...runner.restore.hooks import BaseHooks, PlanItem, Purpose

if TYPE_CHECKING:
    from ...clients.kube import ConfigWriter
    from ...runner.restore.hooks import HooksFactory
    from ...runner.restore.run import RestoreRun

NAME = "config"

FIELD_MANAGER = "lamassu-backup"
_DATA_FIELDS = {"ConfigMap": ("data", "binaryData"), "Secret": ("data",)}
_MAX_OBJECT = 4 * 1024 * 1024


def read_archive(data: bytes, key: str) -> list[dict[str, Any]]:
    """The objects in a config archive (configmaps/<name>.yaml, secrets/<name>.yaml)."""
    objects: list[dict[str, Any]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".yaml"):
                    continue
                if member.size > _MAX_OBJECT:
                    raise IntegrityError(f"{key}: {member.name} is implausibly large")
                handle = tar.extractfile(member)
                assert handle is not None
                obj = yaml.safe_load(handle.read())
                if not isinstance(obj, dict) or obj.get("kind") not in _DATA_FIELDS:
                    raise IntegrityError(f"{key}: {member.name} is not a ConfigMap or Secret")
                objects.append(obj)
    except (tarfile.TarError, OSError, EOFError, yaml.YAMLError) as exc:
        raise IntegrityError(f"{key}: not a readable config archive ({exc})") from None
    return sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"]))


@dataclass
class ConfigChange:
    """What applying one archived object changes."""

    kind: str
    name: str
    action: str
    """create, update or unchanged."""
    changed: list[str] = field(default_factory=list)
    """Keys whose value differs (or that the live object lacks), and changed metadata fields."""
    kept: list[str] = field(default_factory=list)
    """Keys only the live object has: apply leaves them."""

    def detail(self) -> str:
        """One line for the plan."""
        parts = []
        if self.changed:
            parts.append("keys " + ", ".join(self.changed[:8]))
        if self.kept:
            parts.append("kept live-only keys " + ", ".join(self.kept[:4]))
        return "; ".join(parts)


def _keys(obj: Mapping[str, Any] | None, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for fld in _DATA_FIELDS[kind]:
        for k, v in ((obj or {}).get(fld) or {}).items():
            out[k] = v
    return out


def plan_changes(
    desired: list[dict[str, Any]], live: Mapping[tuple[str, str], dict[str, Any] | None]
) -> list[ConfigChange]:
    """Compare archived objects with the live ones (None = absent); pure, for dry runs and tests."""
    changes = []
    for obj in desired:
        kind, name = obj["kind"], obj["metadata"]["name"]
        current = live.get((kind, name))
        if current is None:
            changes.append(ConfigChange(kind, name, "create", sorted(_keys(obj, kind))))
            continue
        want, have = _keys(obj, kind), _keys(current, kind)
        changed = sorted(k for k, v in want.items() if have.get(k) != v)
        kept = sorted(k for k in have if k not in want)
        meta_want = obj.get("metadata") or {}
        meta_have = current.get("metadata") or {}
        for fld in ("labels", "annotations"):
            wanted: dict[str, Any] = meta_want.get(fld) or {}
            present: dict[str, Any] = meta_have.get(fld) or {}
            if any(present.get(k) != v for k, v in wanted.items()):
                changed.append(f"metadata.{fld}")
        if kind == "Secret" and obj.get("type") and obj.get("type") != current.get("type"):
            changed.append("type")
        changes.append(
            ConfigChange(kind, name, "update" if changed else "unchanged", changed, kept)
        )
    return changes


def apply_body(obj: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """What is sent to server-side apply: identity, labels, annotations and the data fields."""
    kind = obj["kind"]
    meta = obj.get("metadata") or {}
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": meta["name"],
            "namespace": namespace,
            **({"labels": meta["labels"]} if meta.get("labels") else {}),
            **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
        },
    }
    for fld in _DATA_FIELDS[kind]:
        if obj.get(fld):
            body[fld] = obj[fld]
    if kind == "Secret" and obj.get("type"):
        body["type"] = obj["type"]
    return body


def previous_body(live: Mapping[str, Any]) -> dict[str, Any]:
    """What putting a live object back means: its identity, labels, annotations, type and data."""
    kind = live.get("kind") or ("Secret" if "type" in live else "ConfigMap")
    meta = live.get("metadata") or {}
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            **({"labels": meta["labels"]} if meta.get("labels") else {}),
            **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
        },
    }
    for fld in (*_DATA_FIELDS[kind], "type", "immutable"):
        if live.get(fld) is not None:
            body[fld] = live[fld]
    return body


class ConfigHooks(BaseHooks):
    """Config in a restore: planned against the live namespace, applied after the databases; in
    a drill, the apply is validated by the apiserver (dry run)."""

    name = NAME
    order = 30

    def __init__(self, run: RestoreRun) -> None:
        super().__init__(run)
        self.objects: list[dict[str, Any]] = []
        self.changes: list[ConfigChange] | None = None
        self.writer: ConfigWriter | None = None
        self.namespace = ""
        self.live: dict[tuple[str, str], dict[str, Any] | None] = {}
        """The live objects the plan was made against (what an undo puts back)."""
        self.undo_entries: list[dict[str, Any]] = []
        """What this run's applies replaced: kind, name, namespace, previous object (or None)."""

    def select(self, artifacts: list[ArtifactRecord]) -> None:
        archive = next((a for a in artifacts if a.kind == "config-archive"), None)
        self.artifacts = [archive] if archive is not None else []

    def _read_objects(self) -> list[dict[str, Any]]:
        """The config archive's objects, verified."""
        if not self.artifacts:
            return []
        archive = self.artifacts[0]
        return read_archive(self.run.set.fetch(archive, 64 * 1024 * 1024), archive.key)

    def config_changes(
        self, objects: list[dict[str, Any]]
    ) -> tuple[list[ConfigChange], ConfigWriter, str]:
        """The config plan against the live namespace."""
        target = self.run.cfg.config
        if target is None:
            raise ConfigurationError(
                "the config component needs a target namespace (spec.target.namespace)"
            )
        from ...clients.kube import ConfigWriter, load_config

        namespace = target.namespace
        writer = ConfigWriter(load_config(os.environ.get("LAMASSU_KUBECONFIG")))
        live = {
            (o["kind"], o["metadata"]["name"]): writer.get(
                o["kind"], namespace, o["metadata"]["name"]
            )
            for o in objects
        }
        self.live = live
        return plan_changes(objects, live), writer, namespace

    # -- before anything live changes ------------------------------------------------------------

    def plan(self, item: PlanItem, drill: bool) -> None:
        if drill:
            item("the config archive", "plan and apiserver dry-run apply")
            return
        if not self.objects:
            return
        if self.run.cfg.config is None:
            for obj in self.objects:
                item(f"{obj['kind']} {obj['metadata']['name']}", "apply")
            return
        changes, _, namespace = self.config_changes(self.objects)
        for change in changes:
            item(f"{change.kind} {namespace}/{change.name}", change.action, change.detail())

    def require(self) -> None:
        if self.run.cfg.config is None:
            raise ConfigurationError(
                "the config component needs a target namespace (spec.target.namespace)"
            )

    def verify(self, purpose: Purpose) -> None:
        if purpose != "restore":
            self.objects = self._read_objects()
            return
        with self.run.phase("verify", NAME):
            self.objects = self._read_objects()
            if self.objects:
                self.changes, self.writer, self.namespace = self.config_changes(self.objects)

    def drill(self) -> None:
        """Plan against the live namespace and have the apiserver validate the apply (dry run)."""
        if not self.objects:
            return
        with self.run.phase(NAME, NAME):
            ev: dict[str, Any] = {"objects": len(self.objects)}
            if self.run.cfg.config is not None:
                changes, writer, namespace = self.config_changes(self.objects)
                by_name = {(o["kind"], o["metadata"]["name"]): o for o in self.objects}
                for change in changes:
                    if change.action != "unchanged":
                        body = apply_body(by_name[(change.kind, change.name)], namespace)
                        writer.apply(body, field_manager=FIELD_MANAGER, dry_run=True)
                for action in ("create", "update", "unchanged"):
                    ev[action] = sum(1 for c in changes if c.action == action)
                ev["dryRunApplied"] = ev["create"] + ev["update"]
            self.run.evidence[NAME] = ev
            self.run.result.components[NAME] = "Verified"

    # -- in place ----------------------------------------------------------------------------------

    def apply(self, suffix: str) -> None:
        if self.changes is None or self.writer is None:
            return
        with self.run.phase(NAME, NAME):
            by_name = {(o["kind"], o["metadata"]["name"]): o for o in self.objects}
            todo = [c for c in self.changes if c.action != "unchanged"]
            for change in todo:
                live = self.live.get((change.kind, change.name))
                self.undo_entries.append(
                    {
                        "kind": change.kind,
                        "name": change.name,
                        "namespace": self.namespace,
                        "previous": previous_body(live) if live is not None else None,
                    }
                )
            if todo:
                self.run.journal.record(NAME, self.undo_entries)  # before the first apply
            for change in todo:
                body = apply_body(by_name[(change.kind, change.name)], self.namespace)
                self.writer.apply(body, field_manager=FIELD_MANAGER)
                self.run.changed.append(f"{NAME}:{change.kind}/{change.name}")
            self.run.evidence[NAME] = {
                action: sum(1 for c in self.changes if c.action == action)
                for action in ("create", "update", "unchanged")
            }
            self.run.result.components[NAME] = "Completed"

    def undo(self, suffix: str) -> str | None:
        """A later step failed (or this one half way): put back what the applies replaced."""
        if not self.undo_entries or self.writer is None:
            return None
        names = self._put_back(self.writer, self.undo_entries)
        self.undo_entries = []
        return f"the config was put back ({len(names)} object(s))" if names else None

    def _put_back(self, writer: ConfigWriter, entries: list[dict[str, Any]]) -> list[str]:
        """Each object as it was, newest first; the created ones deleted."""
        done: list[str] = []
        with self.run.phase("configUndo", NAME):
            for entry in reversed(entries):
                what = f"{entry['kind']}/{entry['name']}"
                if f"{NAME}:{what}" not in self.run.changed:
                    continue  # never applied (the run stopped before it)
                try:
                    if entry.get("previous") is None:
                        writer.delete(entry["kind"], entry["namespace"], entry["name"])
                    else:
                        writer.replace(dict(entry["previous"]))
                except LamassuBackupError as exc:
                    raise LamassuBackupError(
                        f"putting {entry['kind']} {entry['namespace']}/{entry['name']} back "
                        f"failed: {exc.message}",
                        reason="ConfigUndoFailed",
                    ) from None
                self.run.changed.remove(f"{NAME}:{what}")
                done.append(f"{NAME}:{what}")
        return done

    def rollback(self, suffix: str) -> list[str]:
        """The rollback step: put back what the restore's applies replaced (from the journal)."""
        entries = self.run.journal.get(NAME)
        if not entries:
            return []
        from ...clients.kube import ConfigWriter, load_config

        writer = ConfigWriter(load_config(os.environ.get("LAMASSU_KUBECONFIG")))
        for entry in entries:
            self.run.changed.append(f"{NAME}:{entry['kind']}/{entry['name']}")
        return self._put_back(writer, list(entries))


HOOKS: HooksFactory = ConfigHooks
