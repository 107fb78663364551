"""What a Pod projects into its containers: environment, volumes and ServiceAccount tokens.

Why apart: this is the kubelet's translation of the Pod spec (env/envFrom with ``$(VAR)``
expansion, the downward API, Secret/ConfigMap/PVC/hostPath/emptyDir/projected volumes, fsGroup,
bound tokens from the TokenRequest API); it is the same in host-process and runc mode.
:class:`PodProjection` is the half of :class:`.worker.PodWorker` that does it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from kubernetes.client.exceptions import ApiException

from .api import JSON
from .errors import ConfigError

if TYPE_CHECKING:
    from .runner import PodRunner
    from .worker import Container

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


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


class PodProjection:
    """The projecting half of :class:`.worker.PodWorker`: env, volume files and tokens of a Pod.

    A mixin rather than an object of its own, so the worker's state (its Pod, its directory, its
    containers) is not copied; the worker sets the attributes declared here. ``volumes`` is
    filled by :meth:`_prepare_volumes` and read by :meth:`_mount_source`.
    """

    runner: PodRunner
    meta: JSON
    spec: JSON
    namespace: str
    pod_name: str
    uid: str
    dir: Path
    volumes: dict[str, tuple[Path, bool]]  # name -> (host path, read-only)
    containers: list[Container]

    # ---------------------------------------------------------------------------- mounts
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
    def _container_env(self, c: Container) -> dict[str, str]:
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

    def _value_from(self, source: JSON, c: Container) -> str | None:
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

    def _resource_field(self, ref: JSON, c: Container | None) -> str:
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
