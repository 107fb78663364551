"""kubectl lamassu against the real apiserver: every command creates or reads what it says, the
apiserver accepts what it creates, and every refusal is one line with a non-zero exit.

No operator runs here: the tests play its part by writing the status it would write.
"""

from __future__ import annotations

import io
import os
import pty
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from lamassu_backup import kubectl_plugin as kp
from lamassu_backup.builders.conditions import humanize_bytes
from lamassu_backup.models.resources import GROUP, KINDS_BY_NAME, VERSION
from lamassu_platform.controlplane import ControlPlane
from lamassu_platform.stack import api_client, apply_crds

pytestmark = pytest.mark.platform
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLUGIN = Path(sys.executable).parent / "kubectl-lamassu"
FULL = ("postgres", "vault", "config", "volumes")  # the components of policy-standard.yaml


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> client.ApiClient:
    api = api_client(control_plane.kubeconfig)
    apply_crds(api)
    return api


@pytest.fixture
def ns(installed: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(installed)
    name = f"plugin-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def plugin(control_plane: ControlPlane, ns: str) -> Any:
    """Run the plugin in-process (stdin is not a terminal) in the test's namespace."""

    def run(*args: str, stdin: str = "") -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = kp.run(
            ["--kubeconfig", str(control_plane.kubeconfig), "-n", ns, *args],
            out=out,
            err=err,
            stdin=io.StringIO(stdin),
        )
        return Result(code, out.getvalue(), err.getvalue())

    return run


def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def plural(kind: str) -> str:
    return KINDS_BY_NAME[kind].plural


def get(api: client.ApiClient, ns: str, kind: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = custom(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, plural(kind), name
    )
    return obj


def items(api: client.ApiClient, ns: str, kind: str) -> list[dict[str, Any]]:
    resp = custom(api).list_namespaced_custom_object(GROUP, VERSION, ns, plural(kind))
    return list(resp["items"])


def create_policy(api: client.ApiClient, ns: str, name: str = "lamassu") -> None:
    obj = yaml.safe_load((EXAMPLES / "policy-standard.yaml").read_text())
    obj["metadata"] = {"name": name, "namespace": ns}
    custom(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, plural("LamassuBackupPolicy"), obj
    )


def create_backup(
    api: client.ApiClient,
    ns: str,
    name: str,
    set_time: str,
    *,
    phase: str = "Completed",
    policy: str = "lamassu",
    components: tuple[str, ...] = FULL,
    verified: str | None = None,
    size_bytes: int = 10 * 1024 * 1024,
) -> None:
    """A LamassuBackup with the status the operator writes when the run ends."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LamassuBackup",
        "metadata": {"name": name, "labels": {"backup.lamassu.io/policy": policy}},
        "spec": {"policyRef": {"name": policy}, "trigger": "Scheduled"},
    }
    custom(api).create_namespaced_custom_object(GROUP, VERSION, ns, plural("LamassuBackup"), body)
    held = {"postgres": ["ca", "kms"], "vault": ["lamassu-kms"], "config": ["config"]}
    held["volumes"] = ["data"]
    artifacts = [
        {
            "component": component,
            "name": item,
            "kind": {"postgres": "pg-dump", "vault": "kv-export"}.get(component, "archive"),
            "key": f"p/{ns}/{policy}/{set_time}/{component}/{item}.gpg",
            "sizeBytes": 4096,
            "sha256": "a" * 64,
            "plaintextSha256": "b" * 64,
            "encryption": "gpg",
        }
        for component in components
        for item in held[component]
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "setTime": set_time,
        "location": f"s3://bucket/p/{ns}/{policy}/{set_time}/",
        "sizeBytes": size_bytes,
        "size": humanize_bytes(size_bytes),
        "artifacts": artifacts,
        "components": {
            c: {"phase": "Completed" if phase != "Failed" else "Failed"} for c in components
        },
    }
    if verified:
        status["verification"] = {"phase": verified}
    custom(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, plural("LamassuBackup"), name, {"status": status}
    )


def one_line_error(result: Result, expected: str) -> None:
    assert result.code == 1, result
    assert result.out == ""
    assert result.err.count("\n") == 1, result.err
    assert result.err.startswith("error: ")
    assert expected in result.err, result.err


# -- backup now ------------------------------------------------------------------------------


def test_backup_now_sets_a_new_run_now_value_each_time(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    seen = []
    for _ in range(2):
        result = plugin("backup", "now", "lamassu")
        assert result.code == 0, result
        value = get(installed, ns, "LamassuBackupPolicy", "lamassu")["metadata"]["annotations"][
            kp.RUN_NOW_ANNOTATION
        ]
        assert f"{kp.RUN_NOW_ANNOTATION}={value}:" in result.out
        seen.append(value)
    assert seen[0] != seen[1]  # the operator runs once per new value
    assert items(installed, ns, "LamassuBackup") == []  # the operator creates the run, not us


def test_backup_now_with_components_creates_a_manual_backup(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    result = plugin("backup", "now", "lamassu", "--components", "postgres,vault", "--pinned")
    assert result.code == 0, result
    (backup,) = items(installed, ns, "LamassuBackup")
    assert result.out == f"lamassubackup.backup.lamassu.io/{backup['metadata']['name']} created\n"
    assert backup["metadata"]["name"].startswith("lamassu-")
    assert backup["metadata"]["name"].endswith("-manual")
    assert backup["spec"] == {
        "policyRef": {"name": "lamassu"},
        "trigger": "Manual",
        "components": ["postgres", "vault"],
        "pinned": True,
    }
    assert backup["metadata"]["labels"]["backup.lamassu.io/policy"] == "lamassu"
    again = plugin(
        "backup", "now", "lamassu", "--components", "config", "--name", backup["metadata"]["name"]
    )
    one_line_error(again, "HTTP 409")


def test_backup_now_of_an_unknown_policy_is_one_line(plugin: Any, ns: str) -> None:
    one_line_error(
        plugin("backup", "now", "nope"), f"LamassuBackupPolicy nope not found in namespace {ns}"
    )


# -- backups ---------------------------------------------------------------------------------


def test_backups_lists_newest_set_first_with_phase_size_and_verified(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    assert plugin("backups").err == f"No backups found in namespace {ns}.\n"
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z", verified="Verified")
    create_backup(installed, ns, "lamassu-b", "20261124T100000Z", phase="Failed", size_bytes=0)
    create_backup(installed, ns, "other-c", "20261124T090000Z", policy="other")
    result = plugin("backups")
    assert result.code == 0, result
    rows = [line.split() for line in result.out.splitlines()]
    assert rows[0] == [
        "NAME",
        "POLICY",
        "TRIGGER",
        "PHASE",
        "SET",
        "TIME",
        "SIZE",
        "VERIFIED",
        "AGE",
    ]
    assert [r[:5] for r in rows[1:]] == [
        ["lamassu-b", "lamassu", "Scheduled", "Failed", "20261124T100000Z"],
        ["other-c", "other", "Scheduled", "Completed", "20261124T090000Z"],
        ["lamassu-a", "lamassu", "Scheduled", "Completed", "20261124T080000Z"],
    ]
    assert rows[3][5:8] == ["10.0", "MiB", "Verified"]
    only = plugin("backups", "--policy", "other")
    assert [line.split()[0] for line in only.out.splitlines()[1:]] == ["other-c"]
    listed = yaml.safe_load(plugin("backups", "--policy", "lamassu", "-o", "json").out)
    assert listed["kind"] == "List"
    assert sorted(i["metadata"]["name"] for i in listed["items"]) == ["lamassu-a", "lamassu-b"]


# -- restore ---------------------------------------------------------------------------------


def restores(api: client.ApiClient, ns: str) -> list[dict[str, Any]]:
    return items(api, ns, "LamassuRestore")


def test_restore_by_name_latest_and_at_create_drills(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")
    create_backup(installed, ns, "lamassu-b", "20261124T100000Z")
    create_backup(installed, ns, "lamassu-c", "20261124T110000Z", components=("config",))
    create_backup(installed, ns, "lamassu-d", "20261124T120000Z", phase="Failed")

    by_name = plugin("restore", "lamassu-a", "--name", "r-name")
    latest = plugin("restore", "--latest", "--policy", "lamassu", "--name", "r-latest")
    at = plugin("restore", "--at", "2026-11-24T09:59:59Z", "--policy", "lamassu", "--name", "r-at")
    config = plugin(
        "restore", "--latest", "--policy", "lamassu", "--components", "config", "--name", "r-config"
    )
    for result in (by_name, latest, at, config):
        assert result.code == 0, result
    assert "chose lamassu-b (newest completed set)" in latest.err
    assert "chose lamassu-a (newest completed set at or before 2026-11-24T09:59:59Z)" in at.err
    assert by_name.out == (
        "lamassurestore.backup.lamassu.io/r-name created (drill of lamassu-a; "
        "kubectl lamassu restore describe r-name)\n"
    )
    got = {r["metadata"]["name"]: r for r in restores(installed, ns)}
    assert {n: r["spec"]["backupRef"]["name"] for n, r in got.items()} == {
        "r-name": "lamassu-a",
        "r-latest": "lamassu-b",
        "r-at": "lamassu-a",
        "r-config": "lamassu-c",
    }
    spec = got["r-latest"]["spec"]
    assert spec["mode"] == "Drill"
    # the keys default to what the policy's own drills use; the schema's defaults are applied
    assert spec["decryptionKeySecret"] == {"name": "backup-gpg-private", "key": "private.asc"}
    assert spec["signerKeySecret"] == {
        "name": "backup-gpg-signing-public",
        "key": "signing-public.asc",
    }
    assert "confirm" not in spec
    assert got["r-latest"]["metadata"]["annotations"][kp.REQUESTED_ANNOTATION] == "latest"
    assert got["r-config"]["spec"]["components"] == ["config"]


def test_restore_refusals_are_one_line_and_create_nothing(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")
    create_backup(installed, ns, "lamassu-f", "20261124T090000Z", phase="Failed")
    one_line_error(plugin("restore", "nope"), f"LamassuBackup nope not found in namespace {ns}")
    one_line_error(
        plugin("restore", "lamassu-f"), "it is Failed: only a Completed set can be restored"
    )
    one_line_error(
        plugin("restore", "--at", "last tuesday", "--policy", "lamassu"), "bad time 'last tuesday'"
    )
    one_line_error(
        plugin("restore", "--at", "2026-11-24T07:00:00Z", "--policy", "lamassu"),
        # a drill by default, so the set must hold what a drill of this policy restores
        "no completed backup of policy lamassu with postgres, vault, volumes taken at or before "
        "2026-11-24T07:00:00Z",
    )
    one_line_error(
        plugin("restore", "--latest", "--policy", "ghost"), "LamassuBackupPolicy ghost not found"
    )
    one_line_error(plugin("restore", "--latest"), "--latest needs --policy POLICY")
    one_line_error(
        plugin("restore", "lamassu-a", "--latest", "--policy", "lamassu"), "name exactly one set"
    )
    one_line_error(
        plugin("restore", "lamassu-a", "--databases", "devices"), "holds no database devices"
    )
    assert restores(installed, ns) == []


def test_restore_without_a_key_anywhere_says_which_flag(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")  # its policy is gone (DR)
    one_line_error(plugin("restore", "lamassu-a"), "--decryption-key-secret SECRET:KEY")
    result = plugin("restore", "lamassu-a", "--decryption-key-secret", "dr-key:private.asc")
    assert result.code == 0, result
    (restore,) = restores(installed, ns)
    assert restore["spec"]["decryptionKeySecret"] == {"name": "dr-key", "key": "private.asc"}


def test_in_place_without_a_terminal_needs_the_right_confirm(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")
    refused = plugin("restore", "lamassu-a", "--mode", "InPlace", stdin="lamassu-a\n")
    assert refused.code == 1
    assert refused.err.startswith("In-place restore of lamassu-a into namespace")
    assert refused.err.splitlines()[-1] == (
        "error: refusing an in-place restore without a terminal to confirm it: "
        "pass --confirm lamassu-a"
    )
    wrong = plugin("restore", "lamassu-a", "--mode", "InPlace", "--confirm", "lamassu-b")
    assert wrong.code == 1
    assert wrong.err.splitlines()[-1].startswith("error: --confirm 'lamassu-b' does not match")
    assert restores(installed, ns) == []

    ok = plugin(
        "restore",
        "lamassu-a",
        "--mode",
        "InPlace",
        "--confirm",
        "lamassu-a",
        "-l",
        "app.kubernetes.io/part-of=lamassu",
        "--databases",
        "ca",
        "--name",
        "r1",
    )
    assert ok.code == 0, ok
    assert "    postgres  ca  (pg-dump, 4.0 KiB)" in ok.err
    assert "postgres  kms" not in ok.err
    assert "    vault     lamassu-kms  (kv-export, 4.0 KiB)" in ok.err
    spec = get(installed, ns, "LamassuRestore", "r1")["spec"]
    assert spec["mode"] == "InPlace"
    assert spec["confirm"] == "lamassu-a"  # the apiserver's CEL rule accepted it
    assert spec["preRestoreBackup"] is True
    assert spec["workloads"]["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "lamassu"}
    assert spec["databases"] == ["ca"]


def test_in_place_dry_run_needs_no_confirmation(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")
    result = plugin("restore", "--latest", "--policy", "lamassu", "--mode", "InPlace", "--dry-run")
    assert result.code == 0, result
    assert "(dry run: nothing changes)" in result.err
    (restore,) = restores(installed, ns)
    assert restore["metadata"]["name"].startswith("lamassu-a-plan-")
    assert restore["spec"]["dryRun"] is True
    assert "confirm" not in restore["spec"]


def run_on_terminal(control_plane: ControlPlane, ns: str, answer: str, *args: str) -> Result:
    """The installed console script with a pseudo-terminal as stdin, answering the prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(PLUGIN), "--kubeconfig", str(control_plane.kubeconfig), "-n", ns, *args],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(follower)
    try:
        # wait for the prompt on stderr before answering, as a person would
        assert proc.stderr is not None
        prompt = ""
        deadline = time.monotonic() + 30
        while "restore it in place: " not in prompt and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 1)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 4096).decode()
                if not chunk:
                    break
                prompt += chunk
        assert "Type the backup name (lamassu-a) to restore it in place: " in prompt, prompt
        os.write(leader, answer.encode() + b"\n")
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
    return Result(proc.returncode, out, prompt + err)


def test_in_place_on_a_terminal_asks_for_the_backup_name(
    control_plane: ControlPlane, installed: client.ApiClient, ns: str
) -> None:
    create_policy(installed, ns)
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")
    wrong = run_on_terminal(
        control_plane, ns, "lamassu", "restore", "lamassu-a", "--mode", "InPlace"
    )
    assert wrong.code == 1
    assert wrong.err.endswith("error: aborted: 'lamassu' is not lamassu-a; nothing was created\n")
    assert restores(installed, ns) == []
    ok = run_on_terminal(
        control_plane, ns, "lamassu-a", "restore", "lamassu-a", "--mode", "InPlace", "--name", "r1"
    )
    assert ok.code == 0, ok
    assert ok.out.startswith(
        "lamassurestore.backup.lamassu.io/r1 created (in-place restore of lamassu-a"
    )
    assert get(installed, ns, "LamassuRestore", "r1")["spec"]["confirm"] == "lamassu-a"


def test_restore_describe_shows_steps_plan_evidence_and_conditions(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")
    assert plugin("restore", "lamassu-a", "--name", "r1").code == 0
    fresh = plugin("restore", "describe", "r1")
    assert fresh.code == 0, fresh
    assert "Phase:              Pending" in fresh.out
    # A drill has no plan Job: its plan comes with its restore Job.
    assert "(filled in by the drill's Job: it restores into scratch targets only)" in fresh.out
    status = {
        "phase": "Completed",
        "step": "Teardown",
        "resolvedBackup": {"name": "lamassu-a", "location": "s3://bucket/p/"},
        "plan": [{"component": "postgres", "target": "ca", "action": "restore into scratch"}],
        "steps": [
            {
                "name": "Planning",
                "phase": "Succeeded",
                "startedAt": "2026-12-01T09:00:00Z",
                "completedAt": "2026-12-01T09:00:02Z",
                "message": "1 database",
                "job": "r1-plan",
            },
        ],
        "recoveryTimeSeconds": 12.5,
        "evidence": {"rowCounts": {"ca": {"certificates": 12}}, "keyConsistency": "ok"},
        "conditions": [
            {
                "type": "Completed",
                "status": "True",
                "reason": "DrillSucceeded",
                "message": "verified",
                "lastTransitionTime": "2026-12-01T09:00:12Z",
            },
        ],
    }
    custom(installed).patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, plural("LamassuRestore"), "r1", {"status": status}
    )
    text = plugin("restore", "describe", "r1").out
    assert "Backup:             lamassu-a" in text
    assert "Recovery time:      12.5s" in text
    assert "  1   postgres    ca       restore into scratch" in text
    assert (
        "  Planning   Succeeded   2026-12-01T09:00:00Z   2026-12-01T09:00:02Z   r1-plan   1 database"
        in text
    )
    assert "      certificates: 12" in text
    assert "  Completed   True     DrillSucceeded   verified" in text
    as_yaml = yaml.safe_load(plugin("restore", "describe", "r1", "-o", "yaml").out)
    assert as_yaml["status"]["recoveryTimeSeconds"] == 12.5
    one_line_error(
        plugin("restore", "describe", "nope"), f"LamassuRestore nope not found in namespace {ns}"
    )
    one_line_error(plugin("restore", "describe"), "restore describe needs the name")


# -- drill -----------------------------------------------------------------------------------


def test_drill_restores_the_newest_whole_set_into_scratch_targets(
    installed: client.ApiClient, ns: str, plugin: Any
) -> None:
    create_policy(installed, ns)
    one_line_error(
        plugin("drill", "lamassu"),
        f"no completed backup of policy lamassu with postgres, vault, volumes in namespace {ns}",
    )
    create_backup(installed, ns, "lamassu-a", "20261124T080000Z")
    create_backup(installed, ns, "lamassu-b", "20261124T100000Z")
    create_backup(installed, ns, "lamassu-c", "20261124T110000Z", components=("config",))
    result = plugin("drill", "lamassu", "-o", "yaml")
    assert result.code == 0, result
    created = yaml.safe_load(result.out)
    stored = get(installed, ns, "LamassuRestore", created["metadata"]["name"])
    assert created["metadata"]["name"].startswith("lamassu-b-drill-")
    assert stored["spec"]["backupRef"] == {"name": "lamassu-b"}
    assert stored["spec"]["mode"] == "Drill"
    assert stored["metadata"]["labels"]["backup.lamassu.io/policy"] == "lamassu"
    one_line_error(plugin("drill", "ghost"), "LamassuBackupPolicy ghost not found")


# -- status ----------------------------------------------------------------------------------


def test_status_per_policy(installed: client.ApiClient, ns: str, plugin: Any) -> None:
    assert plugin("status").err == f"No policies found in namespace {ns}.\n"
    create_policy(installed, ns)
    now = kp.iso(datetime.now(UTC))
    status = {
        "nextScheduleTime": "2099-01-01T00:00:00Z",
        "lastSuccessfulTime": now,
        "lastVerifiedTime": now,
        "components": {
            "postgres": {"lastSuccessfulTime": now, "recoveryPointObjective": "2h", "stale": False},
            "vault": {"recoveryPointObjective": "2h", "stale": True},
        },
        "recentRuns": [{"name": "lamassu-x", "phase": "Completed", "trigger": "Scheduled"}],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Valid",
                "message": "",
                "lastTransitionTime": now,
            },
            {
                "type": "Stale",
                "status": "True",
                "reason": "ComponentStale",
                "message": "vault",
                "lastTransitionTime": now,
            },
            {
                "type": "Verified",
                "status": "True",
                "reason": "DrillSucceeded",
                "message": "",
                "lastTransitionTime": now,
            },
        ],
    }
    custom(installed).patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, plural("LamassuBackupPolicy"), "lamassu", {"status": status}
    )
    result = plugin("status")
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0] == f"Policy lamassu (namespace {ns})"
    assert "  Ready:        True (Valid)" in lines
    assert "  Schedule:     0 * * * *, next run 2099-01-01T00:00:00Z (in " in result.out
    assert "  Last run:     lamassu-x Completed" in lines
    assert "  Stale:        True (ComponentStale)" in lines
    assert f"  Verified:     True (DrillSucceeded), last verified {now}" in result.out
    rows = {
        line.split()[0]: line.split()
        for line in lines
        if line.startswith("  ") and ":" not in line.split()[0]
    }
    assert rows["postgres"][1:2] == [now]
    assert rows["postgres"][-2:] == ["2h", "False"]
    assert rows["vault"][1:] == ["never", "2h", "True"]
    assert rows["config"][1:] == ["never", "True"]
    assert rows["volumes"][1:] == ["never", "True"]
    as_json = yaml.safe_load(plugin("status", "lamassu", "-o", "json").out)
    assert [c["name"] for c in as_json[0]["components"]] == list(FULL)
    one_line_error(plugin("status", "ghost"), "LamassuBackupPolicy ghost not found")


# -- as kubectl runs it ----------------------------------------------------------------------


def test_kubectl_finds_the_installed_plugin(
    control_plane: ControlPlane, installed: client.ApiClient, ns: str
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    create_policy(installed, ns)
    env = {**os.environ, "PATH": f"{PLUGIN.parent}{os.pathsep}{os.environ['PATH']}"}
    base = [kubectl, "lamassu", "--kubeconfig", str(control_plane.kubeconfig), "-n", ns]
    ok = subprocess.run(
        [*base, "status"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"Policy lamassu (namespace {ns})")
    bad = subprocess.run(
        [*base, "drill", "ghost"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert bad.returncode == 1
    assert (
        bad.stderr
        == f"error: LamassuBackupPolicy ghost not found in namespace {ns} (kubectl get lbp lists the policies)\n"
    )


def test_an_unreachable_apiserver_is_one_line(control_plane: ControlPlane, tmp_path: Path) -> None:
    cfg = yaml.safe_load(control_plane.kubeconfig.read_text())
    for cluster in cfg["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens on port 1
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [str(PLUGIN), "--kubeconfig", str(path), "-n", "x", "backups"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: listing LamassuBackup in x: ")
    assert proc.stderr.endswith("(is the API server reachable?)\n")
    assert "Traceback" not in proc.stderr
    missing = subprocess.run(
        [str(PLUGIN), "--kubeconfig", str(tmp_path / "none"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"error: cannot use the kubeconfig {tmp_path / 'none'}")
    assert missing.stderr.count("\n") == 1
