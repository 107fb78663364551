"""What each container runtime is handed: runc's OCI spec, or the host-process mount script.

Why apart: these are plain functions of the image, the securityContext and the mounts (no API,
no Pod state), so the kubelet rules they encode (user, capabilities, seccomp RuntimeDefault,
read-only root, image references) can be read and checked on their own.
"""

from __future__ import annotations

import os
import resource
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..images import Image
from .api import JSON

# If the runner dies without stop() (a killed test run), the kernel kills each container's main
# process when the thread that started it is gone.
PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []

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


def seccomp_supported() -> bool:
    """Whether this runc was built with libseccomp (it says so in ``runc --version``)."""
    if shutil.which("runc") is None:
        return False
    out = subprocess.run(["runc", "--version"], capture_output=True, text=True, check=False)
    return "libseccomp" in out.stdout


def normalize_ref(ref: str) -> str:
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


def container_user(image: Image, sc: Mapping[str, Any]) -> tuple[int | None, int]:
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


def in_rootfs(rootfs: Path, exe: str, path: str) -> bool:
    """Whether ``exe`` exists in the image (a name is looked up along the container's PATH)."""
    if "/" in exe:
        return os.path.lexists(rootfs / exe.lstrip("/"))
    return any(
        os.path.lexists(rootfs / d.lstrip("/") / exe) for d in path.split(":") if d.startswith("/")
    )


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


def oci_spec(
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


# ---------------------------------------------------------------------- host-process mode
STAGE_ROOT = Path("/run/lamassu-podrunner-stage")


def mount_script(mounts: list[tuple[Path, str, bool]], workdir: str) -> str:
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
