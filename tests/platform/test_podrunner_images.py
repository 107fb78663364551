"""The pod runner runs containers from the project's images through runc, securityContext applied.

Real images (``scripts/build-images.sh``), real runc, the real apiserver (with Pod Security
admission). Each test would fail if the runner ignored the image or the securityContext: the
runner image has no venv of this checkout, runs as 65532, and its root is read-only only if runc
was told so.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lamassu_backup import __version__
from lamassu_platform import images
from lamassu_platform.controlplane import ControlPlane
from lamassu_platform.podrunner import PodRunner
from lamassu_platform.stack import api_client

pytestmark = pytest.mark.platform

NODE = "image-node"
ROOT_IMAGE = "localhost/lamassu-test/root-user:1"


@pytest.fixture(scope="module")
def built() -> dict[str, images.Image]:
    return images.build(("runner",))


@pytest.fixture(scope="module")
def image_runner(
    control_plane: ControlPlane,
    built: dict[str, images.Image],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PodRunner]:
    """A runc runner on its own node; Pods are placed on it by name (the session's host-process
    runner schedules everything else)."""
    runner_image = built[images.ref_of(built, "runner")]
    # The same root filesystem, but an image whose USER is root (as most public images are).
    as_root = dataclasses.replace(runner_image, ref=ROOT_IMAGE, user="")
    with PodRunner(
        control_plane.kubeconfig,
        tmp_path_factory.mktemp("imagerunner"),
        node_name=NODE,
        images={**built, ROOT_IMAGE: as_root},
        schedule=False,
        config_timeout=3,
    ) as runner:
        yield runner


@pytest.fixture(scope="module")
def core(control_plane: ControlPlane) -> client.CoreV1Api:
    return client.CoreV1Api(api_client(control_plane.kubeconfig))


def new_namespace(core: client.CoreV1Api, labels: dict[str, str] | None = None) -> str:
    """A namespace whose ``default`` ServiceAccount exists (admission refuses Pods until then)."""
    name = f"img-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    try:
        core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
    except ApiException as exc:
        if exc.status != 409:
            raise
    return name


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    name = new_namespace(core)
    yield name
    core.delete_namespace(name)


def py(code: str) -> list[str]:
    """A command run by the image's Python: the images hold no shell tools (no cat, id, sleep)."""
    return ["python3", "-c", code]


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def make_pod(
    core: client.CoreV1Api,
    ns: str,
    image: str,
    command: list[str] | None,
    *,
    pod_security: dict[str, Any] | None = None,
    security: dict[str, Any] | None = None,
) -> str:
    name = f"p-{uuid.uuid4().hex[:6]}"
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "securityContext": RESTRICTED if security is None else security,
        "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if command is not None:
        container["command"] = command
    spec = {
        "nodeName": NODE,
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            **(pod_security or {}),
        },
        "containers": [container],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }
    core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": spec})
    return name


def wait_terminated(core: client.CoreV1Api, ns: str, name: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, ns)
        if pod.status.phase in ("Succeeded", "Failed"):
            return pod
        time.sleep(0.3)
    raise AssertionError(f"pod {ns}/{name} did not finish: {pod.status}")


def wait_waiting(core: client.CoreV1Api, ns: str, name: str, reason: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(name, ns)
        for st in pod.status.container_statuses or []:
            if st.state.waiting is not None and st.state.waiting.reason == reason:
                return st.state.waiting
        time.sleep(0.3)
    raise AssertionError(f"pod {ns}/{name} never waited with {reason}: {pod.status}")


def test_runner_image_runs_its_entrypoint_as_non_root(
    image_runner: PodRunner, built: dict[str, images.Image], core: client.CoreV1Api, namespace: str
) -> None:
    """No command: the image's ENTRYPOINT (lamassu-backup) with args; its own pg_dump 17."""
    ref = images.ref_of(built, "runner")
    spec = {
        "nodeName": NODE,
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {"name": "main", "image": ref, "args": ["--version"], "securityContext": RESTRICTED}
        ],
    }
    core.create_namespaced_pod(namespace, {"metadata": {"name": "entry"}, "spec": spec})
    done = wait_terminated(core, namespace, "entry")
    assert done.status.phase == "Succeeded", image_runner.logs(namespace, "entry", "main")
    assert f"lamassu-backup {__version__}" in image_runner.logs(namespace, "entry", "main")
    assert done.status.container_statuses[0].image_id == built[ref].digest

    script = (
        "import os, subprocess; "
        "s = open('/proc/self/status').read(); "
        "print('uid', os.getuid(), 'gid', os.getgid()); "
        "print([l for l in s.splitlines() if l.split(':')[0] in ('CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp')]); "
        "print(subprocess.run(['pg_dump', '--version'], capture_output=True, text=True).stdout)"
    )
    name = make_pod(core, namespace, ref, ["python3", "-c", script])
    done = wait_terminated(core, namespace, name)
    out = image_runner.logs(namespace, name, "main")
    assert done.status.phase == "Succeeded", out
    assert "uid 65532 gid 65532" in out
    assert "'CapEff:\\t0000000000000000'" in out
    assert "'CapBnd:\\t0000000000000000'" in out  # drop: [ALL]
    assert "'NoNewPrivs:\\t1'" in out  # allowPrivilegeEscalation: false
    if image_runner.seccomp:
        assert "'Seccomp:\\t2'" in out  # RuntimeDefault: a filter is loaded
    assert "pg_dump (PostgreSQL) 17." in out


def test_container_writing_outside_its_volumes_fails(
    image_runner: PodRunner, built: dict[str, images.Image], core: client.CoreV1Api, namespace: str
) -> None:
    ref = images.ref_of(built, "runner")
    ok = make_pod(
        core,
        namespace,
        ref,
        py("open('/tmp/in-volume', 'w').write('data'); print(open('/tmp/in-volume').read())"),
    )
    bad = make_pod(core, namespace, ref, py("open('/opt/outside', 'w').write('data')"))
    done_ok = wait_terminated(core, namespace, ok)
    assert done_ok.status.phase == "Succeeded", image_runner.logs(namespace, ok, "main")
    done_bad = wait_terminated(core, namespace, bad)
    assert done_bad.status.phase == "Failed"
    term = done_bad.status.container_statuses[0].state.terminated
    assert term.exit_code != 0
    assert "Read-only file system" in term.message
    # With a writable root (and a user allowed to write /opt) the same write works, and lands in
    # the container's own layer only: the shared image stays as built.
    writable = {**RESTRICTED, "readOnlyRootFilesystem": False}
    rw = make_pod(
        core,
        namespace,
        ref,
        py("open('/opt/outside', 'w').write('data'); print(open('/opt/outside').read())"),
        pod_security={"runAsNonRoot": False, "runAsUser": 0},
        security={**writable, "capabilities": {"drop": ["ALL"], "add": ["DAC_OVERRIDE"]}},
    )
    assert wait_terminated(core, namespace, rw).status.phase == "Succeeded", image_runner.logs(
        namespace, rw, "main"
    )
    assert not (built[ref].rootfs / "opt" / "outside").exists()


def test_container_asking_for_root_is_refused(
    image_runner: PodRunner, built: dict[str, images.Image], core: client.CoreV1Api, namespace: str
) -> None:
    """runAsNonRoot with an image whose user is root (or runAsUser: 0): refused, never started."""
    name = make_pod(core, namespace, ROOT_IMAGE, py("import os; print(os.getuid())"))
    waiting = wait_waiting(core, namespace, name, "CreateContainerConfigError")
    assert "runAsNonRoot and image will run as root" in waiting.message
    assert image_runner.logs(namespace, name, "main") == ""
    # The same image with runAsUser set runs, as that user.
    name = make_pod(
        core,
        namespace,
        ROOT_IMAGE,
        py("import os; print(os.getuid())"),
        pod_security={"runAsUser": 1234},
    )
    assert wait_terminated(core, namespace, name).status.phase == "Succeeded"
    assert image_runner.logs(namespace, name, "main").strip() == "1234"
    ref = images.ref_of(built, "runner")
    name = make_pod(
        core, namespace, ref, py("import os; print(os.getuid())"), pod_security={"runAsUser": 0}
    )
    waiting = wait_waiting(core, namespace, name, "CreateContainerConfigError")
    assert "will run as root" in waiting.message


def test_image_not_built_locally_is_never_pulled(
    image_runner: PodRunner, core: client.CoreV1Api, namespace: str
) -> None:
    name = make_pod(core, namespace, "registry.example/no-such-image:1", ["true"])
    waiting = wait_waiting(core, namespace, name, "ErrImageNeverPull")
    assert "registry.example/no-such-image:1" in waiting.message
    assert core.read_namespaced_pod(name, namespace).status.phase == "Pending"


def test_fs_group_owns_the_volumes(
    image_runner: PodRunner, built: dict[str, images.Image], core: client.CoreV1Api, namespace: str
) -> None:
    ref = images.ref_of(built, "runner")
    name = make_pod(
        core,
        namespace,
        ref,
        py(
            "import os; print(os.getgid(), *sorted(set(os.getgroups()) - {os.getgid()})); print(os.stat('/tmp').st_gid)"
        ),
        pod_security={"runAsUser": 2000, "runAsGroup": 3000, "fsGroup": 4000},
    )
    assert wait_terminated(core, namespace, name).status.phase == "Succeeded"
    groups, owner = image_runner.logs(namespace, name, "main").split("\n")[:2]
    assert groups.split() == ["3000", "4000"]
    assert owner == "4000"


def test_apiserver_refuses_a_pod_that_is_not_restricted(core: client.CoreV1Api) -> None:
    """Pod Security admission is on: in a namespace labelled restricted, the apiserver itself
    refuses a Pod without the restricted securityContext (no kubelet involved)."""
    name = new_namespace(core, {"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        plain = {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(name, {"metadata": {"name": "plain"}, "spec": plain})
        assert refused.value.status == 403
        assert "violates PodSecurity" in str(refused.value.body)
        restricted = {
            "securityContext": {
                "runAsNonRoot": True,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["true"],
                    "securityContext": RESTRICTED,
                }
            ],
        }
        core.create_namespaced_pod(name, {"metadata": {"name": "ok"}, "spec": restricted})
    finally:
        core.delete_namespace(name)


def test_stopped_runner_leaves_no_container_or_mount(
    control_plane: ControlPlane,
    built: dict[str, images.Image],
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    """A runner stopped while a container runs kills it and unmounts its root (a leaked overlay
    would keep the image's files mounted under the test's temporary directory)."""
    ref = images.ref_of(built, "runner")
    runner = PodRunner(
        control_plane.kubeconfig,
        tmp_path / "r",
        node_name="stop-node",
        images=built,
        schedule=False,
    ).start()
    try:
        spec = {
            "nodeName": "stop-node",
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "main",
                    "image": ref,
                    "command": py("import time; time.sleep(300)"),
                    "securityContext": RESTRICTED,
                }
            ],
        }
        core.create_namespaced_pod(namespace, {"metadata": {"name": "long"}, "spec": spec})
        deadline = time.monotonic() + 60
        while core.read_namespaced_pod("long", namespace).status.phase != "Running":
            assert time.monotonic() < deadline, "the container never ran"
            time.sleep(0.3)
    finally:
        runner.stop()
    mounts = Path("/proc/mounts").read_text()
    assert str(tmp_path / "r") not in mounts
    listed = subprocess.run(
        ["runc", "--root", str(runner.runc_root), "list", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert listed.stdout.strip() == ""
