"""The postgres component's restore hooks for a point-in-time restore (``RestoreRunConfig.pitr``).

The same hooks as a dump restore (:class:`..restore.PostgresHooks`: restore beside, verify,
swap in one transaction, swap back, finalize, drill teardown), with the data taken from the
policy's WAL archive instead of the set's dumps:

- the plan step checks the target against the window before anything else happens (a target
  outside it fails the restore with reason ``OutsideRecoverableWindow``, naming the window and
  ``spec.source.pointInTime``), then streams the base backup and every WAL object the target
  needs through both checksums, keeping nothing;
- the restore step recovers into a scratch server in the Job (:func:`..pitr.recover`: every
  object verified before the server starts), restores each database from it beside the live
  one and verifies it against the recovered server (:mod:`..pitr_swap`), and removes the
  scratch server and its files at once, also on failure. The swap, rollback and finalize are
  the dump restore's;
- a drill does the same into ``<db>__drill_<id>`` copies that are dropped again.

WAL shipping after an in-place restore continues as before: the restore writes into the live
server as ordinary transactions (no promotion, no new timeline), so the archive's history stays
the live server's; the scratch server never archives (``archive_mode = off``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ....builders import wal as walb
from ....clients import postgres as pg
from ....clients.gpg import Keyring
from ....clients.s3 import S3Store
from ....errors import ConfigurationError, LamassuBackupError
from ....models.runner import PointInTimeSettings, RestoreRunConfig
from ....models.wal import WalRecord
from ....runner.restore.hooks import PlanItem, Purpose
from ..restore import (
    NAME,
    PRE_RESTORE,
    RESTORING,
    PgTarget,
    PostgresHooks,
    check_name,
    lock_databases,
)
from . import pitr
from .pitr_swap import RecoveredServerRestore, restore_beside
from .settings import STATUS_KEY, ShipperStatus

if TYPE_CHECKING:
    from ....runner.restore.hooks import HooksFactory
    from ....runner.restore.run import RestoreRun

ARCHIVE_AFTER = (
    "WAL shipping continues under the same prefix and timeline: the restore wrote into the live "
    "server as ordinary transactions (no promotion, no new timeline), so the archive's history "
    "stays the live server's; the scratch server archived nothing"
)


CATCH_UP_SECONDS = 30.0
"""How long an in-place restore to ``latest`` waits for the shipper to report that everything the
server had when the restore step started is in the bucket (the workloads are stopped by then:
what they last wrote is still being shipped, at most a ``partialInterval`` behind)."""


def caught_up_at(store: S3Store, archive_prefix: str) -> datetime | None:
    """The shipper's ``caughtUpAt`` (its heartbeat), None when it has none or it is unreadable."""
    key = archive_prefix + STATUS_KEY
    try:
        if store.head(key) is None:
            return None
        return ShipperStatus.model_validate_json(store.get_bytes(key)).caught_up_at
    except (LamassuBackupError, ValueError):
        return None


def wait_caught_up(
    read: Callable[[], datetime | None],
    since: datetime,
    *,
    timeout: float = CATCH_UP_SECONDS,
    poll: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[bool, datetime | None]:
    """Until the archive holds everything the server had at ``since`` (True), or ``timeout``
    (False, with the last ``caughtUpAt`` seen): a shipper that is gone (the server destroyed,
    the case ``latest`` is for) must not hold a disaster recovery up for long."""
    waited = 0.0
    seen = read()
    while seen is None or seen < since:
        if waited >= timeout:
            return False, seen
        sleep(poll)
        waited += poll
        seen = read()
    return True, seen


def whole_databases(cfg: RestoreRunConfig) -> list[str]:
    """The databases a point-in-time restore brings back: spec.databases, else the policy's
    (empty: every database of the recovered server). A schema cannot be named: recovery brings
    back whole databases."""
    parts = [d for d in cfg.databases if "." in d]
    if parts:
        raise ConfigurationError(
            f"spec.databases names {', '.join(parts)}: a point-in-time restore brings back whole "
            "databases; name the databases (e.g. lamassu), not <database>.<schema>"
        )
    settings = cfg.pitr
    return list(cfg.databases) or (list(settings.databases) if settings is not None else [])


def describe_target(plan: walb.RecoveryPlan) -> str:
    """Where recovery stops, for plans and messages."""
    if plan.target_time is None:
        return "the last shipped commit"
    return plan.target_time.isoformat()


def pitr_evidence(
    settings: PointInTimeSettings, archive: str, plan: walb.RecoveryPlan
) -> dict[str, object]:
    """What status shows of a point-in-time restore: the target, the base backup, the window."""
    window = plan.window
    return {
        "requested": settings.point_in_time,
        "target": plan.target_time.isoformat() if plan.target_time else None,
        "archive": archive,
        "baseBackup": plan.base.set_time,
        "walFiles": len(plan.records),
        "recoverableFrom": window.recoverable_from.isoformat() if window.recoverable_from else None,
        "recoverableUntil": (
            window.recoverable_until.isoformat() if window.recoverable_until else None
        ),
        "lastShippedWal": window.last_shipped_wal,
    }


def _restoring_name(database: str) -> str:
    return f"{database}{RESTORING}"


class PitrHooks(PostgresHooks):
    """Postgres from the WAL archive, to a point in time (see the module docstring)."""

    def __init__(self, run: RestoreRun) -> None:
        super().__init__(run)
        self.recovery_plan: walb.RecoveryPlan | None = None
        self.records: list[WalRecord] = []
        self.stored: pitr.StoredBase | None = None
        self.recovery: pitr.RecoveryResult | None = None

    @property
    def settings(self) -> PointInTimeSettings:
        """The run's point-in-time settings."""
        assert self.run.cfg.pitr is not None
        return self.run.cfg.pitr

    @contextlib.contextmanager
    def _verifier(self) -> Iterator[tuple[Keyring | None, list[str]]]:
        """The signer keys base-backup manifests must be signed by (as a dump set's manifest)."""
        armored = self.run.ctx.secret(
            self.run.cfg.signer_key_file, "signer public key (spec.signerKeySecret)"
        )
        if not armored:
            yield None, []
            return
        with self.run.ctx.keyring() as keyring:
            keys = keyring.import_public(armored, source="spec.signerKeySecret")
            yield keyring, [k.fingerprint for k in keys]

    def _message(self, exc: ConfigurationError) -> ConfigurationError:
        """A refused target, naming the field the person sets."""
        if exc.reason != pitr.OUTSIDE_WINDOW:
            return exc
        return ConfigurationError(
            f"spec.source.pointInTime {self.settings.point_in_time}: {exc.message}",
            reason=exc.reason,
        )

    # -- before anything live changes ------------------------------------------------------------

    def load_source(self, requested: bool) -> bool:
        """The preflight: the target against the window, before the set or a server is read."""
        if not requested:
            return False
        settings = self.settings
        store = self.run.set.store
        with self.run.phase("pitrPlan", NAME), self._verifier() as (verifier, trusted):
            if verifier is None:
                self.run.warn(
                    "base backup manifests were not signature-checked: no spec.signerKeySecret"
                )
            try:
                plan, records, stored = pitr.plan_target(
                    store,
                    settings.archive_prefix,
                    settings.point_in_time,
                    verifier=verifier,
                    trusted=trusted,
                )
            except ConfigurationError as exc:
                raise self._message(exc) from None
        self.recovery_plan, self.records, self.stored = plan, records, stored
        self.artifacts = [stored.artifact, *(pitr.wal_artifact(r) for r in plan.records)]
        self.run.evidence["pitr"] = pitr_evidence(
            settings, store.url(settings.archive_prefix), plan
        )
        whole_databases(self.run.cfg)  # refuses <db>.<schema> now, before anything else
        return True

    def plan(self, item: PlanItem, drill: bool) -> None:
        plan = self.recovery_plan
        assert plan is not None
        source = (
            f"base backup {plan.base.set_time} + {len(plan.records)} WAL file(s), "
            f"recovered to {describe_target(plan)} in a scratch server"
        )
        databases = whole_databases(self.run.cfg) or ["<every database>"]
        existing: set[str] = set()
        if not drill and self.run.cfg.postgres is not None:
            existing = set(pg.list_databases(pg.OneShot(self.conn(), "postgres")))
        suffix = self.run.cfg.swap_suffix or "<time>"
        for database in databases:
            if drill:
                item(f"database {self._drill_name(database)}", "restore, verify, drop", source)
            elif database in existing:
                aside = f"{database}{PRE_RESTORE}{suffix}"
                item(
                    f"database {database}",
                    f"restore into {database}{RESTORING}, verify, swap in; keep the live as {aside}",
                    source,
                )
            else:
                item(
                    f"database {database}",
                    f"restore into {database}{RESTORING}, verify, rename to {database}",
                    source,
                )

    def verify(self, purpose: Purpose) -> None:
        """The plan streams every object through both checksums (a restore or a drill verifies
        each as it fetches it, before the scratch server starts)."""
        if purpose != "plan":
            return
        assert self.recovery_plan is not None
        assert self.stored is not None
        major = self.stored.server_version // 10000
        for tool in ("postgres", "pg_ctl"):  # the restore step's Job runs this same image
            pitr.server_tool(tool, major)
        read = sum(a.size_bytes for a in self.artifacts)
        with self.run.phase("verify", NAME), contextlib.suppress(pitr.Superseded):
            # Superseded: the newest partial snapshot's segment completed meanwhile; the restore
            # step plans again with it (and verifies what it fetches).
            read = pitr.fetch_verified(
                self.run.set.store,
                self.settings.archive_prefix,
                self.recovery_plan,
                self.records,
                self.stored,
                keyring=self.run.set.keyring,
                passphrase=self.run.set.passphrase,
                wal_dir=None,
                datadir=None,
                verifybackup=None,
            )
        self.run.evidence["pitr"] = {**self.run.evidence.get("pitr", {}), "verifiedBytes": read}

    def prepare(self, suffix: str | None) -> None:
        """Recover into a scratch server, restore every database from it beside the live ones
        (or as drill copies), verified; the scratch server is gone when this returns."""
        databases = whole_databases(self.run.cfg)
        conn = self.conn()
        if suffix is not None:
            self._lock(conn, databases, suffix)
            if self.settings.point_in_time.strip().lower() == "latest":
                self._catch_up()
        recovery = self._recover()
        try:
            recovered = recovery.server.local_connection(conn.user)
            if not databases:
                databases = [
                    d
                    for d in pg.list_databases(pg.OneShot(recovered, "postgres"))
                    if d not in ("postgres", "template0", "template1")
                ]
                if suffix is not None:
                    self._lock(conn, databases, suffix)
            self.pgr = RecoveredServerRestore(
                conn,
                recovered,
                store=self.run.set.store,
                keyring=self.run.set.keyring,
                scratch_dir=self.run.ctx.scratch,
                parallel=self.run.cfg.postgres_parallel,
                copy_props=suffix is not None,
            )
            with self.run.phase("postgres", NAME):
                targets = restore_beside(
                    self.pgr, databases, self._drill_name if suffix is None else _restoring_name
                )
        finally:
            self._close_server()
        self._record(recovery, targets, in_place=suffix is not None)

    def _lock(self, conn: pg.PgConnection, databases: list[str], suffix: str) -> None:
        """In place: the advisory locks a dump restore takes too, and the kept names checked."""
        if not databases:
            return
        self.lock = lock_databases(conn, databases)
        for database in databases:
            check_name(f"{database}{PRE_RESTORE}{suffix}")

    def _recover(self) -> pitr.RecoveryResult:
        """The scratch server, recovered to the target (every object verified first)."""
        run_as, owner = pitr.server_account()
        if owner is not None:
            self.run.ctx.scratch.chmod(0o711)  # the server's account must reach its files
        with self._verifier() as (verifier, trusted), self.run.phase("pitrRecover", NAME):
            try:
                self.recovery = pitr.recover(
                    self.run.set.store,
                    self.settings.archive_prefix,
                    self.settings.point_in_time,
                    keyring=self.run.set.keyring,
                    passphrase=self.run.set.passphrase,
                    workdir=self.run.ctx.scratch,
                    run_as=run_as,
                    owner=owner,
                    verifier=verifier,
                    trusted=trusted,
                )
            except ConfigurationError as exc:
                raise self._message(exc) from None
        return self.recovery

    def _record(
        self, recovery: pitr.RecoveryResult, targets: list[PgTarget], *, in_place: bool
    ) -> None:
        """Evidence: per database (as a dump restore's) and of the recovery."""
        self.run.evidence["postgres"] = {t.database: t.evidence for t in targets}
        self.run.evidence["pitr"] = {
            **self.run.evidence.get("pitr", {}),
            **pitr_evidence(
                self.settings, self.run.set.store.url(self.settings.archive_prefix), recovery.plan
            ),
            "fetchedBytes": recovery.fetched_bytes,
            "fetchSeconds": recovery.fetch_seconds,
            "replaySeconds": recovery.replay_seconds,
            "rows": sum(int(t.evidence.get("rows") or 0) for t in targets),
            **({"archiveAfter": ARCHIVE_AFTER} if in_place else {}),
        }
        for target in targets:
            for text in target.warnings:
                self.run.warn(text)
        if not in_place:
            self.run.result.components[NAME] = "Verified"

    def _catch_up(self) -> None:
        """In place to ``latest``: let the shipper ship what the stopped workloads last wrote."""
        started = datetime.now(UTC)
        store, prefix = self.run.set.store, self.settings.archive_prefix
        with self.run.phase("pitrCatchUp", NAME):
            reached, seen = wait_caught_up(lambda: caught_up_at(store, prefix), started)
        self.run.evidence["pitr"] = {
            **self.run.evidence.get("pitr", {}),
            "caughtUpAt": seen.isoformat() if seen else None,
        }
        if not reached:
            self.run.warn(
                f"the WAL shipper did not report the archive caught up with the server within "
                f"{CATCH_UP_SECONDS:.0f}s (last: {seen.isoformat() if seen else 'never'}): "
                "writes after that moment are not in this restore"
            )

    def _close_server(self) -> None:
        """Stop the scratch server and delete its data directory and WAL (idempotent)."""
        if self.recovery is not None:
            self.recovery.server.close()
            self.recovery = None

    def discard(self) -> None:
        self._close_server()
        super().discard()

    def close(self) -> None:
        self._close_server()
        super().close()


HOOKS: HooksFactory = PitrHooks
