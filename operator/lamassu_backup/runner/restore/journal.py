"""The undo journal of an in-place restore: what each component's live change replaced, written
*before* the change, so that the ``rollback`` step (another Job, after the validation failed)
can put it back.

It lives in a Secret of the restore's namespace (``RestoreRunConfig.journal``), because it holds
what the config component overwrote, Secrets included. For Vault it holds only paths and version
numbers: the previous values stay in Vault's own version history, never in the cluster. Runs
without a journal (a runner started by hand) can still undo within the run (the components keep
what they replaced in memory), but a later ``--step rollback`` puts back the databases only.
Never logged: nothing of it reaches the result, an Event or status.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from ...errors import LamassuBackupError
from ...models.runner import RestoreRunConfig

KEY = "journal.json"
FIELD_MANAGER = "lamassu-backup"


class Journal:
    """One restore's undo journal, by component (in memory, and in its Secret when configured)."""

    def __init__(self, cfg: RestoreRunConfig) -> None:
        self.cfg = cfg
        self.entries: dict[str, Any] = {}
        self.suffix = cfg.swap_suffix
        """The restore's swap suffix: a rollback of another restore never reads this journal."""
        self._loaded = False

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.journal)

    def _writer(self) -> Any:
        from ...clients.kube import ConfigWriter, load_config

        return ConfigWriter(load_config(os.environ.get("LAMASSU_KUBECONFIG")))

    def record(self, component: str, entry: Any) -> None:
        """Keep ``entry`` as ``component``'s undo and persist the journal before the change it
        describes is made (a failure here stops the restore with nothing live changed)."""
        self.entries[component] = entry
        if not self.enabled:
            return
        text = json.dumps({"suffix": self.suffix, "entries": self.entries})
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.cfg.journal,
                "namespace": self.cfg.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "lamassu-backup-operator",
                    "backup.lamassu.io/restore": self.cfg.restore[:63],
                },
            },
            "type": "Opaque",
            "data": {KEY: base64.b64encode(text.encode()).decode()},
        }
        try:
            self._writer().apply(body, field_manager=FIELD_MANAGER)
        except LamassuBackupError as exc:
            raise LamassuBackupError(
                f"the undo journal (Secret {self.cfg.namespace}/{self.cfg.journal}) could not be "
                f"written, so nothing live was changed: {exc.message}",
                reason="JournalNotWritten",
            ) from None

    def get(self, component: str) -> Any:
        """``component``'s undo: from this run, else (rollback step) from the Secret."""
        if component not in self.entries and self.enabled and not self._loaded:
            self._loaded = True
            secret = self._writer().get("Secret", self.cfg.namespace, str(self.cfg.journal))
            raw = ((secret or {}).get("data") or {}).get(KEY)
            if raw:
                doc = json.loads(base64.b64decode(raw))
                if doc.get("suffix") == self.suffix:
                    self.entries = {**doc.get("entries", {}), **self.entries}
        return self.entries.get(component)

    def drop(self) -> None:
        """Delete the journal (after a successful undo, or at finalize)."""
        self.entries = {}
        if self.enabled:
            self._writer().delete("Secret", self.cfg.namespace, str(self.cfg.journal))
