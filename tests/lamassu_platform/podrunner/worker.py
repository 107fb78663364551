"""The pod worker: runs one Pod from volume setup to its terminal status, in its own thread.

Why apart: the life of one Pod (init containers, restarts per restartPolicy, deadlines, graceful
deletion, status reports) and the two ways to start a container: from its image through ``runc``,
or (``host_processes``) as a host process in a private mount namespace. What goes into a
container (env, volumes, tokens) is :mod:`.projection`; what runc is handed is :mod:`.runtime`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from ..images import Image
from .api import JSON, delete_now, pod_path, rfc3339_now
from .errors import ConfigError, PodFailedError
from .projection import BASE_PATH, PodProjection, expand
from .runtime import PDEATHSIG, container_user, in_rootfs, mount_script, normalize_ref, oci_spec

if TYPE_CHECKING:
    from .runner import PodRunner

log = logging.getLogger("lamassu_platform.podrunner")

TERMINATION_MESSAGE_LIMIT = 4096  # bytes kept from terminationMessagePath, as the kubelet does
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: the kubelet's tail of the log ...
FALLBACK_LOG_BYTES = 2048  # ... capped at this many bytes
DEFAULT_GRACE_SECONDS = 30.0
POLL_INTERVAL = 0.05
START_ERROR_EXIT_CODE = 128  # what a runtime reports when the process could not be started


def _exit_code(returncode: int) -> int:
    """Popen reports a signal as a negative number; containers report 128 + the signal."""
    return 128 - returncode if returncode < 0 else returncode


class _DeletionRequestedError(Exception):
    """The Pod is being deleted: stop what we are doing and finalize it."""


class _AbandonedError(Exception):
    """The Pod is gone or the runner stops: kill the processes and make no more API calls."""


class _InitFailedError(Exception):
    """An init container failed for good: the Pod's status is already final."""


class Container:
    """Runtime state of one container of a Pod, and how it is reported."""

    def __init__(self, spec: JSON, init: bool) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.proc: subprocess.Popen[bytes] | None = None
        self.restart_count = 0
        self.state: JSON = {"waiting": {"reason": "PodInitializing"}}
        self.last_state: JSON = {}
        self.started_at = ""
        self.term_file: Path | None = None
        self.log_offset = 0
        self.done = False  # terminated for good (no restart will follow)
        self.start_error = ""  # why the command could not be started, if it could not
        self.group_cleared = False  # the process group of ``proc`` has been killed and reaped
        self.image: Image | None = None  # resolved from spec.image (runc mode)
        self.cid = ""  # runc container id of the current start
        self.rootfs: Path | None = None  # the overlay mounted for the current start

    def status(self) -> JSON:
        running = "running" in self.state
        return {
            "name": self.name,
            "image": self.spec.get("image") or "",
            "imageID": self.image.digest if self.image else "",
            "containerID": f"runc://{self.cid}"
            if self.cid
            else f"podrunner://{self.name}-{self.restart_count}",
            "ready": running and not self.init,
            "started": running,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }


class PodWorker(PodProjection):
    """Runs one Pod from volume setup to its terminal status, in its own thread."""

    def __init__(self, runner: PodRunner, pod: JSON) -> None:
        meta = pod["metadata"]
        self._thread = threading.Thread(
            target=self.run, name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True
        )
        self.runner = runner
        self.pod = pod
        self.meta: JSON = meta
        self.spec: JSON = pod.get("spec") or {}
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.key = f"{self.namespace}/{self.pod_name}"
        self.dir = runner.state_dir / "pods" / self.uid
        self.volumes: dict[str, tuple[Path, bool]] = {}  # name -> (host path, read-only)
        self.init_containers = [Container(c, True) for c in self.spec.get("initContainers") or []]
        self.containers = [Container(c, False) for c in self.spec.get("containers") or []]
        self.restart_policy: str = self.spec.get("restartPolicy") or "Always"
        if not self.init_containers:
            for c in self.containers:
                c.state = {"waiting": {"reason": "ContainerCreating"}}
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.start_time = rfc3339_now()
        self.initialized = not self.init_containers
        self.transitions: dict[str, tuple[str, str]] = {}  # condition -> (status, time)
        self._delete = threading.Event()
        self._abandon = threading.Event()
        self._grace = DEFAULT_GRACE_SECONDS

    # ----------------------------------------------------------------- control from outside
    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def request_delete(self, pod: JSON) -> None:
        """Graceful deletion: SIGTERM, the Pod's grace period, SIGKILL, terminal status, DELETE."""
        grace = pod["metadata"].get("deletionGracePeriodSeconds")
        self._grace = float(grace) if grace is not None else DEFAULT_GRACE_SECONDS
        self.pod = pod
        self._delete.set()

    def abandon(self) -> None:
        """Kill at once and make no more API calls (the Pod is gone, or the runner stops)."""
        self._abandon.set()
        self._kill_all(signal.SIGKILL)

    def _check(self) -> None:
        if self._abandon.is_set() or self.runner._stopping.is_set():
            raise _AbandonedError
        if self._delete.is_set():
            raise _DeletionRequestedError

    # -------------------------------------------------------------------------------- run
    def run(self) -> None:
        try:
            try:
                self._run()
            except _DeletionRequestedError:
                self._terminate_for_deletion()
            except PodFailedError as exc:
                self._kill_all(signal.SIGKILL)
                self._fail(exc.reason, exc.message)
            except (_AbandonedError, _InitFailedError):
                pass
            except Exception as exc:
                log.exception("pod %s: the runner failed", self.key)
                self._kill_all(signal.SIGKILL)
                self._fail("PodRunnerError", f"{type(exc).__name__}: {exc}")
        except _AbandonedError:
            pass
        except Exception:
            log.exception("pod %s: reporting the final status failed", self.key)
        finally:
            self._kill_all(signal.SIGKILL)
            for c in self.init_containers + self.containers:
                self._cleanup_runc(c)  # an abandoned container never reached _finish
            shutil.rmtree(self.dir, ignore_errors=True)  # volumes hold secrets and tokens
            stopping = self._abandon.is_set() or self.runner._stopping.is_set()
            if self._delete.is_set() and not stopping:
                self._delete_pod()
            self.runner._forget(self.uid, finalized=self._delete.is_set())

    def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for c in self.init_containers:
            if c.spec.get("restartPolicy") == "Always":
                raise ConfigError(
                    "Unsupported", f"sidecar init container {c.name!r} is not supported"
                )
        for c in self.init_containers + self.containers:
            if self.runner.host_processes and not c.spec.get("command"):
                raise ConfigError(
                    "Unsupported",
                    f"container {c.name!r} has no command: in host-process mode the pod runner "
                    "ignores images, so every container needs an explicit command",
                )
        if not self.runner.host_processes:
            self._pull_images()
        self._retry_config(self._prepare_volumes)
        self._report()
        for c in self.init_containers:
            self._run_init(c)
        self.initialized = True
        envs = {c.name: self._env_with_retry(c) for c in self.containers}
        for c in self.containers:
            self._start(c, envs[c.name])
        self.phase = "Running"
        self._report()
        self._supervise(envs)

    def _pull_images(self) -> None:
        """Resolve each container's image; one not built locally waits as ErrImageNeverPull.

        A kubelet keeps such a Pod Pending (retrying the pull) until it is deleted; so does this.
        """
        missing = []
        for c in self.init_containers + self.containers:
            ref = str(c.spec.get("image") or "")
            c.image = self.runner.images.get(ref) or self.runner.images.get(normalize_ref(ref))
            if c.image is None:
                missing.append(c)
        if not missing:
            return
        for c in missing:
            ref = c.spec.get("image") or ""
            c.state = {
                "waiting": {
                    "reason": "ErrImageNeverPull",
                    "message": f'Container image "{ref}" is not present with pull policy of Never',
                }
            }
        log.info(
            "pod %s: image(s) not present: %s", self.key, [c.spec.get("image") for c in missing]
        )
        self._report()
        while True:
            self._check()
            time.sleep(0.2)

    def _env_with_retry(self, c: Container) -> dict[str, str]:
        env: dict[str, str] = self._retry_config(lambda: self._container_env(c))
        return env

    def _retry_config(self, step: Callable[[], Any]) -> Any:
        """Retry a step that fails on missing objects until ``config_timeout`` runs out."""
        deadline = time.monotonic() + self.runner.config_timeout
        reported = ""
        while True:
            self._check()
            try:
                return step()
            except ConfigError as exc:
                if time.monotonic() >= deadline or exc.reason == "Unsupported":
                    raise
                if exc.message != reported:
                    reported = exc.message
                    for c in self.containers:
                        if "waiting" in c.state:
                            c.state = {"waiting": {"reason": exc.reason, "message": exc.message}}
                    self._report()
                time.sleep(0.5)

    def _run_init(self, c: Container) -> None:
        """Init containers run one by one, each to success; a failure fails the Pod (Never)."""
        while True:
            env = self._env_with_retry(c)
            self._start(c, env)
            self._report()
            while c.proc is not None and c.proc.poll() is None:
                self._check()
                self._check_deadline()
                time.sleep(POLL_INTERVAL)
            self._finish(c)
            code = c.state["terminated"]["exitCode"]
            if code == 0:
                c.done = True
                self._report()
                return
            if self.restart_policy == "Never":
                c.done = True
                self.phase = "Failed"
                self._report()
                raise _InitFailedError
            self._report()
            self._sleep_backoff()
            self._restart(c)

    def _supervise(self, envs: Mapping[str, dict[str, str]]) -> None:
        """Wait for the containers; restart per restartPolicy; end with Succeeded or Failed."""
        while True:
            self._check()
            self._check_deadline()
            changed = False
            for c in self.containers:
                if c.done or c.proc is None or c.proc.poll() is None:
                    continue
                self._finish(c)
                changed = True
                code = c.state["terminated"]["exitCode"]
                restart = self.restart_policy == "Always" or (
                    self.restart_policy == "OnFailure" and code != 0
                )
                if not restart:
                    c.done = True
            if changed:
                self._report()
                for c in self.containers:
                    if not c.done and "terminated" in c.state:
                        self._sleep_backoff()
                        self._restart(c)
                        self._start(c, envs[c.name])
                        self._report()
            if all(c.done for c in self.containers):
                codes = [c.state["terminated"]["exitCode"] for c in self.containers]
                self.phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
                self._report()
                return
            time.sleep(POLL_INTERVAL)

    def _sleep_backoff(self) -> None:
        end = time.monotonic() + self.runner.restart_backoff
        while time.monotonic() < end:
            self._check()
            time.sleep(POLL_INTERVAL)

    def _restart(self, c: Container) -> None:
        c.last_state = c.state
        c.state = {"waiting": {"reason": "CrashLoopBackOff"}}
        c.restart_count += 1

    def _check_deadline(self) -> None:
        limit = self.spec.get("activeDeadlineSeconds")
        if limit is None:
            return
        started = datetime.strptime(self.start_time, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if (datetime.now(UTC) - started).total_seconds() > float(limit):
            self._kill_all(signal.SIGKILL)
            raise PodFailedError(
                "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
            )

    # -------------------------------------------------------------------- deletion / failure
    def _terminate_for_deletion(self) -> None:
        """SIGTERM every process group, wait the grace period, SIGKILL, report Failed."""
        self._kill_all(signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        while time.monotonic() < deadline and self._any_running():
            if self._abandon.is_set() or self.runner._stopping.is_set():
                break
            time.sleep(POLL_INTERVAL)
        self._kill_all(signal.SIGKILL)
        if self._abandon.is_set() or self.runner._stopping.is_set():
            return
        for c in self.init_containers + self.containers:
            if c.proc is not None and "running" in c.state:
                c.proc.wait(timeout=10)
                self._finish(c)
            c.done = True
        all_ok = all(c.state.get("terminated", {}).get("exitCode") == 0 for c in self.containers)
        self.phase = "Succeeded" if all_ok else "Failed"
        self._report()

    def _fail(self, reason: str, message: str) -> None:
        if self._abandon.is_set() or self.runner._stopping.is_set():
            return
        for c in self.init_containers + self.containers:
            if c.proc is not None and "running" in c.state:
                c.proc.wait(timeout=10)
                self._finish(c)
            elif "terminated" not in c.state:
                c.state = {"waiting": {"reason": reason, "message": message}}
        self.phase, self.reason, self.message = "Failed", reason, message
        self._report()

    def _delete_pod(self) -> None:
        try:
            delete_now(self.runner.api, self.pod)
        except Exception:
            log.exception("pod %s: final delete failed", self.key)

    def _any_running(self) -> bool:
        return any(
            c.proc is not None and c.proc.poll() is None
            for c in self.init_containers + self.containers
        )

    def _kill_all(self, sig: signal.Signals) -> None:
        for c in self.init_containers + self.containers:
            proc = c.proc
            # A group cleared in _finish is never signalled again: its id may belong to another.
            if proc is None or c.group_cleared:
                continue
            if c.cid:
                # Signal the container (its pid 1) through runc: killing runc would leave it.
                self._runc("kill", c.cid, str(int(sig)))
                if sig == signal.SIGKILL:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            if sig == signal.SIGKILL:
                try:
                    proc.wait(timeout=5)
                    c.group_cleared = True
                except subprocess.TimeoutExpired:
                    log.warning("pod %s: container %s did not die", self.key, c.name)

    # ------------------------------------------------------------------------- containers
    def _start(self, c: Container, env: dict[str, str]) -> None:
        """Start the container: from its image through runc, or (opt-in) as a host process."""
        if not self.runner.host_processes:
            self._start_runc(c, env)
            return
        spec = c.spec
        command = [expand(a, env) for a in spec.get("command") or []]
        command += [expand(a, env) for a in spec.get("args") or []]
        cdir = self.dir / "containers" / c.name
        cdir.mkdir(parents=True, exist_ok=True)
        c.term_file = cdir / f"termination-{c.restart_count}"
        c.term_file.write_bytes(b"")
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        mounts: list[tuple[Path, str, bool]] = [(c.term_file, term_path, False)]
        for vm in spec.get("volumeMounts") or []:
            mounts.append(self._mount_source(vm, env))
        # Without a workingDir an image would pick one; a scratch folder keeps "/" clean.
        workdir = spec.get("workingDir") or str(cdir / "work")
        script = mount_script(mounts, workdir)
        log_path = self.runner.log_path(self.namespace, self.pod_name, c.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        c.log_offset = log_path.stat().st_size if log_path.exists() else 0
        c.start_error = ""
        if "/" not in command[0] and shutil.which(command[0], path=env["PATH"]) is None:
            # What a runtime reports; the process below only writes it to the log and exits 128.
            c.start_error = f'exec: "{command[0]}": executable file not found in $PATH'
            script = f'echo "$0" >&2; exit {START_ERROR_EXIT_CODE}'
            argv = ["/bin/sh", "-c", script, c.start_error]
        else:
            argv = [
                *PDEATHSIG,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                script,
                "podrunner-init",
                *command,
            ]
        with open(log_path, "ab") as logf:
            c.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,  # its own process group: one killpg reaches all of it
            )
        c.group_cleared = False
        c.started_at = rfc3339_now()
        c.state = {"running": {"startedAt": c.started_at}}
        log.info("pod %s: started container %s (pid %d)", self.key, c.name, c.proc.pid)

    # ---------------------------------------------------------------------------- runc mode
    def _runc(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["runc", "--root", str(self.runner.runc_root), *args],
            capture_output=True,
            check=False,
            timeout=30,
        )

    def _start_runc(self, c: Container, env: dict[str, str]) -> None:  # noqa: PLR0912 - one step per kubelet rule
        """Start the container from its image: an overlay root, an OCI spec, ``runc run``."""
        image = c.image
        assert image is not None
        spec = c.spec
        pod_sc = self.spec.get("securityContext") or {}
        sc = {**pod_sc, **(spec.get("securityContext") or {})}
        uid, gid = container_user(image, sc)
        if sc.get("runAsNonRoot"):
            if uid is None:
                raise ConfigError(
                    "CreateContainerConfigError",
                    f"container has runAsNonRoot and image has non-numeric user ({image.user}), "
                    "cannot verify user is non-root",
                )
            if uid == 0:
                raise ConfigError(
                    "CreateContainerConfigError",
                    "container has runAsNonRoot and image will run as root "
                    f'(pod: "{self.pod_name}_{self.namespace}({self.uid})", container: {c.name})',
                )
        if uid is None:
            raise ConfigError(
                "CreateContainerConfigError",
                f"image user {image.user!r} is not numeric; the pod runner needs a uid",
            )
        # command replaces the entrypoint (and drops the image's cmd); args replaces cmd.
        if spec.get("command"):
            argv = [expand(a, env) for a in spec["command"]] + [
                expand(a, env) for a in spec.get("args") or []
            ]
        else:
            args = spec.get("args")
            argv = image.entrypoint + (
                [expand(a, env) for a in args] if args is not None else image.cmd
            )
        if not argv:
            raise ConfigError("CreateContainerConfigError", "no command specified")
        cdir = self.dir / "containers" / c.name
        run_dir = cdir / str(c.restart_count)
        shutil.rmtree(run_dir, ignore_errors=True)
        for sub in ("upper", "work", "rootfs"):
            (run_dir / sub).mkdir(parents=True)
        c.term_file = run_dir / "termination-log"
        c.term_file.write_bytes(b"")
        os.chmod(c.term_file, 0o666)  # noqa: S103 - the container's user writes its message here
        term_path = spec.get("terminationMessagePath") or "/dev/termination-log"
        mounts: list[tuple[Path, str, bool]] = [(c.term_file, term_path, False)]
        for vm in spec.get("volumeMounts") or []:
            mounts.append(self._mount_source(vm, env))
        hostname = run_dir / "hostname"
        hostname.write_text(self.pod_name + "\n")
        for src, target in (
            (Path("/etc/hosts"), "/etc/hosts"),
            (Path("/etc/resolv.conf"), "/etc/resolv.conf"),
            (hostname, "/etc/hostname"),
        ):
            if src.exists() and not any(m[1] == target for m in mounts):
                mounts.append((src.resolve(), target, True))
        # The shared image root stays untouched: each start writes to its own overlay upper
        # directory (a read-only root is then enforced by runc on top).
        lower, rootfs = image.rootfs, run_dir / "rootfs"
        opts = f"lowerdir={lower},upperdir={run_dir / 'upper'},workdir={run_dir / 'work'}"
        mount = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", opts, str(rootfs)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mount.returncode != 0:
            raise PodFailedError("CreateContainerError", f"overlay mount: {mount.stderr.strip()}")
        c.rootfs = rootfs
        workdir = spec.get("workingDir") or image.workdir or "/"
        c.start_error = ""
        if not in_rootfs(rootfs, argv[0], env.get("PATH", BASE_PATH)):
            c.start_error = (
                f'exec: "{argv[0]}": executable file not found in $PATH'
                if "/" not in argv[0]
                else f'exec: "{argv[0]}": stat {argv[0]}: no such file or directory'
            )
        groups = sorted(
            {int(g) for g in pod_sc.get("supplementalGroups") or []}
            | ({int(pod_sc["fsGroup"])} if pod_sc.get("fsGroup") is not None else set())
        )
        oci = oci_spec(
            rootfs=rootfs,
            argv=argv,
            env=env,
            cwd=workdir,
            uid=uid,
            gid=gid,
            groups=groups,
            sc=sc,
            hostname=self.pod_name,
            mounts=mounts,
            seccomp=self.runner.seccomp,
        )
        (run_dir / "config.json").write_text(json.dumps(oci, indent=1))
        c.cid = f"{self.uid[:13]}-{c.name}-{c.restart_count}"[:64]
        log_path = self.runner.log_path(self.namespace, self.pod_name, c.name)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        c.log_offset = log_path.stat().st_size if log_path.exists() else 0
        if c.start_error:
            argv_host = [
                "/bin/sh",
                "-c",
                f'echo "$0" >&2; exit {START_ERROR_EXIT_CODE}',
                c.start_error,
            ]
            c.cid = ""
        else:
            argv_host = [
                *PDEATHSIG,
                "runc",
                "--root",
                str(self.runner.runc_root),
                "run",
                "--bundle",
                str(run_dir),
                c.cid,
            ]
        with open(log_path, "ab") as logf:
            c.proc = subprocess.Popen(
                argv_host,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
            )
        c.group_cleared = False
        c.started_at = rfc3339_now()
        c.state = {"running": {"startedAt": c.started_at}}
        log.info(
            "pod %s: started container %s from %s (runc %s)", self.key, c.name, image.ref, c.cid
        )

    def _cleanup_runc(self, c: Container) -> None:
        """Remove the runc container (if runc left it) and unmount its overlay root."""
        if c.cid:
            self._runc("delete", "--force", c.cid)
        if c.rootfs is not None:
            subprocess.run(["umount", "-l", str(c.rootfs)], capture_output=True, check=False)
            c.rootfs = None

    def _finish(self, c: Container) -> None:
        """Record a container's exit: code, Completed/Error, termination message, times."""
        assert c.proc is not None
        returncode = c.proc.wait()
        # Whatever the command left behind in its process group goes with it, as with a cgroup.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(c.proc.pid, signal.SIGKILL)
        c.group_cleared = True
        self._cleanup_runc(c)
        code = _exit_code(returncode)
        message = ""
        if c.term_file is not None and c.term_file.exists():
            data = c.term_file.read_bytes()
            message = data[-TERMINATION_MESSAGE_LIMIT:].decode("utf-8", errors="replace")
        policy = c.spec.get("terminationMessagePolicy") or "File"
        if not message and code != 0 and policy == "FallbackToLogsOnError":
            message = self._log_tail(c)
        if c.start_error:
            message = c.start_error
        terminated: JSON = {
            "exitCode": code,
            "reason": "StartError" if c.start_error else "Completed" if code == 0 else "Error",
            "startedAt": c.started_at,
            "finishedAt": rfc3339_now(),
            "containerID": f"podrunner://{c.name}-{c.restart_count}",
        }
        if returncode < 0:
            terminated["signal"] = -returncode
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        log.info("pod %s: container %s exited with %d", self.key, c.name, code)

    def _log_tail(self, c: Container) -> str:
        path = self.runner.log_path(self.namespace, self.pod_name, c.name)
        try:
            with open(path, "rb") as fh:
                fh.seek(c.log_offset)
                data = fh.read()
        except OSError:
            return ""
        lines = data.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode("utf-8", errors="replace")

    # ----------------------------------------------------------------------------- status
    def _condition(self, ctype: str, ok: bool, reason: str = "") -> JSON:
        status = "True" if ok else "False"
        prev = self.transitions.get(ctype)
        if prev is None or prev[0] != status:
            prev = (status, rfc3339_now())
            self.transitions[ctype] = prev
        cond: JSON = {
            "type": ctype,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": prev[1],
        }
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def _report(self) -> None:
        """Replace the Pod's status (merge patch: lists are replaced whole, so no stale state)."""
        if self._abandon.is_set() or self.runner._stopping.is_set():
            return
        terminal = self.phase in ("Succeeded", "Failed")
        running = all("running" in c.state for c in self.containers) and not terminal
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        status: JSON = {
            "phase": self.phase,
            "conditions": [
                self._condition("PodReadyToStartContainers", not terminal),
                self._condition("Initialized", self.initialized, "ContainersNotInitialized"),
                self._condition("Ready", running, not_ready),
                self._condition("ContainersReady", running, not_ready),
                self._condition("PodScheduled", True),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.reason:
            status["reason"] = self.reason
            status["message"] = self.message
        try:
            self.runner.api.request(
                "PATCH",
                pod_path(self.namespace, self.pod_name, "/status"),
                body={"metadata": {"uid": self.uid}, "status": status},
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # the Pod is gone (or replaced): stop here
                raise _AbandonedError from None
            raise
