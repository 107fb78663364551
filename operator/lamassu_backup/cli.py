"""The ``lamassu-backup`` command: CRD generation, and the runners that Jobs execute."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .models.runner import CONFIG_ENV, RestoreRunConfig, RunnerConfig, RunnerResult
from .runner import report
from .runner.context import RunnerContext

if TYPE_CHECKING:
    from .components.postgres.wal.settings import WalRunConfig

# Subcommands import their modules when they run: a runner Job starts faster (the CRD generator
# and the other runner's clients are not loaded), which counts in a measured recovery time.


def _cmd_crds(args: argparse.Namespace) -> int:
    from .builders import crd

    rendered = crd.render_all()
    if not args.out:
        sys.stdout.write("---\n".join(rendered.values()))
        return 0
    for out_dir in args.out:
        path = Path(out_dir)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("backup.lamassu.io_*.yaml"):
            if stale.name not in rendered:
                stale.unlink()
        for name, text in rendered.items():
            (path / name).write_text(text)
    return 0


def _config_text(path: str | None, env: str, command: str) -> str:
    """A runner's JSON configuration: ``--config FILE``, else the variable the Pod sets."""
    if path:
        return Path(path).read_text()
    text = os.environ.get(env, "")
    if not text:
        raise SystemExit(f"lamassu-backup {command}: no configuration (--config FILE or ${env})")
    return text


def _reported(run: Callable[[RunnerContext], tuple[RunnerResult, int]]) -> int:
    """Run one runner command in its own context; its result goes to the termination message."""
    ctx = RunnerContext()
    try:
        result, code = run(ctx)
        report.write(result, ctx.redactor)
        return code
    finally:
        ctx.close()


def _load_runner_config(args: argparse.Namespace) -> RunnerConfig:
    return RunnerConfig.model_validate_json(_config_text(args.config, CONFIG_ENV, "runner"))


def _cmd_runner_backup(args: argparse.Namespace) -> int:
    from .runner.backup import run as backup

    cfg = _load_runner_config(args)
    return _reported(
        lambda ctx: backup.run(
            cfg,
            ctx,
            components=args.component or None,
            commit=not args.no_commit,
            allow_partial=args.allow_partial,
        )
    )


def _cmd_runner_commit(args: argparse.Namespace) -> int:
    from .runner.backup import run as backup

    cfg = _load_runner_config(args)
    return _reported(
        lambda ctx: backup.run(
            cfg, ctx, components=[], commit=True, allow_partial=args.allow_partial
        )
    )


RESTORE_CONFIG_ENV = "LAMASSU_RESTORE_CONFIG"


def _cmd_runner_restore(args: argparse.Namespace) -> int:
    from .runner.restore import run as restore

    text = _config_text(args.config, RESTORE_CONFIG_ENV, "runner restore")
    cfg = RestoreRunConfig.model_validate_json(text)
    if args.step:
        cfg = cfg.model_copy(update={"step": args.step})
    if args.dry_run:
        cfg = cfg.model_copy(update={"dry_run": True})
    return _reported(lambda ctx: restore.run(cfg, ctx))


def _load_wal_config(args: argparse.Namespace) -> WalRunConfig:
    from .components.postgres.wal.settings import WAL_CONFIG_ENV, WalRunConfig

    text = _config_text(args.config, WAL_CONFIG_ENV, f"runner {args.runner_command}")
    return WalRunConfig.model_validate_json(text)


def _cmd_runner_wal_ship(args: argparse.Namespace) -> int:
    from .runner.wal import run as wal

    cfg = _load_wal_config(args)
    ctx = RunnerContext()
    try:
        return wal.ship(cfg, ctx)
    finally:
        ctx.close()


def _cmd_runner_base_backup(args: argparse.Namespace) -> int:
    from .runner.wal import run as wal

    cfg = _load_wal_config(args)
    if args.set_time:
        cfg = cfg.model_copy(update={"set_time": args.set_time})
    return _reported(lambda ctx: wal.base_backup(cfg, ctx))


def _cmd_runner_wal_drop_slot(args: argparse.Namespace) -> int:
    from .runner.wal import run as wal

    cfg = _load_wal_config(args)
    return _reported(lambda ctx: wal.drop_slot(cfg, ctx))


def _preflight_operator() -> str | None:
    """What would keep the operator from starting, as one line; None when it can start.

    kopf retries a failing startup handler every minute, forever and out of sight; checked here
    first, a bad setting, a taken metrics port or an unreachable API server ends the process with
    a non-zero code and the reason, which Kubernetes shows as CrashLoopBackOff.
    """
    from .clients.kube import load_config
    from .services import metrics
    from .services.common import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        return f"bad settings: {exc}"
    try:
        metrics.serve(settings.metrics_port)
    except OSError as exc:
        return f"cannot serve metrics on port {settings.metrics_port}: {exc.strerror or exc}"
    try:
        api = load_config()
        api.call_api(
            "/version/",
            "GET",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=10,
        )
    except Exception as exc:  # noqa: BLE001 - any failure here means no API access; say which
        status = getattr(exc, "status", None)
        detail = f"HTTP {status} {getattr(exc, 'reason', '')}".strip() if status else str(exc)
        return f"no access to the Kubernetes API: {type(exc).__name__}: {detail.splitlines()[0] if detail else ''}"
    return None


def _cmd_operator(args: argparse.Namespace) -> int:
    problem = _preflight_operator()
    if problem is not None:
        print(f"lamassu-backup operator: cannot start: {problem}", file=sys.stderr)
        return 1

    from .handlers import run

    run(args.namespace or [], args.health_port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="lamassu-backup",
        description="Backup and disaster recovery for Lamassu IoT on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    crds = sub.add_parser("crds", help="print the CustomResourceDefinitions (or write them)")
    crds.add_argument(
        "--out",
        action="append",
        metavar="DIR",
        help="write one file per CRD into DIR (repeatable) instead of printing",
    )
    crds.set_defaults(func=_cmd_crds)

    op = sub.add_parser("operator", help="run the operator (kubeconfig or in-cluster credentials)")
    op.add_argument("--namespace", action="append", help="watch only this namespace (repeatable)")
    op.add_argument(
        "--health-port", type=int, default=8081, help="liveness endpoint port (0: none)"
    )
    op.set_defaults(func=_cmd_operator)

    runner = sub.add_parser(
        "runner", help="what a backup or restore Job runs (configured by the operator)"
    )
    runner_sub = runner.add_subparsers(dest="runner_command", required=True)
    config_help = f"runner configuration JSON file (default: ${CONFIG_ENV})"

    bk = runner_sub.add_parser("backup", help="back up components into the set, then commit it")
    bk.add_argument("--config", metavar="FILE", help=config_help)
    bk.add_argument("--component", action="append", help="only this component (repeatable)")
    bk.add_argument("--no-commit", action="store_true", help="leave the manifest to a commit step")
    bk.add_argument(
        "--allow-partial", action="store_true", help="exit 0 when a partial set was committed"
    )
    bk.set_defaults(func=_cmd_runner_backup)

    cm = runner_sub.add_parser(
        "commit", help="write the set's manifest from its components' records"
    )
    cm.add_argument("--config", metavar="FILE", help=config_help)
    cm.add_argument(
        "--allow-partial", action="store_true", help="exit 0 when a partial set was committed"
    )
    cm.set_defaults(func=_cmd_runner_commit)

    rs = runner_sub.add_parser(
        "restore",
        help="verify a set, then restore it in place (scratch copy, validate, swap) or drill it",
        description="Exit codes: 0 success; 1 failed, nothing live changed (or all rolled "
        "back); 3 failed after live changes that could not all be rolled back.",
    )
    rs.add_argument(
        "--config",
        metavar="FILE",
        help=f"restore configuration JSON file (default: ${RESTORE_CONFIG_ENV})",
    )
    rs.add_argument(
        "--step",
        choices=["plan", "restore", "finalize", "rollback"],
        help="override the configured step",
    )
    rs.add_argument("--dry-run", action="store_true", help="verify and plan only; change nothing")
    rs.set_defaults(func=_cmd_runner_restore)

    wal_help = "WAL runner configuration JSON file (default: $LAMASSU_WAL_CONFIG)"
    ws = runner_sub.add_parser(
        "wal-ship",
        help="ship WAL continuously (pg_receivewal, encrypted, to the bucket) until SIGTERM",
        description="Long-running: what the operator's WAL shipper Deployment runs. Exit codes: "
        "0 stopped by SIGTERM/SIGINT after shipping what was received; 1 could not start.",
    )
    ws.add_argument("--config", metavar="FILE", help=wal_help)
    ws.set_defaults(func=_cmd_runner_wal_ship)

    bb = runner_sub.add_parser(
        "base-backup",
        help="take one base backup (pg_basebackup, streamed, encrypted) into basebackups/",
        description="Exit codes: 0 the base backup and its manifest are stored; 1 failed (no "
        "manifest: the set is incomplete by definition).",
    )
    bb.add_argument("--config", metavar="FILE", help=wal_help)
    bb.add_argument("--set-time", metavar="TIME", help="the set folder (default: now)")
    bb.set_defaults(func=_cmd_runner_base_backup)

    ds = runner_sub.add_parser(
        "wal-drop-slot",
        help="drop the shipper's physical replication slot (once the shipper is gone)",
        description="What the operator runs when walArchiving is turned off or its policy is "
        "deleted. Only a physical slot of the configured name is dropped, once no process uses "
        "it. Exit codes: 0 dropped, already absent, or not physical (left alone); 1 failed.",
    )
    ds.add_argument("--config", metavar="FILE", help=wal_help)
    ds.set_defaults(func=_cmd_runner_wal_drop_slot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lamassu-backup`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
