"""A leak scanner over every test: no secret value may appear where a person or a log reads.

Every credential the operator and its runners handle reaches them through a Kubernetes Secret,
so the Secrets in the cluster are the list of what must never be shown. After each test that
ran on the platform, the scanner reads every Secret's values and searches the operator's log,
the runners' container logs, every Event, the status of every custom resource, and every Pod's
termination message; for every test, it also searches the failure text. A hit fails the test
that caused it, naming where the value was found and which Secret key it came from (never the
value itself). Values that are public by nature (certificates, public keys, user names, access
key ids) are not searched for.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from . import figures

PUBLIC_PARTS = ("public", "recipient", ".crt", "cert", ".pub")
"""Secret keys holding public material (matched case-insensitively anywhere in the key)."""

PUBLIC_NAMES = ("username", "user", "accesskeyid")
"""Secret keys naming someone, not proving it (matched against the whole key)."""

MIN_LENGTH = 8
GROUP, VERSION = "backup.lamassu.io", "v1alpha1"
PLURALS = ("lamassubackuppolicies", "lamassubackups", "lamassurestores")


@dataclass(frozen=True)
class Needle:
    """A secret value to look for, and where it came from (to name it without showing it)."""

    text: str
    origin: str


def _is_public(key: str) -> bool:
    lowered = key.lower()
    squashed = lowered.replace("_", "").replace("-", "")
    return any(p in lowered for p in PUBLIC_PARTS) or squashed in PUBLIC_NAMES


def needles_of(name: str, key: str, value: bytes) -> list[Needle]:
    """What to search for from one Secret key: the value, or each long line of a PEM/armor body."""
    if _is_public(key):
        return []
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return []
    origin = f"Secret {name} key {key}"
    if "-----BEGIN" in text:
        body = [
            ln.strip()
            for ln in text.splitlines()
            if len(ln.strip()) >= 40 and not ln.startswith("-----") and ":" not in ln
        ]
        if "PUBLIC KEY" in text and "PRIVATE" not in text:
            return []
        return [Needle(ln, origin) for ln in body[:3]]
    text = text.strip()
    if len(text) < MIN_LENGTH:
        return []
    return [Needle(text, origin)]


def find(needles: list[Needle], haystacks: dict[str, str]) -> list[str]:
    """Where each needle appears: 'Secret x key y in <place>'."""
    hits = []
    for place, text in haystacks.items():
        for needle in needles:
            if needle.text in text:
                hits.append(f"{needle.origin} in {place}")
    return sorted(set(hits))


def _plain(obj: Any) -> Any:
    return obj.to_dict() if hasattr(obj, "to_dict") else obj


def cluster_needles(api: Any) -> list[Needle]:
    from kubernetes import client

    out: list[Needle] = []
    for secret in client.CoreV1Api(api).list_secret_for_all_namespaces().items:
        name = f"{secret.metadata.namespace}/{secret.metadata.name}"
        for key, encoded in (secret.data or {}).items():
            out.extend(needles_of(name, key, base64.b64decode(encoded)))
    return out


def cluster_haystacks(api: Any) -> dict[str, str]:
    from kubernetes import client

    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    out: dict[str, str] = {}
    for event in core.list_event_for_all_namespaces().items:
        place = f"Event {event.metadata.namespace}/{event.metadata.name} ({event.reason})"
        out[place] = f"{event.message or ''} {event.note if hasattr(event, 'note') else ''}"
    for plural in PLURALS:
        for item in custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]:
            meta = item["metadata"]
            place = f"status of {plural}/{meta.get('namespace')}/{meta.get('name')}"
            out[place] = json.dumps(item.get("status") or {})
    for pod in core.list_pod_for_all_namespaces().items:
        for status in (pod.status.container_statuses or []) if pod.status else []:
            terminated = status.state.terminated if status.state else None
            if terminated is not None and terminated.message:
                place = f"termination message of Pod {pod.metadata.namespace}/{pod.metadata.name}"
                out[place] = terminated.message
    return out


def file_haystacks(paths: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in paths:
        if path.is_file():
            out[f"log {path.name}"] = path.read_bytes().decode(errors="replace")
    return out


def _platform_logs(item: pytest.Item) -> list[Path]:
    """The operator's log and the runners' container logs, when the test used them."""
    funcargs = getattr(item, "funcargs", {})
    paths: list[Path] = []
    operator = funcargs.get("operator")
    log = getattr(operator, "log", None)
    if isinstance(log, Path):
        paths.append(log)
    platform = funcargs.get("platform") or getattr(funcargs.get("cluster"), "platform", None)
    runner = getattr(platform, "pod_runner", None) or funcargs.get("pod_runner")
    state = getattr(runner, "state_dir", None)
    if isinstance(state, Path):
        paths.extend(sorted((state / "logs").glob("*.log")))
    return paths


def _api(item: pytest.Item) -> Any:
    funcargs = getattr(item, "funcargs", {})
    platform = funcargs.get("platform") or getattr(funcargs.get("cluster"), "platform", None)
    if platform is not None and hasattr(platform, "api"):
        return platform.api()
    control_plane = funcargs.get("control_plane")
    if control_plane is not None and hasattr(control_plane, "api"):
        return control_plane.api()
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """After a test's call phase: search everything it could have leaked into."""
    outcome = yield
    if call.when != "call":
        return
    report = outcome.get_result()
    api = _api(item)
    if api is None:
        return
    try:
        needles = cluster_needles(api)
        haystacks = {**cluster_haystacks(api), **file_haystacks(_platform_logs(item))}
        if report.failed:
            haystacks["the failure text"] = str(report.longrepr)
    except Exception as exc:  # noqa: BLE001 - a scan that cannot run says so, it never hides a result
        report.sections.append(("leak scanner", f"could not scan: {type(exc).__name__}"))
        item.warn(pytest.PytestWarning(f"leak scanner could not scan: {type(exc).__name__}"))
        return
    hits = find(needles, haystacks)
    figures.count("leak scanner", "tests scanned")
    figures.count("leak scanner", "hits", len(hits))
    if hits:
        report.outcome = "failed"
        report.longrepr = "secret values leaked:\n  " + "\n  ".join(hits)
