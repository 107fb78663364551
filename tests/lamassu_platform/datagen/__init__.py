"""Synthetic Lamassu data: the six service databases, shaped like the real ones, of a chosen size.

Why: backup and restore must be tested (and timed) against data that looks like a Lamassu
deployment: the exact database names, goose ``goose_db_version`` tables, a ``ca.certificates`` table
holding the bulk as incompressible base64 PEM text, jsonb columns, timestamptz edge values
(Lamassu's zero time ``0001-01-01``), foreign keys, and CA keys whose ids tie ``kms.kms_keys``, the
CA certificates' ``subject_key_id`` and the crypto engine's key store together.

Everything is derived from ``seed``: the same seed and size give byte-identical table contents
(compare with :func:`table_checksums`). The CA keys are real EC P-256 keys and the CA certificates
real X.509 certificates, signed with deterministic ECDSA (RFC 6979) so they are reproducible too.
Rows are streamed with ``COPY ... FROM STDIN`` through ``psql``; primary keys and indexes are built
after the load, which is what makes 1 GiB take well under a minute and a half.

Modules, by what they do: :mod:`.schema` (names, goose versions, DDL, the :class:`Dataset`
record), :mod:`.keys` (CA keys and certificates), :mod:`.rows` (the row generators),
:mod:`.load` (:func:`generate`: create, ``COPY``, index, measure), :mod:`.inspection`
(checksums, counts, sizes and schema descriptions of any database).
"""

from .inspection import (
    ca_key_consistency,
    data_bytes,
    describe_schema,
    row_counts,
    sequence_values,
    table_checksums,
    user_tables,
)
from .load import (
    BYTES_PER_LEAF,
    MIN_LEAVES,
    N_INTERMEDIATE_CAS,
    N_PUBLIC_ONLY_KEYS,
    N_ROOT_CAS,
    generate,
    plan_leaves,
)
from .rows import EPOCH, LEAVES_PER_DEVICE, ZERO_TIME
from .schema import (
    ENGINE_ID,
    GOOSE_VERSIONS,
    KMS_BIND_KEY,
    MIB,
    SCHEMAS_DATABASE,
    SERVICES,
    CaInfo,
    Dataset,
    Layout,
)

__all__ = [
    "BYTES_PER_LEAF",
    "ENGINE_ID",
    "EPOCH",
    "GOOSE_VERSIONS",
    "KMS_BIND_KEY",
    "LEAVES_PER_DEVICE",
    "MIB",
    "MIN_LEAVES",
    "N_INTERMEDIATE_CAS",
    "N_PUBLIC_ONLY_KEYS",
    "N_ROOT_CAS",
    "SCHEMAS_DATABASE",
    "SERVICES",
    "ZERO_TIME",
    "CaInfo",
    "Dataset",
    "Layout",
    "ca_key_consistency",
    "data_bytes",
    "describe_schema",
    "generate",
    "plan_leaves",
    "row_counts",
    "sequence_values",
    "table_checksums",
    "user_tables",
]
