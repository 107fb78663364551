"""The runner: registers the Node, watches Pods, binds pending ones and starts a worker per Pod.

Why apart: this is the kubelet's outer loop (list, watch, resync, deletion of Pods with no live
process); running one Pod is :mod:`.worker`'s business.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from kubernetes.client.exceptions import ApiException

from ..images import Image
from .api import JSON, Api, delete_now, iter_events, pod_path, rfc3339_now
from .runtime import RUNC_STATE, seccomp_supported
from .worker import PodWorker

log = logging.getLogger("lamassu_platform.podrunner")

DEFAULT_NODE_NAME = "local-node"


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
        self.seccomp = seccomp_supported()
        self.state_dir = Path(state_dir).resolve()
        self.node_name = node_name
        self.extra_env = dict(extra_env or {})
        self.config_timeout = config_timeout
        self.restart_backoff = restart_backoff
        self.api = Api(self.kubeconfig)
        split = urlsplit(self.api.host)
        self.api_host = "127.0.0.1"
        self.api_port = split.port or 443
        self.venv_bin = Path(sys.executable).parent  # not resolved: the venv's bin, not /usr/bin
        self._lock = threading.Lock()
        self._workers: dict[str, PodWorker] = {}
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
        now = rfc3339_now()
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
            for event in iter_events(resp):
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
                worker = PodWorker(self, pod)
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
                "POST", pod_path(meta["namespace"], meta["name"], "/binding"), body=body
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
                pod = self.api.request("GET", pod_path(meta["namespace"], meta["name"]))
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            if pod["metadata"]["uid"] != meta["uid"]:
                return
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                _terminal_status_for_lost_pod(self, pod, "the pod was deleted before it ran")
            delete_now(self.api, pod)
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


def _terminal_status_for_lost_pod(runner: PodRunner, pod: JSON, message: str) -> None:
    """Failed, with every container that had started reported as terminated (exit 137)."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    old = pod.get("status") or {}
    now = rfc3339_now()

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
            pod_path(meta["namespace"], meta["name"], "/status"),
            body={"metadata": {"uid": meta["uid"]}, "status": status},
            content_type="application/merge-patch+json",
        )
    except ApiException as exc:
        if exc.status not in (404, 409, 422):
            raise
