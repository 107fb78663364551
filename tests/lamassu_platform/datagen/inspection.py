"""Inspecting a server: tables, checksums, row counts, sequences, sizes, schema descriptions.

Why apart: these read any database, not only a generated one; tests compare a restore with
the original through them. (Not named ``inspect``, the standard library module.)
"""

from __future__ import annotations

from collections.abc import Iterable

from ..postgres import PostgresServer
from .schema import Dataset

_USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2;
"""

# Fixed output settings, so the text of every value (hence the checksum) is the same on any server.
_STABLE_OUTPUT = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 1; SET bytea_output = 'hex';\n"
)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def user_tables(server: PostgresServer, db: str) -> list[tuple[str, str]]:
    """(schema, table) of every ordinary table outside the system schemas."""
    return [(r[0], r[1]) for r in server.rows(_USER_TABLES, db)]


def table_checksums(server: PostgresServer, db: str) -> dict[str, str]:
    """``"schema.table" -> "<rows>:<md5>"`` over every column of every row, order-independent
    (the md5 of the sorted per-row md5s), so a restore can be compared with the original."""
    tables = user_tables(server, db)
    if not tables:
        return {}
    digest = "md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), ''))"
    # names are quoted with _ident/_literal and come from the catalog, not from users
    parts = [
        f"SELECT {_literal(s + '.' + t)}, count(*), {digest} "  # noqa: S608
        f"FROM (SELECT md5(x::text) AS h FROM ONLY {_ident(s)}.{_ident(t)} x) q"
        for s, t in tables
    ]
    out = server.rows(_STABLE_OUTPUT + "\nUNION ALL\n".join(parts) + ";", db)
    return {r[0]: f"{r[1]}:{r[2]}" for r in out}


def row_counts(server: PostgresServer, db: str) -> dict[str, int]:
    """``"schema.table" -> exact row count`` for every user table."""
    tables = user_tables(server, db)
    if not tables:
        return {}
    parts = [
        f"SELECT {_literal(s + '.' + t)}, count(*) FROM ONLY {_ident(s)}.{_ident(t)}"  # noqa: S608
        for s, t in tables
    ]
    return {r[0]: int(r[1]) for r in server.rows("\nUNION ALL\n".join(parts) + ";", db)}


def sequence_values(server: PostgresServer, db: str) -> dict[str, str]:
    """``"schema.sequence" -> "last_value:is_called"`` (pg_dump restores these with setval)."""
    rows = server.rows(
        "SELECT schemaname || '.' || sequencename, coalesce(last_value::text, ''), "
        "CASE WHEN last_value IS NULL THEN 'f' ELSE 't' END FROM pg_sequences ORDER BY 1;",
        db,
    )
    return {r[0]: f"{r[1]}:{r[2]}" for r in rows}


def _data_bytes(server: PostgresServer, db: str) -> int:
    out = server.psql(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_toast%';",
        db,
    )
    return int(out.strip())


def data_bytes(server: PostgresServer, databases: Iterable[str]) -> int:
    """Sum of ``pg_total_relation_size`` over the user tables of ``databases``."""
    return sum(_data_bytes(server, db) for db in databases)


def ca_key_consistency(server: PostgresServer, dataset: Dataset) -> list[str]:
    """Problems tying CA certificates, KMS keys and the private keys together (empty = good):
    every CA certificate's subject_key_id has a kms key with a private key, and every such key
    has an entry in ``dataset.private_keys``."""
    ca_db, ca_schema = dataset.locations["ca"]
    kms_db, kms_schema = dataset.locations["kms"]
    skis = {
        r[0]
        for r in server.rows(
            f"SELECT subject_key_id FROM {_ident(ca_schema)}.certificates WHERE is_ca;",  # noqa: S608
            ca_db,
        )
    }
    with_private = {
        r[0]
        for r in server.rows(
            f"SELECT key_id FROM {_ident(kms_schema)}.kms_keys WHERE has_private_key;",  # noqa: S608
            kms_db,
        )
    }
    problems = [
        f"CA certificate SKI {s} has no kms key with a private key"
        for s in sorted(skis - with_private)
    ]
    problems += [
        f"kms key {k} has no private key in the engine"
        for k in sorted(with_private - set(dataset.private_keys))
    ]
    return problems


_COLUMNS_SQL = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
       CASE WHEN a.attnotnull THEN 'NOT NULL' ELSE 'NULL' END,
       coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = {schema} AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum;
"""
_CONSTRAINTS_SQL = """
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace = {schema}::regnamespace ORDER BY 1, 2;
"""
_INDEXES_SQL = """
SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = {schema} ORDER BY 1, 2;
"""


def describe_schema(server: PostgresServer, db: str, schema: str = "public") -> dict[str, object]:
    """Tables with their columns in order (type, nullability, default, identity), constraints and
    indexes: what must be the same in datagen's tables and in the ones the migrations create."""
    lit = _literal(schema)
    tables: dict[str, list[tuple[str, ...]]] = {}
    for r in server.rows(_COLUMNS_SQL.format(schema=lit), db):
        tables.setdefault(r[0], []).append(tuple(r[1:]))
    prefix = f"{schema}."
    constraints = sorted(
        (r[0].removeprefix(prefix), r[1], r[2].replace(f" {prefix}", " "))
        for r in server.rows(_CONSTRAINTS_SQL.format(schema=lit), db)
    )
    indexes = sorted(
        (r[0], r[1], r[2].replace(f" {prefix}", " "))
        for r in server.rows(_INDEXES_SQL.format(schema=lit), db)
    )
    return {"tables": tables, "constraints": constraints, "indexes": indexes}
