"""A pod runner: the kubelet's part for the test control plane, running containers from images.

Why: the control plane in :mod:`lamassu_platform.controlplane` has no kubelet and there is no
container engine here, yet the operator's backup and restore Jobs must really run, fail, retry
and report, with the real Job controller judging them. This runner registers a Ready Node, binds
pending Pods to it and runs each container **from its image** through ``runc`` (an OCI runtime;
root, the host's network namespace): the image's root filesystem (unpacked by
``scripts/build-images.sh``, see :mod:`lamassu_platform.images`) under a per-container overlay,
its entrypoint/cmd/env/workdir/user, and the Pod's securityContext as a kubelet applies it
(runAsUser/runAsGroup/fsGroup, runAsNonRoot refused as ``CreateContainerConfigError``,
readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation as no_new_privs, seccomp
RuntimeDefault). Volumes are bind mounts. An image that was not built locally leaves the
container waiting in ``ErrImageNeverPull``, as a kubelet with no registry would.

``host_processes=True`` is the debugging opt-in of the earlier design: the image is ignored and
``command`` + ``args`` run as host processes (``PATH`` starts with the project's venv) in a
private mount namespace (``unshare --mount``) holding the volumes at their ``mountPath``.
Status goes back through ``pods/{name}/status`` as a kubelet would report it: phase, conditions,
per-container state with exit code, reason and termination message.

Layout of ``state_dir``: ``logs/<namespace>_<pod>_<container>.log`` (stdout and stderr, kept),
``pods/<uid>/`` (volumes, termination-message files, scratch working directories, runc bundles
and overlay upper directories; removed when the Pod is done) and ``pvc/<namespace>/<claim>/`` (PersistentVolumeClaims, kept across Pods).

Run it in-process (``PodRunner(...).start()``, a background thread) or on its own:
``python -m lamassu_platform.podrunner --kubeconfig K --state-dir D``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from .images import Image

log = logging.getLogger("lamassu_platform.podrunner")

JSON = dict[str, Any]

DEFAULT_NODE_NAME = "local-node"
TERMINATION_MESSAGE_LIMIT = 4096  # bytes kept from terminationMessagePath, as the kubelet does
FALLBACK_LOG_LINES = 80  # FallbackToLogsOnError: the kubelet's tail of the log ...
FALLBACK_LOG_BYTES = 2048  # ... capped at this many bytes
DEFAULT_GRACE_SECONDS = 30.0
POLL_INTERVAL = 0.05
START_ERROR_EXIT_CODE = 128  # what a runtime reports when the process could not be started
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# If the runner dies without stop() (a killed test run), the kernel kills each container's main
# process when the thread that started it is gone.
_PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def _now() -> str:
    """An RFC 3339 timestamp with seconds precision, as the API stores metav1.Time."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exit_code(returncode: int) -> int:
    """Popen reports a signal as a negative number; containers report 128 + the signal."""
    return 128 - returncode if returncode < 0 else returncode


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, rest stays."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i):
            end = text.find(")", i + 2)
            name = text[i + 2 : end] if end != -1 else ""
            if end != -1 and name in env:
                out.append(env[name])
                i = end + 1
            else:
                out.append(text[i : end + 1] if end != -1 else text[i:])
                i = end + 1 if end != -1 else len(text)
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class PodFailedError(Exception):
    """The Pod fails as a whole, with a reason and message shown in its status."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ConfigError(PodFailedError):
    """The Pod refers to something that is missing (Secret, key, PVC) or that the runner cannot do.

    ``reason`` is what the container status shows while waiting (``CreateContainerConfigError``)
    and what the Pod fails with when it does not resolve in time.
    """


class _DeletionRequestedError(Exception):
    """The Pod is being deleted: stop what we are doing and finalize it."""


class _AbandonedError(Exception):
    """The Pod is gone or the runner stops: kill the processes and make no more API calls."""


class _InitFailedError(Exception):
    """An init container failed for good: the Pod's status is already final."""


# --------------------------------------------------------------------------------------- API
class _Api:
    """Plain JSON requests on the client's connection pool.

    Objects stay dicts (camelCase, as on the wire): the generated models are not needed, and
    their deserialization is what breaks ``create_namespaced_pod_binding`` (python client #825).
    """

    def __init__(self, kubeconfig: Path) -> None:
        cfg = k8s_client.Configuration()
        k8s_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 64  # one worker thread per Pod shares the pool
        self.client = k8s_client.ApiClient(cfg)
        self.host = cfg.host.rstrip("/")
        # A bearer token from the kubeconfig, if it has one (the admin kubeconfig uses a cert).
        bearer = cfg.auth_settings().get("BearerToken") or {}
        self._auth: str | None = bearer.get("value")

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self._auth:
            headers["Authorization"] = self._auth
        return headers

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        """One request; raises ApiException on a non-2xx answer."""
        resp = self.client.rest_client.request(
            method,
            self.host + path,
            query_params=list((query or {}).items()),
            headers=self._headers(content_type),
            body=body,
            _request_timeout=timeout,
        )
        data = resp.data
        return json.loads(data) if data else {}

    def stream(self, path: str, query: Mapping[str, str], read_timeout: float) -> Any:
        """A streaming GET (a watch); the caller iterates and closes the urllib3 response."""
        return self.client.rest_client.request(
            "GET",
            self.host + path,
            query_params=list(query.items()),
            headers=self._headers("application/json"),
            _preload_content=False,
            _request_timeout=(10.0, read_timeout),
        )

    def close(self) -> None:
        self.client.close()


def _pod_path(namespace: str, name: str, sub: str = "") -> str:
    return f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}{sub}"


def _iter_events(resp: Any) -> Iterator[JSON]:
    """Newline-delimited JSON watch events from a streaming response."""
    buf = b""
    for chunk in resp.stream(64 * 1024, decode_content=True):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


# ------------------------------------------------------------------------------------ runner
class PodRunner:
    """Registers a Node, binds and runs Pods, reports their status; ``stop()`` kills everything.

    ``extra_env`` is added to every container's environment below the Pod's own variables (for
    test plumbing such as coverage settings); ``config_timeout`` is how long a Pod may wait for a
    missing Secret/ConfigMap/PVC before it is failed (the kubelet would wait forever, which would
    only hide the mistake in a test).
    """

    def __init__(
        self,
        kubeconfig: Path | str,
        state_dir: Path | str,
        *,
        node_name: str = DEFAULT_NODE_NAME,
        extra_env: Mapping[str, str] | None = None,
        config_timeout: float = 30.0,
        restart_backoff: float = 1.0,
        images: Mapping[str, Image] | None = None,
        host_processes: bool = False,
        schedule: bool = True,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        # Containers run from these images (ref -> unpacked image) through runc; any other image
        # is "not present" (ErrImageNeverPull). host_processes: the image-less debugging mode.
        self.images: dict[str, Image] = dict(images or {})
        self.host_processes = host_processes
        # schedule=False: run only Pods already placed on this node (a second runner beside
        # another one that schedules, as a second kubelet would be).
        self.schedule = schedule
        digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:12]
        self.runc_root = RUNC_STATE / digest  # runc's state for this runner's containers only
        self.seccomp = _seccomp_supported()
        self.state_dir = Path(state_dir).resolve()
        self.node_name = node_name
        self.extra_env = dict(extra_env or {})
        self.config_timeout = config_timeout
        self.restart_backoff = restart_backoff
        self.api = _Api(self.kubeconfig)
        split = urlsplit(self.api.host)
        self.api_host = "127.0.0.1"
        self.api_port = split.port or 443
        self.venv_bin = Path(sys.executable).parent  # not resolved: the venv's bin, not /usr/bin
        self._lock = threading.Lock()
        self._workers: dict[str, _PodWorker] = {}
        self._handled: set[str] = set()  # Pods this runner started (or found lost)
        self._finalized: set[str] = set()  # deleted Pods this runner has finished off
        self._bound: set[str] = set()
        self._stopping = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._watch_resp: Any = None
        self._synced = threading.Event()
        self.server_version = "v0.0.0"

    # ------------------------------------------------------------------------- lifecycle
    def start(self) -> PodRunner:
        """Register the Node and start watching Pods (returns once the first list is handled)."""
        for sub in ("logs", "pods", "pvc"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        if not self.host_processes:
            if shutil.which("runc") is None:
                raise RuntimeError("runc is not installed (make system-deps)")
            self._remove_stale_containers()
        self.server_version = str(self.api.request("GET", "/version").get("gitVersion", "v0.0.0"))
        self._register_node()
        self._watch_thread = threading.Thread(
            target=self._watch_loop, name="podrunner-watch", daemon=True
        )
        self._watch_thread.start()
        if not self._synced.wait(60):
            raise TimeoutError("the pod runner could not list Pods within 60s")
        return self

    def stop(self) -> None:
        """Kill every container process (SIGKILL to each process group) and stop watching."""
        self._stopping.set()
        resp = self._watch_resp
        if resp is not None:
            with contextlib.suppress(Exception):  # already closed is fine
                resp.shutdown()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.abandon()
        for worker in workers:
            worker.join(timeout=10)
        if self._watch_thread is not None:
            self._watch_thread.join(timeout=5)
        self.api.close()

    def _remove_stale_containers(self) -> None:
        """Containers a killed earlier runner on this state directory left behind."""
        self.runc_root.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            ["runc", "--root", str(self.runc_root), "list", "-q"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        for cid in out:
            subprocess.run(
                ["runc", "--root", str(self.runc_root), "delete", "--force", cid],
                capture_output=True,
                check=False,
            )

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------------------- helpers
    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        """Where a container's stdout and stderr are kept (appended across restarts)."""
        return self.state_dir / "logs" / f"{namespace}_{pod}_{container}.log"

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """A container's output so far; ``container`` may be left out when the Pod has one."""
        if container is None:
            found = sorted((self.state_dir / "logs").glob(f"{namespace}_{pod}_*.log"))
            if len(found) != 1:
                names = [p.name[len(f"{namespace}_{pod}_") : -4] for p in found]
                raise ValueError(f"pod {namespace}/{pod} has containers {names}: name one")
            return found[0].read_text(errors="replace")
        path = self.log_path(namespace, pod, container)
        return path.read_text(errors="replace") if path.exists() else ""

    def pvc_path(self, namespace: str, claim: str) -> Path:
        """The host folder that stands for a PersistentVolumeClaim."""
        return self.state_dir / "pvc" / namespace / claim

    @property
    def running_pods(self) -> list[str]:
        """``namespace/name`` of the Pods that have live workers (for debugging tests)."""
        with self._lock:
            return [w.key for w in self._workers.values() if w.is_alive()]

    # ------------------------------------------------------------------------------ node
    def _register_node(self) -> None:
        """Create (or refresh) a Ready Node; nothing taints it, as node-lifecycle is off."""
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        resources = {
            "cpu": str(os.cpu_count() or 1),
            "memory": str(mem),
            "pods": "110",
            "ephemeral-storage": str(shutil.disk_usage(self.state_dir).total),
        }
        now = _now()
        conditions = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": m}
            for t, r, m in (
                ("MemoryPressure", "SufficientMemory", "kubelet has sufficient memory"),
                ("DiskPressure", "NoDiskPressure", "kubelet has no disk pressure"),
                ("PIDPressure", "SufficientPID", "kubelet has sufficient PID available"),
            )
        ]
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "the pod runner is ready",
            }
        )
        for c in conditions:
            c["lastHeartbeatTime"] = now
            c["lastTransitionTime"] = now
        status = {
            "capacity": resources,
            "allocatable": resources,
            "conditions": conditions,
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node_name)),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": platform.release(),
                "osImage": "lamassu pod runner",
                "containerRuntimeVersion": "podrunner://1" if self.host_processes else "runc://1",
                "kubeletVersion": self.server_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "status": status,
        }
        try:
            self.api.request("POST", "/api/v1/nodes", body=node)
        except ApiException as exc:
            if exc.status != 409:
                raise
        # Status given on create may be dropped; set it explicitly either way.
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{quote(self.node_name)}/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    # ----------------------------------------------------------------------------- watch
    def _watch_loop(self) -> None:
        """List, then watch from that resourceVersion; reconnect on any error, relist on 410."""
        rv: str | None = None
        pause = 0.2  # doubles while the apiserver is unreachable, up to 5 s
        while not self._stopping.is_set():
            try:
                if rv is None:
                    listing = self.api.request("GET", "/api/v1/pods", timeout=60)
                    rv = str(listing["metadata"]["resourceVersion"])
                    self._resync(listing.get("items") or [])
                    self._synced.set()
                rv = self._watch_from(rv)
                pause = 0.2
            except Exception as exc:  # noqa: BLE001 - the watch must survive anything
                if self._stopping.is_set():
                    return
                if isinstance(exc, ApiException) and exc.status == 410:
                    rv = None
                log.warning("pod watch interrupted (%s); reconnecting", type(exc).__name__)
                self._stopping.wait(pause)
                pause = min(pause * 2, 5.0)

    def _watch_from(self, rv: str) -> str | None:
        """One watch request; returns the resourceVersion to go on from (None: list again)."""
        query = {
            "watch": "true",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        resp = self.api.stream("/api/v1/pods", query, read_timeout=330)
        self._watch_resp = resp
        try:
            for event in _iter_events(resp):
                if self._stopping.is_set():
                    break
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:  # too old: list again
                        return None
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                rv = str(obj.get("metadata", {}).get("resourceVersion") or rv)
                if kind != "BOOKMARK":
                    self._dispatch(kind, obj)
        finally:
            self._watch_resp = None
            with contextlib.suppress(Exception):
                resp.release_conn()
        return rv

    def _resync(self, pods: list[JSON]) -> None:
        """After a (re)list: handle every Pod, and drop workers whose Pod vanished meanwhile."""
        present = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            gone = [w for uid, w in self._workers.items() if uid not in present]
        for worker in gone:
            worker.abandon()
        for pod in pods:
            self._dispatch("ADDED", pod)

    def _dispatch(self, kind: str | None, pod: JSON) -> None:
        try:
            if kind == "DELETED":
                with self._lock:
                    worker = self._workers.get(pod["metadata"]["uid"])
                if worker is not None:
                    worker.abandon()
                return
            self._handle(pod)
        except Exception:
            meta = pod.get("metadata", {})
            log.exception("handling pod %s/%s failed", meta.get("namespace"), meta.get("name"))

    def _handle(self, pod: JSON) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        uid = meta["uid"]
        phase = (pod.get("status") or {}).get("phase")
        node = spec.get("nodeName")
        if meta.get("deletionTimestamp"):
            if node == self.node_name:
                self._on_deleting(pod)
            return
        if not node:
            if self.schedule and phase not in ("Succeeded", "Failed") and uid not in self._bound:
                self._bind(pod)
            return
        if node != self.node_name:
            return
        with self._lock:
            # A Pod runs once: late events about a Pod we ran must not start or judge it again.
            if uid in self._handled or self._stopping.is_set():
                return
            if phase in ("Succeeded", "Failed"):
                return
            self._handled.add(uid)
            lost = _has_started(pod)
            if not lost:
                worker = _PodWorker(self, pod)
                self._workers[uid] = worker
                worker.start()  # under the lock, so stop() never sees an unstarted worker
        if lost:
            # Started by an earlier runner whose processes are gone: report it lost.
            _terminal_status_for_lost_pod(
                self, pod, "the pod runner restarted; the process was lost"
            )

    def _bind(self, pod: JSON) -> None:
        """POST a Binding, as the scheduler would; the apiserver sets nodeName and PodScheduled."""
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        try:
            self.api.request(
                "POST", _pod_path(meta["namespace"], meta["name"], "/binding"), body=body
            )
            self._bound.add(meta["uid"])
        except ApiException as exc:
            if exc.status in (404, 409):  # gone, or bound meanwhile
                self._bound.add(meta["uid"])
                return
            raise

    def _on_deleting(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is not None and worker.is_alive():
                worker.request_delete(pod)
                return
            if uid in self._finalized or self._stopping.is_set():
                return
            # A terminal Pod is deleted with grace 0 by the apiserver itself; nothing to do.
            if pod["metadata"].get("deletionGracePeriodSeconds") == 0:
                return
            self._finalized.add(uid)
        threading.Thread(
            target=self._finalize, args=(pod,), name="podrunner-finalize", daemon=True
        ).start()

    def _finalize(self, pod: JSON) -> None:
        """A deleted Pod with no live process: make its status terminal, then remove it.

        The job-tracking finalizer is the Job controller's; the Pod disappears once it lets go.
        """
        meta = pod["metadata"]
        try:
            # The event may be stale (a worker may have just reported the end): read it afresh.
            try:
                pod = self.api.request("GET", _pod_path(meta["namespace"], meta["name"]))
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            if pod["metadata"]["uid"] != meta["uid"]:
                return
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                _terminal_status_for_lost_pod(self, pod, "the pod was deleted before it ran")
            _delete_now(self, pod)
        except Exception:
            log.exception("finalizing pod %s/%s failed", meta.get("namespace"), meta.get("name"))

    def _forget(self, uid: str, *, finalized: bool) -> None:
        with self._lock:
            self._workers.pop(uid, None)
            if finalized:
                self._finalized.add(uid)


def _has_started(pod: JSON) -> bool:
    """Whether any container of the Pod was reported running or terminated."""
    status = pod.get("status") or {}
    entries = (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])
    return any("waiting" not in (e.get("state") or {"waiting": {}}) for e in entries)


def _delete_now(runner: PodRunner, pod: JSON) -> None:
    """DELETE with grace 0 and a UID precondition: never a newer Pod with the same name."""
    meta = pod["metadata"]
    try:
        runner.api.request(
            "DELETE",
            _pod_path(meta["namespace"], meta["name"]),
            body={
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": meta["uid"]},
            },
        )
    except ApiException as exc:
        if exc.status not in (404, 409):
            raise


def _terminal_status_for_lost_pod(runner: PodRunner, pod: JSON, message: str) -> None:
    """Failed, with every container that had started reported as terminated (exit 137)."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    old = pod.get("status") or {}
    now = _now()

    def statuses(key: str, containers: list[JSON]) -> list[JSON]:
        by_name = {s.get("name"): s for s in old.get(key) or []}
        out = []
        for c in containers:
            prev = by_name.get(c["name"], {})
            state = prev.get("state") or {}
            if "terminated" not in state:
                started = (state.get("running") or {}).get("startedAt")
                state = {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "Error",
                        "message": message,
                        "startedAt": started or now,
                        "finishedAt": now,
                    }
                }
            out.append(
                {
                    "name": c["name"],
                    "image": c.get("image") or "",
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": prev.get("restartCount", 0),
                    "state": state,
                    "lastState": prev.get("lastState") or {},
                }
            )
        return out

    status: JSON = {
        "phase": "Failed",
        "message": message,
        "containerStatuses": statuses("containerStatuses", spec.get("containers") or []),
    }
    if spec.get("initContainers"):
        status["initContainerStatuses"] = statuses("initContainerStatuses", spec["initContainers"])
    try:
        runner.api.request(
            "PATCH",
            _pod_path(meta["namespace"], meta["name"], "/status"),
            body={"metadata": {"uid": meta["uid"]}, "status": status},
            content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        if exc.status not in (404, 409, 422):
            raise


# ------------------------------------------------------------------------------- worker
class _Container:
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


class _PodWorker:
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
        self.init_containers = [_Container(c, True) for c in self.spec.get("initContainers") or []]
        self.containers = [_Container(c, False) for c in self.spec.get("containers") or []]
        self.restart_policy: str = self.spec.get("restartPolicy") or "Always"
        if not self.init_containers:
            for c in self.containers:
                c.state = {"waiting": {"reason": "ContainerCreating"}}
        self.phase = "Pending"
        self.reason = ""
        self.message = ""
        self.start_time = _now()
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
            c.image = self.runner.images.get(ref) or self.runner.images.get(_normalize_ref(ref))
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

    def _env_with_retry(self, c: _Container) -> dict[str, str]:
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

    def _run_init(self, c: _Container) -> None:
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

    def _restart(self, c: _Container) -> None:
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
            _delete_now(self.runner, self.pod)
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
    def _start(self, c: _Container, env: dict[str, str]) -> None:
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
        script = _mount_script(mounts, workdir)
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
                *_PDEATHSIG,
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
        c.started_at = _now()
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

    def _start_runc(self, c: _Container, env: dict[str, str]) -> None:  # noqa: PLR0912 - one step per kubelet rule
        """Start the container from its image: an overlay root, an OCI spec, ``runc run``."""
        image = c.image
        assert image is not None
        spec = c.spec
        pod_sc = self.spec.get("securityContext") or {}
        sc = {**pod_sc, **(spec.get("securityContext") or {})}
        uid, gid = _user(image, sc)
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
        if not _in_rootfs(rootfs, argv[0], env.get("PATH", BASE_PATH)):
            c.start_error = (
                f'exec: "{argv[0]}": executable file not found in $PATH'
                if "/" not in argv[0]
                else f'exec: "{argv[0]}": stat {argv[0]}: no such file or directory'
            )
        groups = sorted(
            {int(g) for g in pod_sc.get("supplementalGroups") or []}
            | ({int(pod_sc["fsGroup"])} if pod_sc.get("fsGroup") is not None else set())
        )
        oci = _oci_spec(
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
                *_PDEATHSIG,
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
        c.started_at = _now()
        c.state = {"running": {"startedAt": c.started_at}}
        log.info(
            "pod %s: started container %s from %s (runc %s)", self.key, c.name, image.ref, c.cid
        )

    def _cleanup_runc(self, c: _Container) -> None:
        """Remove the runc container (if runc left it) and unmount its overlay root."""
        if c.cid:
            self._runc("delete", "--force", c.cid)
        if c.rootfs is not None:
            subprocess.run(["umount", "-l", str(c.rootfs)], capture_output=True, check=False)
            c.rootfs = None

    def _finish(self, c: _Container) -> None:
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
            "finishedAt": _now(),
            "containerID": f"podrunner://{c.name}-{c.restart_count}",
        }
        if returncode < 0:
            terminated["signal"] = -returncode
        if message:
            terminated["message"] = message
        c.state = {"terminated": terminated}
        log.info("pod %s: container %s exited with %d", self.key, c.name, code)

    def _log_tail(self, c: _Container) -> str:
        path = self.runner.log_path(self.namespace, self.pod_name, c.name)
        try:
            with open(path, "rb") as fh:
                fh.seek(c.log_offset)
                data = fh.read()
        except OSError:
            return ""
        lines = data.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
        return b"".join(lines)[-FALLBACK_LOG_BYTES:].decode("utf-8", errors="replace")

    def _mount_source(self, vm: JSON, env: Mapping[str, str]) -> tuple[Path, str, bool]:
        name = vm.get("name")
        if name not in self.volumes:
            raise ConfigError("CreateContainerConfigError", f"volume {name!r} is not in the pod")
        src, ro = self.volumes[name]
        sub = vm.get("subPath") or ""
        if vm.get("subPathExpr"):
            sub = expand(vm["subPathExpr"], env)
        if sub:
            if sub.startswith("/") or ".." in Path(sub).parts:
                raise ConfigError("CreateContainerConfigError", f"invalid subPath {sub!r}")
            src = src / sub
            if not src.exists():
                src.mkdir(parents=True, exist_ok=True)
        target = vm.get("mountPath") or ""
        if not target.startswith("/"):
            raise ConfigError("CreateContainerConfigError", f"mountPath {target!r} is not absolute")
        return src, target, ro or bool(vm.get("readOnly"))

    # ------------------------------------------------------------------------ environment
    def _container_env(self, c: _Container) -> dict[str, str]:
        """The process environment: base, service variables, envFrom, then env (kubelet order)."""
        spec = c.spec
        env: dict[str, str]
        if self.runner.host_processes:
            env = {
                "PATH": f"{self.runner.venv_bin}:{BASE_PATH}",
                "HOME": "/root",
                "HOSTNAME": self.pod_name,
                "LANG": "C.UTF-8",
            }
        else:
            # The image's environment first, as a runtime sets it; the Pod's comes on top.
            env = {"PATH": BASE_PATH, "HOSTNAME": self.pod_name}
            env.update(c.image.env if c.image else {})
            env.setdefault("HOME", "/")
        env.update(self.runner.extra_env)
        port = str(self.runner.api_port)
        env.update(
            {
                "KUBERNETES_SERVICE_HOST": self.runner.api_host,
                "KUBERNETES_SERVICE_PORT": port,
                "KUBERNETES_SERVICE_PORT_HTTPS": port,
                "KUBERNETES_PORT": f"tcp://{self.runner.api_host}:{port}",
            }
        )
        for source in spec.get("envFrom") or []:
            prefix = source.get("prefix") or ""
            if "secretRef" in source:
                ref = source["secretRef"]
                data = self._secret_data(ref.get("name", ""), bool(ref.get("optional")))
            elif "configMapRef" in source:
                ref = source["configMapRef"]
                data = self._configmap_data(ref.get("name", ""), bool(ref.get("optional")))
            else:
                continue
            for key, raw in (data or {}).items():
                if _ENV_NAME.match(prefix + key):
                    env[prefix + key] = raw.decode("utf-8", errors="replace")
        for var in spec.get("env") or []:
            name = var["name"]
            if "valueFrom" not in var:
                env[name] = expand(var.get("value") or "", env)
                continue
            value = self._value_from(var["valueFrom"], c)
            if value is not None:
                env[name] = value
        return env

    def _value_from(self, source: JSON, c: _Container) -> str | None:
        if "fieldRef" in source:
            return self._field(source["fieldRef"].get("fieldPath", ""))
        if "resourceFieldRef" in source:
            return self._resource_field(source["resourceFieldRef"], c)
        for kind, getter in (
            ("secretKeyRef", self._secret_data),
            ("configMapKeyRef", self._configmap_data),
        ):
            if kind in source:
                ref = source[kind]
                optional = bool(ref.get("optional"))
                data = getter(ref.get("name", ""), optional)
                key = ref.get("key", "")
                if data is None or key not in data:
                    if optional:
                        return None
                    raise ConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {key} in {kind[:-6]} "
                        f"{self.namespace}/{ref.get('name')}",
                    )
                return data[key].decode("utf-8", errors="replace")
        raise ConfigError("CreateContainerConfigError", "unsupported valueFrom source")

    def _field(self, path: str) -> str:
        """Downward API fields (the subset a kubelet resolves for env and volumes)."""
        meta, spec = self.meta, self.spec
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            items = sorted((meta.get(path.split(".")[1]) or {}).items())
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in items)
        simple = {
            "metadata.name": meta.get("name"),
            "metadata.namespace": meta.get("namespace"),
            "metadata.uid": meta.get("uid"),
            "spec.nodeName": spec.get("nodeName") or self.runner.node_name,
            "spec.serviceAccountName": spec.get("serviceAccountName") or "default",
            "status.podIP": "127.0.0.1",
            "status.podIPs": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path not in simple:
            raise ConfigError("CreateContainerConfigError", f"unsupported fieldPath {path!r}")
        return str(simple[path] or "")

    def _resource_field(self, ref: JSON, c: _Container | None) -> str:
        """limits/requests of a container, or the node's size when no limit is set."""
        resource = ref.get("resource", "")
        if c is None:
            wanted = ref.get("containerName")
            c = next((x for x in self.containers if x.name == wanted), None)
        kind, _, what = resource.partition(".")
        value = ((c.spec.get("resources") or {}).get(kind) or {}).get(what) if c else None
        if value is None:
            value = (
                str(os.cpu_count() or 1)
                if what == "cpu"
                else str(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
            )
        return str(value)

    def _get(self, path: str) -> JSON | None:
        try:
            return self.runner.api.request("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _secret_data(self, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = self._get(f"/api/v1/namespaces/{quote(self.namespace)}/secrets/{quote(name)}")
        if obj is None:
            if optional:
                return None
            raise ConfigError("CreateContainerConfigError", f'secret "{name}" not found')
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}

    def _configmap_data(self, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = self._get(f"/api/v1/namespaces/{quote(self.namespace)}/configmaps/{quote(name)}")
        if obj is None:
            if optional:
                return None
            raise ConfigError("CreateContainerConfigError", f'configmap "{name}" not found')
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    # ---------------------------------------------------------------------------- volumes
    def _prepare_volumes(self) -> None:
        """Materialize every volume under the Pod's directory (or the PVC folder)."""
        vroot = self.dir / "volumes"
        for vol in self.spec.get("volumes") or []:
            name = vol["name"]
            target = vroot / name
            if "emptyDir" in vol:
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, 0o777)  # noqa: S103 - what a kubelet gives an emptyDir
                self.volumes[name] = (target, False)
            elif "persistentVolumeClaim" in vol:
                src = vol["persistentVolumeClaim"]
                claim = src.get("claimName", "")
                ns = quote(self.namespace)
                path = f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{quote(claim)}"
                if self._get(path) is None:
                    raise ConfigError("FailedMount", f'persistentvolumeclaim "{claim}" not found')
                host = self.runner.pvc_path(self.namespace, claim)
                if not host.exists():
                    host.mkdir(parents=True)
                    os.chmod(host, 0o777)  # noqa: S103 - as a local-path provisioner makes it
                self.volumes[name] = (host, bool(src.get("readOnly")))
            elif "hostPath" in vol:
                host = Path(vol["hostPath"].get("path", ""))
                if (
                    vol["hostPath"].get("type") in ("DirectoryOrCreate", None, "")
                    and not host.exists()
                ):
                    host.mkdir(parents=True, exist_ok=True)
                self.volumes[name] = (host, False)
            else:
                files = self._volume_files(vol)
                _write_files(target, files)
                # The kubelet mounts API-data volumes read-only.
                self.volumes[name] = (target, True)
        fs_group = (self.spec.get("securityContext") or {}).get("fsGroup")
        if fs_group is not None and not self.runner.host_processes:
            for vname, (vpath, vro) in self.volumes.items():
                if any(v["name"] == vname and "hostPath" in v for v in self.spec["volumes"]):
                    continue  # a kubelet never changes a hostPath's ownership
                _apply_fs_group(vpath, int(fs_group), vro)

    def _volume_files(self, vol: JSON) -> list[tuple[str, bytes, int]]:
        """(relative path, content, mode) of a secret/configMap/downwardAPI/projected volume."""
        if "secret" in vol:
            src = vol["secret"]
            data = self._secret_data(src.get("secretName", ""), bool(src.get("optional")))
            return _project(data, src, src.get("defaultMode"), "secret", src.get("secretName"))
        if "configMap" in vol:
            src = vol["configMap"]
            data = self._configmap_data(src.get("name", ""), bool(src.get("optional")))
            return _project(data, src, src.get("defaultMode"), "configmap", src.get("name"))
        if "downwardAPI" in vol:
            src = vol["downwardAPI"]
            return self._downward_files(src.get("items") or [], src.get("defaultMode"))
        if "projected" in vol:
            src = vol["projected"]
            mode = src.get("defaultMode")
            files: list[tuple[str, bytes, int]] = []
            for source in src.get("sources") or []:
                if "secret" in source:
                    s = source["secret"]
                    data = self._secret_data(s.get("name", ""), bool(s.get("optional")))
                    files += _project(data, s, mode, "secret", s.get("name"))
                elif "configMap" in source:
                    s = source["configMap"]
                    data = self._configmap_data(s.get("name", ""), bool(s.get("optional")))
                    files += _project(data, s, mode, "configmap", s.get("name"))
                elif "downwardAPI" in source:
                    files += self._downward_files(source["downwardAPI"].get("items") or [], mode)
                elif "serviceAccountToken" in source:
                    s = source["serviceAccountToken"]
                    token = self._token(s.get("audience"), s.get("expirationSeconds"))
                    files.append((s.get("path") or "token", token.encode(), _mode(mode, 0o644)))
                else:
                    raise ConfigError(
                        "Unsupported", f"projected source {sorted(source)} is not supported"
                    )
            return files
        raise ConfigError(
            "Unsupported",
            f"volume {vol.get('name')!r}: type {sorted(set(vol) - {'name'})} is not supported",
        )

    def _downward_files(
        self, items: list[JSON], default_mode: int | None
    ) -> list[tuple[str, bytes, int]]:
        files = []
        for item in items:
            if "fieldRef" in item:
                value = self._field(item["fieldRef"].get("fieldPath", ""))
            elif "resourceFieldRef" in item:
                value = self._resource_field(item["resourceFieldRef"], None)
            else:
                continue
            files.append(
                (item["path"], value.encode(), _mode(item.get("mode") or default_mode, 0o644))
            )
        return files

    def _token(self, audience: str | None, expiration: int | None) -> str:
        """A bound token from the TokenRequest API for the Pod's ServiceAccount."""
        sa = self.spec.get("serviceAccountName") or "default"
        body: JSON = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],
                "expirationSeconds": int(expiration or 3607),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": self.pod_name,
                    "uid": self.uid,
                },
            },
        }
        path = f"/api/v1/namespaces/{quote(self.namespace)}/serviceaccounts/{quote(sa)}/token"
        try:
            answer = self.runner.api.request("POST", path, body=body)
        except ApiException as exc:
            if exc.status == 404:
                raise ConfigError("FailedMount", f'serviceaccount "{sa}" not found') from None
            raise
        return str(answer["status"]["token"])

    # ----------------------------------------------------------------------------- status
    def _condition(self, ctype: str, ok: bool, reason: str = "") -> JSON:
        status = "True" if ok else "False"
        prev = self.transitions.get(ctype)
        if prev is None or prev[0] != status:
            prev = (status, _now())
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
                _pod_path(self.namespace, self.pod_name, "/status"),
                body={"metadata": {"uid": self.uid}, "status": status},
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status in (404, 409):  # the Pod is gone (or replaced): stop here
                raise _AbandonedError from None
            raise


def _mode(mode: int | None, default: int) -> int:
    return int(mode) if mode is not None else default


def _project(
    data: Mapping[str, bytes] | None,
    source: JSON,
    default_mode: int | None,
    kind: str,
    name: str | None,
) -> list[tuple[str, bytes, int]]:
    """Keys to files: all keys, or the listed ``items`` (key -> path, per-item mode)."""
    if data is None:
        return []  # optional and missing: an empty volume
    mode = default_mode if default_mode is not None else source.get("defaultMode")
    items = source.get("items")
    if not items:
        return [(key, value, _mode(mode, 0o644)) for key, value in data.items()]
    files = []
    for item in items:
        key = item.get("key", "")
        if key not in data:
            if source.get("optional"):
                continue
            raise ConfigError("FailedMount", f"couldn't find key {key} in {kind} {name}")
        files.append((item.get("path") or key, data[key], _mode(item.get("mode") or mode, 0o644)))
    return files


def _write_files(root: Path, files: list[tuple[str, bytes, int]]) -> None:
    """Write a volume's files fresh (no stale keys from an earlier attempt)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)  # noqa: S103 - a volume directory is world-readable, as in a pod
    for rel, content, mode in files:
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ConfigError("FailedMount", f"invalid volume file path {rel!r}")
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.chmod(path, mode)


# ------------------------------------------------------------------------------ runc mode
RUNC_STATE = Path("/run/lamassu-podrunner/runc")
# The capabilities a container runtime grants by default (containerd's and Docker's list).
DEFAULT_CAPABILITIES = [
    *("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW"),
    *("CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE"),
    *("CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"),
]
# RuntimeDefault, approximated: the syscalls the Docker/containerd default profile refuses (a
# deny list; theirs is an allow list of ~350 names that would not add to what is tested here).
SECCOMP_DENIED = [
    *("acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module"),
    *("delete_module", "finit_module", "get_kernel_syms", "get_mempolicy", "init_module"),
    *("ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie"),
    *("mbind", "mount", "move_pages", "name_to_handle_at", "nfsservctl", "open_by_handle_at"),
    *("perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace"),
    *("query_module", "quotactl", "reboot", "request_key", "set_mempolicy", "setns"),
    *("settimeofday", "swapoff", "swapon", "sysfs", "_sysctl", "umount2", "unshare", "uselib"),
    *("userfaultfd", "ustat", "vm86", "vm86old"),
]


def _seccomp_supported() -> bool:
    """Whether this runc was built with libseccomp (it says so in ``runc --version``)."""
    if shutil.which("runc") is None:
        return False
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=False)
    return "libseccomp" in out.stdout


def _normalize_ref(ref: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest``, as a runtime resolves short names."""
    last = ref.rsplit("/", maxsplit=1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    else:
        name, tag = ref, "latest"
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    return f"{name}:{tag}"


def _user(image: Image, sc: Mapping[str, Any]) -> tuple[int | None, int]:
    """(uid, gid) of the container process: securityContext first, then the image's USER.

    uid None: the image names its user, which cannot be checked against runAsNonRoot.
    """
    user, _, group = image.user.partition(":")
    uid: int | None
    if sc.get("runAsUser") is not None:
        uid = int(sc["runAsUser"])
    else:
        uid = int(user) if user.isdigit() else 0 if not user else None
    if sc.get("runAsGroup") is not None:
        return uid, int(sc["runAsGroup"])
    return uid, int(group) if group.isdigit() else 0


def _in_rootfs(rootfs: Path, exe: str, path: str) -> bool:
    """Whether ``exe`` exists in the image (a name is looked up along the container's PATH)."""
    if "/" in exe:
        return os.path.lexists(rootfs / exe.lstrip("/"))
    return any(
        os.path.lexists(rootfs / d.lstrip("/") / exe) for d in path.split(":") if d.startswith("/")
    )


def _apply_fs_group(path: Path, gid: int, read_only: bool) -> None:
    """What a kubelet does with fsGroup: the volume's files belong to that group, which may read
    them (and write, unless read-only); directories are setgid so new files inherit it."""
    for root, dirs, files in os.walk(path):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            os.chown(d, -1, gid)
            mode = os.stat(d).st_mode & 0o7777
            os.chmod(d, mode | 0o2050 | (0 if read_only else 0o020))  # noqa: S103 - group access is the point
        for f in files:
            fp = os.path.join(root, f)
            os.chown(fp, -1, gid, follow_symlinks=False)
            mode = os.stat(fp).st_mode & 0o7777
            os.chmod(fp, mode | 0o040 | (0 if read_only else 0o020))


def _capabilities(sc: Mapping[str, Any], uid: int) -> JSON:
    caps = (sc.get("capabilities") or {}) if not sc.get("privileged") else {}
    drop = {f"CAP_{c.upper().removeprefix('CAP_')}" for c in caps.get("drop") or []}
    add = {f"CAP_{c.upper().removeprefix('CAP_')}" for c in caps.get("add") or []}
    granted = sorted(add | (set() if "CAP_ALL" in drop else set(DEFAULT_CAPABILITIES) - drop))
    # A non-root process gets no effective capabilities (as with containerd), only the bound.
    effective = granted if uid == 0 else []
    return {
        "bounding": granted,
        "effective": effective,
        "permitted": effective,
        "inheritable": [],
        "ambient": [],
    }


def _oci_spec(
    *,
    rootfs: Path,
    argv: list[str],
    env: Mapping[str, str],
    cwd: str,
    uid: int,
    gid: int,
    groups: list[int],
    sc: Mapping[str, Any],
    hostname: str,
    mounts: list[tuple[Path, str, bool]],
    seccomp: bool,
) -> JSON:
    """The OCI runtime spec of one container: host network, own pid/ipc/uts/mount namespaces."""
    no_new_privs = sc.get("allowPrivilegeEscalation") is False
    spec_mounts: list[JSON] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
    ]
    for src, target, ro in sorted(mounts, key=lambda m: len(Path(m[1]).parts)):
        opts = ["rbind", "rprivate", "nosuid", "nodev"]
        if ro:
            opts.append("ro")
        spec_mounts.append(
            {"destination": target, "type": "bind", "source": str(src), "options": opts}
        )
    linux: JSON = {
        "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount")],
        "maskedPaths": [
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
        ],
        "readonlyPaths": [
            "/proc/asound",
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ],
    }
    profile = (sc.get("seccompProfile") or {}).get("type")
    if seccomp and profile == "RuntimeDefault":
        linux["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": SECCOMP_DENIED, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            ],
        }
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # no more than this runner has
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": uid, "gid": gid, "additionalGids": groups},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": cwd,
            "capabilities": _capabilities(sc, uid),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": hard, "soft": hard}],
            "noNewPrivileges": no_new_privs,
        },
        "root": {"path": str(rootfs), "readonly": bool(sc.get("readOnlyRootFilesystem"))},
        "hostname": hostname,
        "mounts": spec_mounts,
        "linux": linux,
    }


STAGE_ROOT = Path("/run/lamassu-podrunner-stage")


def _mount_script(mounts: list[tuple[Path, str, bool]], workdir: str) -> str:
    """A shell script for inside ``unshare --mount``: bind each source at its target, cd, exec.

    Sources are first bound into a private tmpfs staging area, then from there onto their
    targets: a target such as ``/tmp`` would otherwise hide sources that live under it (the
    runner's own state directory often does). Targets are created on the host when missing (an
    empty directory, or an empty file when the source is a file, such as the termination-message
    file). Parents are mounted before children.
    """
    stage = shlex.quote(str(STAGE_ROOT))
    lines = [
        'fail() { echo "pod runner: $*" >&2; exit 128; }',
        f"mkdir -p {stage} && mount -t tmpfs -o size=1m,mode=0700 podrunner-stage {stage} "
        "|| fail cannot prepare the staging area",
    ]
    staged: list[tuple[str, str, bool]] = []
    for i, (src, target, ro) in enumerate(mounts):
        s, st = shlex.quote(str(src)), shlex.quote(str(STAGE_ROOT / str(i)))
        lines.append(f"mkdir -p {st}" if src.is_dir() else f": > {st}")
        lines.append(f"mount --bind {s} {st} || fail cannot stage {s}")
        staged.append((st, target, ro))
    for st, target, ro in sorted(staged, key=lambda m: len(Path(m[1]).parts)):
        t = shlex.quote(target)
        lines.append(
            f'if [ -d {st} ]; then mkdir -p {t}; else [ -e {t} ] || {{ mkdir -p "$(dirname {t})" && : > {t}; }}; fi '
            f"|| fail cannot create mount point {t}"
        )
        lines.append(f"mount --bind {st} {t} || fail cannot mount {t}")
        if ro:
            lines.append(f"mount -o remount,bind,ro {t} || fail cannot make {t} read-only")
    w = shlex.quote(workdir)
    lines.append(f"mkdir -p {w} && cd {w} || fail cannot enter working directory {w}")
    lines.append('exec "$@"')
    return "\n".join(lines)


# --------------------------------------------------------------------------------- main
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
