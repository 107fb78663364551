"""Where each kms engine keeps its keys: declared on the policy, translated for the runner, and
turned by the runner into one store per engine read where this restore put it.

A default Lamassu install keeps its CA keys in the filesystem engine (a file per key id on a
PVC); before these declarations the check looked for every engine's keys in Vault KV.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lamassu_backup.builders import jobs
from lamassu_backup.builders import restore_plan as rp
from lamassu_backup.builders.restore_jobs import RestoreSource, restore_job
from lamassu_backup.components.volumes.spec import FilesystemKeyStore
from lamassu_backup.models.policy import BackupPolicySpec
from lamassu_backup.models.restore import RestoreSpec
from lamassu_backup.models.runner import RestoreRunConfig, RunnerResult
from lamassu_backup.runner.context import RunnerContext
from lamassu_backup.runner.restore import keys as restore_keys
from lamassu_backup.runner.restore.run import RestoreRun

POLICY: dict[str, Any] = {
    "components": {
        "postgres": {"host": "db", "credentialsSecret": {"name": "pg"}},
        "vault": {
            "address": "https://vault:8200",
            "auth": {"tokenSecret": {"name": "vault-token", "key": "token"}},
        },
    },
    "destination": {"s3": {"bucket": "lamassu-backups"}},
    "encryption": {"gpg": {"recipientsSecret": {"name": "gpg-pub", "key": "r.asc"}}},
    "verification": {"decryptionKeySecret": {"name": "gpg-priv", "key": "p.asc"}},
}
OWNER = jobs.Owner("backup.lamassu.io/v1alpha1", "LamassuBackup", "lamassu-1", "uid-1")
FS, FS2, VAULT, HSM = "filesystem-1", "filesystem-2", "vault-1", "pkcs11-1"
K1, K2, K3, K4 = ("1" * 64, "2" * 64, "3" * 64, "4" * 64)


def policy(vault_engines: list[str] | None = None, *volumes: dict[str, Any]) -> dict[str, Any]:
    """The unit-test policy with these key store declarations."""
    spec = copy.deepcopy(POLICY)
    if vault_engines is not None:
        spec["components"]["vault"]["keyStoreEngines"] = vault_engines
    spec["components"]["volumes"] = list(volumes)
    return spec


def volume(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "claimName": f"claim-{name}", **extra}


# -- the policy API ---------------------------------------------------------------------------


def test_key_stores_are_declared_on_vault_and_on_volumes() -> None:
    spec = BackupPolicySpec.model_validate(
        policy(
            [VAULT],
            volume("kms-fs", keyStoreEngine=FS, keyStorePath="keys"),
            volume("va-crls"),
        )
    )
    assert spec.components.vault is not None
    assert spec.components.vault.key_store_engines == [VAULT]
    fs, crls = spec.components.volumes
    assert (fs.key_store_engine, fs.key_store_path) == (FS, "keys")
    assert (crls.key_store_engine, crls.key_store_path) == (None, "")
    # Round trip as the apiserver stores it.
    again = BackupPolicySpec.model_validate(spec.to_api())
    assert again.components.volumes[0].key_store_engine == FS


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            policy(None, volume("a", keyStoreEngine=FS), volume("b", keyStoreEngine=FS)),
            "keyStoreEngine must be unique across volumes",
        ),
        (
            policy([FS], volume("a", keyStoreEngine=FS)),
            "either in Vault (vault.keyStoreEngines) or on a volume",
        ),
        (policy([VAULT, VAULT]), "duplicate keyStoreEngines entry: vault-1"),
        (policy([""]), "keyStoreEngines entries are 1 to 63 characters"),
        (policy(None, volume("a", keyStorePath="keys")), "keyStorePath needs keyStoreEngine"),
        (
            policy(None, volume("a", keyStoreEngine=FS, keyStorePath="../other")),
            "keyStorePath must be relative and stay inside the volume",
        ),
        (
            policy(None, volume("a", keyStoreEngine=FS, keyStorePath="keys/../../etc")),
            "keyStorePath must be relative and stay inside the volume",
        ),
        (
            policy(None, volume("a", keyStoreEngine=FS, keyStorePath="/crypto/fs")),
            "keyStorePath must be relative and stay inside the volume",
        ),
        (policy(None, volume("a", keyStoreEngine="")), "at least 1 character"),
    ],
    ids=[
        "same-engine-on-two-volumes",
        "engine-in-vault-and-on-a-volume",
        "duplicate-vault-engine",
        "empty-vault-engine",
        "path-without-engine",
        "path-up",
        "path-up-inside",
        "path-absolute",
        "empty-engine",
    ],
)
def test_bad_key_store_declarations_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        BackupPolicySpec.model_validate(spec)
    assert message in str(info.value)


def test_distinct_engines_and_names_that_merely_contain_dots_are_accepted() -> None:
    spec = BackupPolicySpec.model_validate(
        policy(
            [VAULT],
            volume("a", keyStoreEngine=FS, keyStorePath="..keys/v1.d"),
            volume("b", keyStoreEngine=FS2),
        )
    )
    assert [v.key_store_engine for v in spec.components.volumes] == [FS, FS2]


def test_the_runner_contract_refuses_a_path_outside_the_volume() -> None:
    with pytest.raises(ValidationError, match="stay inside the volume"):
        FilesystemKeyStore(engine=FS, volume="kms", path="../../etc")
    assert FilesystemKeyStore(engine=FS, volume="kms", path="keys/").path == "keys"


# -- policy -> runner config --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "vault_engines", "filesystem"),
    [
        (None, [], []),
        (policy(), [], []),
        (policy([VAULT], volume("crls")), [VAULT], []),
        (
            policy([VAULT], volume("kms-fs", keyStoreEngine=FS), volume("crls")),
            [VAULT],
            [{"engine": FS, "type": "filesystem", "volume": "kms-fs", "path": ""}],
        ),
        (
            policy(
                None,
                volume("kms-fs", keyStoreEngine=FS, keyStorePath="keys"),
                volume("kms-fs2", keyStoreEngine=FS2),
            ),
            [],
            [
                {"engine": FS, "type": "filesystem", "volume": "kms-fs", "path": "keys"},
                {"engine": FS2, "type": "filesystem", "volume": "kms-fs2", "path": ""},
            ],
        ),
    ],
    ids=["no-policy", "nothing-declared", "vault-only", "default-install", "two-filesystems"],
)
def test_key_store_settings(
    spec: dict[str, Any] | None, vault_engines: list[str], filesystem: list[dict[str, str]]
) -> None:
    parsed = BackupPolicySpec.model_validate(spec) if spec is not None else None
    engines, stores = jobs.key_store_settings(parsed)
    assert engines == vault_engines
    assert [s.model_dump() for s in stores] == filesystem


def test_key_store_settings_without_a_vault_component() -> None:
    spec = policy(None, volume("kms-fs", keyStoreEngine=FS))
    del spec["components"]["vault"]
    engines, stores = jobs.key_store_settings(BackupPolicySpec.model_validate(spec))
    assert (engines, [s.engine for s in stores]) == ([], [FS])


def drill_config(spec: dict[str, Any], components: list[str]) -> RestoreRunConfig:
    """The runner configuration of a scheduled drill: the Drill LamassuRestore the policy's
    verification creates, as the restore controller runs it."""
    policy = BackupPolicySpec.model_validate(spec)
    body = jobs.drill_restore(
        policy,
        namespace="lamassu",
        policy_name="lamassu",
        backup_name="lamassu-20261124t100000z",
        components=components,
        tick="20261129T030000Z",
        owner=OWNER,
    )
    assert body is not None
    restore = RestoreSpec.model_validate(body["spec"])
    job = restore_job(
        restore,
        RestoreSource("s3://lamassu-backups/x/", "lamassu-20261124t100000z", policy),
        namespace="lamassu",
        restore=body["metadata"]["name"],
        step="restore",
        components=rp.restore_components(restore, components),
        swap_suffix=None,
        owner=OWNER,
    )
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    value = next(e["value"] for e in env if e["name"] == jobs.RESTORE_CONFIG_ENV)
    return RestoreRunConfig.model_validate_json(value)


def test_the_scheduled_drill_restores_the_key_volume_and_checks_each_engine_there() -> None:
    spec = policy([VAULT], volume("kms-fs", keyStoreEngine=FS), volume("crls"))
    cfg = drill_config(spec, ["postgres", "vault", "volumes", "config"])
    assert cfg.components == ["postgres", "vault", "volumes"]
    assert cfg.key_store_engines == [VAULT]
    assert cfg.filesystem_key_stores == [FilesystemKeyStore(engine=FS, volume="kms-fs")]


def test_a_drill_without_filesystem_engines_leaves_the_volumes_alone() -> None:
    cfg = drill_config(policy([VAULT], volume("crls")), ["postgres", "vault", "volumes"])
    assert cfg.components == ["postgres", "vault"]
    assert cfg.filesystem_key_stores == []


def test_a_set_whose_volumes_failed_is_drilled_without_them_and_the_check_says_so() -> None:
    """The volumes component is not in the set: the drill does not ask for it (the set would be
    refused as incomplete); the runner's check then names the engine and the missing volume."""
    cfg = drill_config(policy(None, volume("kms-fs", keyStoreEngine=FS)), ["postgres", "vault"])
    assert cfg.components == ["postgres", "vault"]
    assert [s.volume for s in cfg.filesystem_key_stores] == ["kms-fs"]


# -- the runner: one store per engine, read where the volume was restored -----------------------


def runner(tmp_path: Path, **cfg: Any) -> RestoreRun:
    config = RestoreRunConfig.model_validate(
        {
            "namespace": "lamassu",
            "restore": "r",
            "source": {"bucket": "b"},
            "setPrefix": "p/",
            "decryptionKeyFile": str(tmp_path / "absent"),
            **cfg,
        }
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return RestoreRun(config, RunnerContext(str(scratch)), RunnerResult(ok=False, action="drill"))


def key_dir(path: Path, *ids: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for key_id in ids:
        (path / key_id).write_text("-----BEGIN PRIVATE KEY-----\n")
    return path


def by_engine(stores: list[restore_keys.KeyStore]) -> dict[str, tuple[str, set[str], str]]:
    return {s.engine_id: (s.kind, set(s.key_ids), s.source) for s in stores}


def test_old_configs_look_for_every_engine_in_vault(tmp_path: Path) -> None:
    run = runner(tmp_path)
    assert by_engine(run.key_stores({K1}, "scratch mount(s) m")) == {
        restore_keys.ANY_ENGINE: ("vault-kv", {K1}, "scratch mount(s) m")
    }
    assert run.key_stores(None, "") == []


def test_filesystem_engines_are_read_from_the_restored_volume_and_vault_covers_the_rest(
    tmp_path: Path,
) -> None:
    run = runner(
        tmp_path,
        mode="Drill",
        filesystemKeyStores=[{"engine": FS, "volume": "kms-fs", "path": "keys"}],
    )
    root = tmp_path / "scratch-volume"
    key_dir(root / "keys", K1)
    (root / K2).write_text("not in the engine's directory")
    run.restored_volumes["kms-fs"] = (root, "scratch copy of volume kms-fs")
    stores = by_engine(run.key_stores({K3}, "scratch mount(s) m"))
    assert stores == {
        FS: ("filesystem", {K1}, "scratch copy of volume kms-fs, keys"),
        restore_keys.ANY_ENGINE: ("vault-kv", {K3}, "scratch mount(s) m"),
    }
    # A filesystem key does not count in Vault, nor a Vault key on the volume.
    report = restore_keys.check_stores(
        [restore_keys.KmsKey(K1, FS), restore_keys.KmsKey(K3, VAULT)],
        [
            restore_keys.CaCert("s-fs", K1, "MANAGED", FS, "ca-fs"),
            restore_keys.CaCert("s-v", K3, "MANAGED", VAULT, "ca-v"),
        ],
        run.key_stores({K3}, "scratch mount(s) m"),
    )
    assert report.ok, report.message()
    assert (report.kms_keys, report.cas) == (2, 2)
    wrong = restore_keys.check_stores(
        [restore_keys.KmsKey(K3, FS)],
        [restore_keys.CaCert("s-x", K3, "MANAGED", FS, "ca-x")],
        run.key_stores({K3}, "scratch mount(s) m"),
    )
    assert not wrong.ok


def test_declared_vault_engines_leave_other_engines_unchecked(tmp_path: Path) -> None:
    """A PKCS#11 engine's keys are in an HSM: with vault-1 declared, they are not looked for in
    Vault; and a Vault engine that is also a filesystem store is read from the volume only."""
    run = runner(
        tmp_path,
        keyStoreEngines=[VAULT, FS],
        filesystemKeyStores=[{"engine": FS, "volume": "kms-fs"}],
    )
    run.restored_volumes["kms-fs"] = (key_dir(tmp_path / "v", K1), "volume kms-fs as restored")
    stores = run.key_stores({K2}, "KV")
    assert by_engine(stores) == {
        FS: ("filesystem", {K1}, "volume kms-fs as restored"),
        VAULT: ("vault-kv", {K2}, "KV"),
    }
    report = restore_keys.check_stores(
        [restore_keys.KmsKey(K4, HSM)], [restore_keys.CaCert("s-h", K4, "MANAGED", HSM)], stores
    )
    assert report.ok
    assert report.unchecked_keys == 1


def test_a_key_file_missing_from_the_restored_volume_names_ca_key_and_engine(
    tmp_path: Path,
) -> None:
    run = runner(tmp_path, filesystemKeyStores=[{"engine": FS, "volume": "kms-fs"}])
    run.restored_volumes["kms-fs"] = (key_dir(tmp_path / "v", K1), "scratch copy of volume kms-fs")
    report = restore_keys.check_stores(
        [restore_keys.KmsKey(K1, FS), restore_keys.KmsKey(K2, FS, bound_serials=("s-b",))],
        [
            restore_keys.CaCert("s-a", K1, "MANAGED", FS, "ca-a"),
            restore_keys.CaCert("s-b", K2, "MANAGED", FS, "ca-b"),
        ],
        run.key_stores(None, ""),
    )
    assert not report.ok
    [failure] = report.failures
    assert (failure.ca, failure.key_id) == ("ca-b (serial s-b)", K2)
    assert failure.engine == f"engine {FS} (filesystem, scratch copy of volume kms-fs)"
    assert report.evidence()["missing"] == [f"ca-b (serial s-b)|{K2[:16]}|{FS}"]


def test_a_key_volume_not_in_the_restored_set_fails_naming_the_engine_and_the_volume(
    tmp_path: Path,
) -> None:
    """A drill or restore without the volume cannot prove the filesystem keys: refused."""
    run = runner(tmp_path, mode="Drill", filesystemKeyStores=[{"engine": FS, "volume": "kms-fs"}])
    stores = run.key_stores({K1}, "scratch mount(s) m")
    assert by_engine(stores)[FS] == ("filesystem", set(), "volume kms-fs: not in the restored set")
    assert any("engine filesystem-1" in w and "kms-fs" in w for w in run.result.warnings)
    report = restore_keys.check_stores(
        [restore_keys.KmsKey(K1, FS)],  # the key is in Vault too: it does not count for FS
        [restore_keys.CaCert("s-a", K1, "MANAGED", FS, "ca-a")],
        stores,
    )
    assert not report.ok
    message = report.message()
    assert "CA ca-a (serial s-a)" in message
    assert K1 in message
    assert f"engine {FS} (filesystem, volume kms-fs: not in the restored set)" in message


def test_in_place_a_volume_not_restored_is_read_live(tmp_path: Path) -> None:
    """The restored databases will meet the live volume's keys: those are the ones checked."""
    live = key_dir(tmp_path / "live", K2)
    fs = [{"engine": FS, "volume": "kms-fs"}]
    vols = [{"name": "kms-fs", "path": str(live)}]
    run = runner(tmp_path, mode="InPlace", filesystemKeyStores=fs, volumes=vols)
    assert by_engine(run.key_stores(None, "")) == {FS: ("filesystem", {K2}, "live volume kms-fs")}
    # Restored by this run: its staged copy counts, not the live files.
    run.restored_volumes["kms-fs"] = (key_dir(tmp_path / "staged", K1), "volume kms-fs as restored")
    assert by_engine(run.key_stores(None, ""))[FS][1] == {K1}
    # Not mounted at all: nothing to read, so the check cannot pass for that engine.
    gone = runner(tmp_path, mode="InPlace", filesystemKeyStores=fs, volumes=[])
    assert by_engine(gone.key_stores(None, ""))[FS][1] == set()


def test_an_imported_without_key_ca_never_fails_whatever_the_stores(tmp_path: Path) -> None:
    """IMPORTED_WITHOUT_KEY has nothing to restore: not with empty stores, not with a missing
    volume, not when its SKI is in no store and no kms key."""
    run = runner(tmp_path, mode="Drill", filesystemKeyStores=[{"engine": FS, "volume": "kms-fs"}])
    keyless = [
        restore_keys.CaCert("s-ext", K4, "IMPORTED_WITHOUT_KEY", "", "ca-ext"),
        restore_keys.CaCert("s-fs", K3, "IMPORTED_WITHOUT_KEY", FS, "ca-ext-fs"),
    ]
    for stores in (run.key_stores(set(), "KV"), run.key_stores(None, "")):
        report = restore_keys.check_stores([], keyless, stores)
        assert report.ok, report.message()
        assert (report.cas, report.keyless_cas) == (0, 2)
    # The same CA typed MANAGED would fail: the check is not vacuous.
    managed = restore_keys.CaCert("s-fs", K3, "MANAGED", FS, "ca-fs")
    assert not restore_keys.check_stores([], [managed], run.key_stores(None, "")).ok
