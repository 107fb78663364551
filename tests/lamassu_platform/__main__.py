"""``python -m lamassu_platform up|down|status``: the local platform in the background.

``up`` starts a supervisor process (``serve``) in its own session, waits until every service is
ready and the files in the state directory are written, and returns. ``down`` asks the supervisor
to stop, waits, and checks that no process of the platform is left.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from .stack import Platform, platform_pids

READY = "ready"
FAILED = "failed"
PIDFILE = "platform.pid"


def _serve(state: Path, data_mib: int) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Every Pod from its image (the demo's backup Jobs and the operator): runc, unless
    # LAMASSU_POD_RUNTIME=host asks for the host-process debugging mode.
    # The real Lamassu (all six services) protects the demo's data, unless LAMASSU_PLATFORM_REAL=0.
    platform = Platform(
        state / "run",
        data_mib=data_mib,
        pod_runtime=os.environ.get("LAMASSU_POD_RUNTIME", "runc"),
        lamassu=os.environ.get("LAMASSU_PLATFORM_REAL", "1") == "1",
    )
    try:
        platform.start()
        platform.write_files(state)
        (state / "pod-runtime").write_text(platform.pod_runtime + "\n")
    except BaseException as exc:
        (state / FAILED).write_text(f"{type(exc).__name__}: {exc}\n")
        raise
    (state / READY).write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + "\n")
    print("platform ready", flush=True)
    try:
        stop.wait()
    finally:
        print("platform stopping", flush=True)
        platform.stop()
        (state / READY).unlink(missing_ok=True)
    return 0


def _up(state: Path, data_mib: int, timeout: float) -> int:
    state.mkdir(parents=True, exist_ok=True)
    pidfile = state / PIDFILE
    if pidfile.exists() and _alive(int(pidfile.read_text())):
        pid = pidfile.read_text().strip()
        if (state / READY).exists():
            print(f"the platform is already running (pid {pid}); `make platform-down` stops it")
            return 0
        print(f"the platform is starting or broken (pid {pid}); run `make platform-down` first")
        return 1
    for name in (READY, FAILED):
        (state / name).unlink(missing_ok=True)
    # Every `up` starts from nothing: data of an earlier platform (OpenBao's raft, etcd) would
    # belong to services that no longer exist.
    shutil.rmtree(state / "run", ignore_errors=True)
    log = (state / "platform.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lamassu_platform",
            "serve",
            "--state",
            str(state),
            "--data-mib",
            str(data_mib),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=os.environ.copy(),
    )
    pidfile.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (state / READY).exists():
            print(f"platform ready: . {state}/env; kubectl --kubeconfig {state}/kubeconfig get ns")
            return 0
        if (state / FAILED).exists() or proc.poll() is not None:
            print(
                f"the platform failed to start: {(state / FAILED).read_text().strip() if (state / FAILED).exists() else ''}"
            )
            print(f"see {state}/platform.log")
            _down(state, 60)
            return 1
        time.sleep(0.5)
    print(f"the platform did not become ready in {timeout:.0f}s; see {state}/platform.log")
    _down(state, 60)
    return 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _down(state: Path, timeout: float) -> int:
    operator_pid = state / "operator.pid"  # started by `make demo`
    if operator_pid.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            pid = int(operator_pid.read_text())
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        operator_pid.unlink(missing_ok=True)
    pidfile = state / PIDFILE
    session: int | None = None
    if pidfile.exists():
        pid = session = int(pidfile.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)
    leftovers = platform_pids(state, session)
    for pid in leftovers:
        print(f"killing leftover process {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    remaining = platform_pids(state, session)
    if remaining:
        print(f"processes still running after platform-down: {remaining}")
        return 1
    print("platform stopped; no process left")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lamassu_platform")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("up", "serve", "down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--state", type=Path, default=Path(".platform"))
        p.add_argument(
            "--data-mib", type=int, default=int(os.environ.get("LAMASSU_PLATFORM_DATA_MIB", "20"))
        )
        p.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    state = args.state.resolve()
    if args.cmd == "up":
        return _up(state, args.data_mib, args.timeout)
    if args.cmd == "serve":
        return _serve(state, args.data_mib)
    if args.cmd == "down":
        return _down(state, 60)
    running = (state / PIDFILE).exists() and _alive(int((state / PIDFILE).read_text()))
    print("running" if running and (state / READY).exists() else "not running")
    return 0 if running else 1


if __name__ == "__main__":
    raise SystemExit(main())
