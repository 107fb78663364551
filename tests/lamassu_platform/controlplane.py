"""A real Kubernetes control plane for the tests: etcd + kube-apiserver + kube-controller-manager.

Why: there is no Docker here (so no kind), and envtest cannot download its binaries. The Go module
in ``tests/controlplane`` builds all three into one binary from ``k8s.io/kubernetes`` (see
``scripts/build-controlplane.sh``); this class builds it if needed (cached outside the checkout),
runs it in its own process group on loopback ports, and waits for its ``ready`` marker, which it
writes once ``/readyz`` is ok and the Job, garbage-collector, namespace and service-account
controllers run. RBAC is on; the admin kubeconfig authenticates as ``system:masters``.

Nothing runs Pods: pair it with :class:`lamassu_platform.podrunner.PodRunner`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from ._util import REPO_ROOT, free_port, stop_process

BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-controlplane.sh"

# A cold build of k8s.io/kubernetes takes 10-20 minutes on two cores.
BUILD_TIMEOUT = 45 * 60.0
START_TIMEOUT = 180.0


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or did not become ready."""


def build_binary(*, timeout: float = BUILD_TIMEOUT) -> Path:
    """Run the build script (a no-op when the cached binary exists) and return the binary's path."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(
            f"{BUILD_SCRIPT.name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    binary = Path(lines[-1])
    if not os.access(binary, os.X_OK):
        raise ControlPlaneError(f"{BUILD_SCRIPT.name} printed {binary}, which is not executable")
    return binary


class ControlPlane:
    """One control plane in ``data_dir``: ``start()``, ``kubeconfig``, ``server``, ``stop()``.

    The data directory keeps certificates and etcd data, so a stopped control plane can be
    started again with its objects intact (on new ports unless ``secure_port`` is given).
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        binary: Path | str | None = None,
        secure_port: int | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.binary = Path(binary) if binary is not None else None
        self.secure_port = secure_port
        self.start_timeout = start_timeout
        self.log_file = self.data_dir / "controlplane.log"
        self.ready_file = self.data_dir / "ready"
        self._proc: subprocess.Popen[bytes] | None = None
        self._server: str | None = None
        self.startup_seconds: float | None = None
        self.returncode: int | None = None  # of the last stopped process: 0 is a clean stop

    # ------------------------------------------------------------------------- properties
    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (client certificate in group ``system:masters``; embedded certs)."""
        return self.data_dir / "kubeconfig"

    @property
    def server(self) -> str:
        """The apiserver URL, e.g. ``https://127.0.0.1:40123``."""
        if self._server is None:
            raise ControlPlaneError("the control plane is not started")
        return self._server

    @property
    def port(self) -> int:
        """The apiserver's port (what in-cluster clients get as ``KUBERNETES_SERVICE_PORT``)."""
        return int(self.server.rsplit(":", 1)[1])

    @property
    def ca_file(self) -> Path:
        """The CA that signed the serving certificate (and the client certificates)."""
        return self.data_dir / "pki" / "ca.crt"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    # -------------------------------------------------------------------------- lifecycle
    def start(self) -> ControlPlane:
        """Build (or reuse) the binary, launch it, and wait until it reports ready."""
        if self.running:
            return self
        if self.binary is None:
            self.binary = build_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.ready_file.unlink(missing_ok=True)
        port = self.secure_port or free_port()
        argv = [
            str(self.binary),
            *("--data-dir", str(self.data_dir)),
            *("--secure-port", str(port)),
            "--exit-with-parent",  # a killed test run must not leave a control plane behind
        ]
        began = time.monotonic()
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # own process group: stop() signals all of it
            )
        proc = self._proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise ControlPlaneError(f"kube-controlplane exited with {proc.returncode}")
            return self.ready_file.exists()

        try:
            self._wait(ready)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self._server = self.ready_file.read_text().strip()
        return self

    def _wait(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except ControlPlaneError as exc:
                raise ControlPlaneError(f"{exc}\n{self.log_tail()}") from None
            time.sleep(0.1)
        raise ControlPlaneError(
            f"kube-controlplane not ready within {self.start_timeout:.0f}s\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """SIGTERM (etcd closes cleanly), then SIGKILL if needed: no process is left behind."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, timeout=45)
            self.returncode = proc.returncode
        self._server = None

    def restart(self, down: float = 0.0, *, kill: bool = False) -> float:
        """Stop and start again on the same port with the same data directory: etcd's data and
        every object are kept, and clients (the operator in its Pod, the pod runner) reconnect
        to the same URL, as after an apiserver restart on a real control plane. ``kill``:
        SIGKILL instead of a graceful stop (a crash; seconds instead of the apiserver's
        shutdown, and etcd loses nothing the kernel was given). Returns the seconds the API was
        unreachable."""
        port, saved = self.port, self.secure_port
        began = time.monotonic()
        if kill and self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=30)
        self.stop()
        time.sleep(down)
        self.secure_port = port
        try:
            self.start()
        finally:
            self.secure_port = saved
        return time.monotonic() - began

    def log_tail(self, lines: int = 40) -> str:
        """The end of ``controlplane.log``, for error messages."""
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no control plane log)"
        return "control plane log tail:\n" + "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
