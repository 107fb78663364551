"""A pod runner: the kubelet's part for the test control plane, running containers from images.

Run on its own: ``python -m lamassu_platform.podrunner --kubeconfig K --state-dir D``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from .runner import DEFAULT_NODE_NAME, PodRunner

log = logging.getLogger("lamassu_platform.podrunner")


def main(argv: list[str] | None = None) -> int:
    """Run a pod runner in the foreground until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--node-name", default=DEFAULT_NODE_NAME)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    runner = PodRunner(args.kubeconfig, args.state_dir, node_name=args.node_name)
    runner.start()
    log.info("pod runner ready: node %s, state in %s", runner.node_name, runner.state_dir)
    try:
        done.wait()
    finally:
        runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
