"""The ``lamassu-backup`` command: CRD generation; runners and the operator join as they land."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .builders import crd


def _cmd_crds(args: argparse.Namespace) -> int:
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lamassu-backup`` console script."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
