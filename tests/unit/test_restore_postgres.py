"""PostgreSQL restore pieces that need no server: selection, naming, verification, property SQL."""

from __future__ import annotations

from typing import Any

import pytest

from lamassu_backup.clients.postgres import DatabaseProps, _setting_value, database_props_sql
from lamassu_backup.components.postgres.restore import (
    PgTarget,
    check_name,
    plan_targets,
    select_artifacts,
    verify_facts,
)
from lamassu_backup.errors import ConfigurationError, IntegrityError
from lamassu_backup.models.runner import ArtifactRecord


def dump(name: str, size: int = 10, **details: Any) -> ArtifactRecord:
    database, _, schema = name.partition(".")
    return ArtifactRecord(
        component="postgres",
        name=name,
        kind="pg-dump",
        key=f"postgres/{name}.dump.zst.gpg",
        size_bytes=size,
        plaintext_size_bytes=size,
        sha256="a" * 64,
        plaintext_sha256="b" * 64,
        compression="zstd-1",
        encryption="gpg",
        details={"database": database, **({"schema": schema} if schema else {}), **details},
    )


def test_select_by_database_or_schema() -> None:
    arts = [dump("ca"), dump("kms"), dump("lamassu.ca"), dump("lamassu.kms")]
    assert [a.name for a in select_artifacts(arts, [])] == [
        "ca",
        "kms",
        "lamassu.ca",
        "lamassu.kms",
    ]
    assert [a.name for a in select_artifacts(arts, ["kms"])] == ["kms"]
    assert [a.name for a in select_artifacts(arts, ["lamassu"])] == ["lamassu.ca", "lamassu.kms"]
    assert [a.name for a in select_artifacts(arts, ["lamassu.ca"])] == ["lamassu.ca"]
    with pytest.raises(ConfigurationError, match="no dump of va"):
        select_artifacts(arts, ["va"])


def test_targets_group_schemas_and_start_with_the_biggest() -> None:
    targets = plan_targets(
        [dump("kms", 5), dump("ca", 500), dump("lamassu.ca", 7), dump("lamassu.kms", 9)],
        lambda d: f"{d}__restoring",
    )
    assert [(t.database, t.scratch, len(t.artifacts)) for t in targets] == [
        ("ca", "ca__restoring", 1),
        ("lamassu", "lamassu__restoring", 2),
        ("kms", "kms__restoring", 1),
    ]


def test_names_postgresql_would_truncate_are_refused() -> None:
    assert (
        check_name("devicemanager__pre_restore_20261124100000")
        == "devicemanager__pre_restore_20261124100000"
    )
    with pytest.raises(ConfigurationError, match="longer than 63 bytes"):
        check_name("d" * 50 + "__pre_restore_20261124100000")


def facts(rows: dict[str, int], goose: int | None) -> dict[str, Any]:
    return {
        "rowCounts": rows,
        "goose": {} if goose is None else {"public": {"version": goose, "rows": 3}},
    }


def test_verify_facts_accepts_the_manifest_figures() -> None:
    art = dump(
        "ca", rowCounts={"public.certificates": 10}, goose={"public": {"version": 5, "rows": 3}}
    )
    target = PgTarget("ca", "ca__restoring", [art])
    verify_facts(target, art, facts({"public.certificates": 10}, 5))
    assert target.warnings == []


@pytest.mark.parametrize(
    ("rows", "goose", "message"),
    [
        ({"public.certificates": 9}, 5, "public.certificates has 9 rows, the manifest says 10"),
        ({}, 5, "missing tables public.certificates"),
        ({"public.certificates": 10, "public.x": 1}, 5, "unexpected tables public.x"),
        ({"public.certificates": 10}, 4, "goose_db_version in schema public is version 4"),
        ({"public.certificates": 10}, None, "no goose_db_version table"),
    ],
)
def test_verify_facts_refuses_a_mismatch(
    rows: dict[str, int], goose: int | None, message: str
) -> None:
    art = dump(
        "ca", rowCounts={"public.certificates": 10}, goose={"public": {"version": 5, "rows": 3}}
    )
    with pytest.raises(IntegrityError, match=message) as info:
        verify_facts(PgTarget("ca", "ca__restoring", [art]), art, facts(rows, goose))
    assert "The live database was not touched" in info.value.message


def test_database_props_sql_reproduces_owner_acl_settings_comment() -> None:
    props = DatabaseProps(
        owner="lamassu",
        encoding="UTF8",
        collate="C",
        ctype="C",
        conn_limit=40,
        acl=(
            ("lamassu", "lamassu", "CONNECT", False),
            (None, "lamassu", "TEMPORARY", False),
            ("reader", "admin", "CONNECT", True),
        ),
        settings=((None, 'search_path=public, "b c"'), ("reader", "work_mem=8MB")),
        comment="it's the CA",
    )
    sql = database_props_sql("ca__restoring", props).splitlines()
    assert sql == [
        'ALTER DATABASE "ca__restoring" OWNER TO "lamassu";',
        'ALTER DATABASE "ca__restoring" CONNECTION LIMIT 40;',
        'ALTER DATABASE "ca__restoring" RESET ALL;',
        'REVOKE ALL ON DATABASE "ca__restoring" FROM PUBLIC;',
        'REVOKE ALL ON DATABASE "ca__restoring" FROM "lamassu";',
        'GRANT CONNECT ON DATABASE "ca__restoring" TO "lamassu";',
        'GRANT TEMPORARY ON DATABASE "ca__restoring" TO PUBLIC;',
        'SET ROLE "admin"; GRANT CONNECT ON DATABASE "ca__restoring" TO "reader" WITH GRANT OPTION; RESET ROLE;',
        "ALTER DATABASE \"ca__restoring\" SET \"search_path\" TO 'public', 'b c';",
        'ALTER ROLE "reader" IN DATABASE "ca__restoring" SET "work_mem" TO \'8MB\';',
        "COMMENT ON DATABASE \"ca__restoring\" IS 'it''s the CA';",
    ]


def test_default_acl_is_left_alone() -> None:
    props = DatabaseProps("o", "UTF8", "C", "C", -1, None, (), None)
    sql = database_props_sql("x", props)
    assert "REVOKE" not in sql
    assert "GRANT" not in sql
    assert sql.endswith('COMMENT ON DATABASE "x" IS NULL;')


@pytest.mark.parametrize(
    ("name", "value", "sql"),
    [
        ("statement_timeout", "30s", "'30s'"),
        ("search_path", 'public, "$user"', "'public', '$user'"),
        ("search_path", '"a ""quoted"" one", b', "'a \"quoted\" one', 'b'"),
        ("application_name", "it's, fine", "'it''s, fine'"),
    ],
)
def test_setting_values_are_quoted_like_pg_dump(name: str, value: str, sql: str) -> None:
    assert _setting_value(name, value) == sql
