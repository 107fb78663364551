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

Modules, by what they do: :mod:`.api` (requests and watches on the kube-apiserver),
:mod:`.runner` (the Node, the Pod watch, binding, a worker per Pod), :mod:`.worker` (one Pod's
life, and starting its containers in runc or host-process mode), :mod:`.projection` (env,
volumes and ServiceAccount tokens into a container), :mod:`.runtime` (runc's OCI spec and the
host-process mount script), :mod:`.errors` (how a Pod fails).
"""

from .errors import ConfigError, PodFailedError
from .projection import expand
from .runner import DEFAULT_NODE_NAME, PodRunner

__all__ = ["DEFAULT_NODE_NAME", "ConfigError", "PodFailedError", "PodRunner", "expand"]
